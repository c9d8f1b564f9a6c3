"""Experiment tracking read back with each library's own reader: `tunesmith train --report-to` into TensorBoard
event files, an MLflow store and an offline W&B run (steps, evaluations, settings and the final report), and a
job's wandb integration."""

from __future__ import annotations

import glob
import json
import os
import struct
from pathlib import Path

import pytest

from tests import launch
from tests.conftest import chat, write_jsonl
from tunesmith.runs import RunFolder

W_AND_B_BLOCK = 32768


def wandb_records(run_dir: Path) -> list:
    """Every record of the run's offline W&B files (the LevelDB-style log `wandb sync` reads: 32 KiB blocks of
    records, each checksum, length, type and data; a record may span blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        data = Path(path).read_bytes()
        assert data[:4] == b":W&B"
        position, pending = 7, b""
        while position + 7 <= len(data):
            left = W_AND_B_BLOCK - position % W_AND_B_BLOCK
            _, length, kind = struct.unpack("<IHB", data[position : position + 7])
            if left < 7 or (kind == 0 and length == 0):  # the padding at a block's end
                position += left
                continue
            pending += data[position + 7 : position + 7 + length]
            position += 7 + length
            if kind in (1, 4):  # a whole record, or the last part of one
                record = pb.Record()
                record.ParseFromString(pending)
                out.append(record)
                pending = b""
    return out


def wandb_history(run_dir: Path) -> list[dict[str, float]]:
    rows = [r.history for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "history"]
    return [{_key(item): json.loads(item.value_json) for item in row.item} for row in rows]


def _key(item) -> str:
    """A logged key: W&B keeps "train/loss" as the nested key ["train", "loss"]."""
    return item.key or "/".join(item.nested_key)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("tracked")
    train = write_jsonl(folder / "train.jsonl", [chat(i) for i in range(30)])
    held_out = write_jsonl(folder / "eval.jsonl", [chat(i) for i in range(100, 105)])
    run = folder / "run"
    command = ["train", "--data", str(train), "--eval-data", str(held_out), "--model", str(tiny_model)]
    command += ["--epochs", "2", "--out", str(run), "--tracking-project", "migration", "--tracking-tags", "ci"]
    command += ["--report-to", "tensorboard", "--report-to", "mlflow", "--report-to", "wandb", "--max-steps", "3"]
    done = launch.run(command, env=dict(os.environ, WANDB_MODE="offline"))
    assert done.returncode == 0, done.stderr
    lines = RunFolder(run).read_metrics()
    return run, [line for line in lines if line["event"] == "step"], [line for line in lines if line["event"] == "eval"]


def test_tensorboard_holds_every_step_every_evaluation_the_settings_and_the_report(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, steps, evals = tracked
    events = EventAccumulator(str(RunFolder(run).tensorboard), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [s["step"] for s in steps]
    assert [e.value for e in loss] == pytest.approx([s["loss"] for s in steps], rel=1e-6)  # stored as float32
    assert [e.step for e in events.Scalars("eval/eval_loss")] == [e["step"] for e in evals]
    assert "train/token_accuracy" in events.Tags()["scalars"] and "report/tuned_loss" in events.Tags()["scalars"]
    assert {"config/text_summary", "report/text_summary"} <= set(events.Tags()["tensors"])


def test_mlflow_holds_the_settings_metrics_per_step_and_the_report_page(tracked, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the run folder's store is a file store
    run, steps, evals = tracked
    client = MlflowClient(tracking_uri=RunFolder(run).mlruns.as_uri())
    run_id = json.loads(RunFolder(run).tracking.read_text())["mlflow"]
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED" and found.data.params["epochs"] == "2" and "ci" in found.data.tags
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(s["step"], pytest.approx(s["loss"])) for s in steps]
    assert len(client.get_metric_history(run_id, "eval_loss")) == len(evals)
    assert "report/" not in "".join(found.data.metrics) and "report_tuned_loss" in found.data.metrics
    assert [a.path for a in client.list_artifacts(run_id)] == ["report.html"] and found.data.tags["headline"]


def test_wandb_offline_holds_the_settings_the_steps_and_the_report(tracked):
    run, steps, _ = tracked
    records = wandb_records(run)
    first = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert first.project == "migration" and list(first.tags) == ["ci"]
    config = {item.key: json.loads(item.value_json) for item in first.config.update}
    assert config["epochs"] == 2 and config["report_to"] == ["tensorboard", "mlflow", "wandb"]
    logged = [row for row in wandb_history(run) if "train/loss" in row]
    assert [(row["_step"], row["train/loss"]) for row in logged] == [(s["step"], s["loss"]) for s in steps]
    summaries = [_key(item) for r in records if r.WhichOneof("record_type") == "summary" for item in r.summary.update]
    assert "headline" in summaries and "report/tuned_loss" in summaries
