"""Training on two processes (torchrun, gloo on CPU) against one: every objective, a mix and stages give the same
per-step losses and adapters, and full fine-tuning sharded by FSDP2 the same weights; a rank killed with SIGKILL
takes the run down with one line and a resumable checkpoint, and resuming on two processes is exact."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests import launch
from tests.conftest import chat, prose, write_jsonl
from tunesmith.config import build_config
from tunesmith.data.formats import FORMATS
from tunesmith.runs import ADAPTER_WEIGHTS, RunFolder
from tunesmith.tokenize.encode import IGNORE, encode
from tunesmith.tokenize.teacher import vocabulary_texts
from tunesmith.training.checkpoint import verify
from tunesmith.training.runner import resume, train

ROOT = Path(__file__).resolve().parents[2]
LOSS_TOLERANCE = 1e-4
"""fp32 sums of the same tokens in another order and other padded shapes: rounding of about 1e-7 relative per
value, far below this."""
WEIGHT_TOLERANCE = 1e-5
"""The adapters after 4 AdamW steps at learning rate 5e-4 from gradients that differ by rounding alone. AdamW moves a
weight by lr x m / sqrt(v) a step; that ratio moves with the gradients' relative rounding (about 1e-6 in fp32), but
where a gradient is itself near zero it can move by up to 2, so the difference scales with the learning rate:
measured at most 9.2e-6 at 1e-3 (text), 1.7e-5 at 1e-2; 5e-4 keeps twice that margin."""


def _distill_rows(tokenizer, count: int) -> list[dict]:
    """Conversations whose answers carry a teacher's top-2 log-probs in the student's own tokens."""
    texts, _ = vocabulary_texts(tokenizer)
    rows = []
    for i in range(count):
        record = chat(i)
        example = encode([(1, FORMATS["chat"].parse(record))], tokenizer, max_length=256).examples[0]
        answer = [int(t) for t in example.labels if t != IGNORE][:-1]
        entries = [
            {
                "token": texts[t],
                "logprob": math.log(0.7),
                "top_logprobs": [{"token": texts[t], "logprob": math.log(0.7)}, {"token": texts[13], "logprob": -2.0}],
            }
            for t in answer
        ]
        rows.append({**record, "logprobs": entries})
    return rows


@pytest.fixture(scope="module")
def cases(tmp_path_factory, tiny_model, tokenizer) -> dict[str, dict]:
    """Each case's settings: small runs of every objective, a weighted mix and two stages."""
    root = tmp_path_factory.mktemp("ranks-data")
    qa = write_jsonl(root / "qa.jsonl", [chat(i) for i in range(40)])
    qa_eval = write_jsonl(root / "qa-eval.jsonl", [chat(i) for i in range(100, 106)])
    docs = write_jsonl(root / "docs.jsonl", [{"text": prose(60, seed=i)} for i in range(24)])
    brand = (ROOT / "examples" / "brand-voice" / "train-openai.jsonl").read_text().splitlines()
    pairs = write_jsonl(root / "pairs.jsonl", [json.loads(line) for line in brand[:20]])
    taught = write_jsonl(root / "taught.jsonl", _distill_rows(tokenizer, 24))
    common = {
        "model": str(tiny_model),
        "threads": 1,
        "precision": "fp32",
        "batch_tokens": 256,
        "grad_accum": 2,
        "learning_rate": 5e-4,
        "save_every": 2,
        "eval_every": 2,
        "max_steps": 4,
        "epochs": 4,
    }
    return {
        "sft": {**common, "data": str(qa), "eval_data": str(qa_eval)},
        "dora": {**common, "data": str(qa), "method": "dora"},
        "text": {**common, "data": str(docs), "objective": "text"},
        "dpo": {**common, "data": str(pairs), "objective": "dpo", "batch_tokens": 1024},
        "simpo": {
            **common,
            "data": str(pairs),
            "objective": "dpo",
            "batch_tokens": 1024,
            "preference": {"loss": "simpo"},
        },
        "distill": {**common, "data": str(taught), "objective": "distill"},
        "full": {**common, "data": str(qa), "eval_data": str(qa_eval), "method": "full", "final": "best"},
        "full-dpo": {**common, "data": str(pairs), "objective": "dpo", "batch_tokens": 1024, "method": "full"},
        "mix": {**common, "data": [f"{qa}:2", f"{docs}:1@text"]},
        "stages": {
            **common,
            "max_steps": None,
            "stages": [
                {"name": "text", "data": str(docs), "objective": "text", "max_steps": 2},
                {"name": "sft", "data": str(qa), "max_steps": 3},
            ],
        },
    }


def _torchrun(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def two_ranks(cases, tmp_path_factory) -> dict[str, Path]:
    """Every case trained by one torchrun launch of two ranks."""
    root = tmp_path_factory.mktemp("two-ranks")
    runs = [{"settings": settings, "out": str(root / name)} for name, settings in cases.items()]
    (root / "runs.json").write_text(json.dumps(runs))
    done = _torchrun([str(ROOT / "tests" / "integration" / "ranks_runs.py"), str(root / "runs.json")])
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: root / name for name in cases}


def _steps(run: Path) -> list[dict]:
    return [row for row in RunFolder(run).read_metrics() if row["event"] == "step"]


def _same_losses(one: Path, two: Path) -> None:
    first, second = _steps(one), _steps(two)
    assert [r["step"] for r in first] == [r["step"] for r in second] and first
    for a, b in zip(first, second, strict=True):
        assert a["tokens"] == b["tokens"]  # the same global batch
        assert abs(a["loss"] - b["loss"]) <= LOSS_TOLERANCE, (a, b)
    evals = [(r["step"], r["eval_loss"]) for r in RunFolder(one).read_metrics() if r["event"] == "eval"]
    others = [(r["step"], r["eval_loss"]) for r in RunFolder(two).read_metrics() if r["event"] == "eval"]
    assert [s for s, _ in evals] == [s for s, _ in others]
    assert all(abs(a - b) <= LOSS_TOLERANCE for (_, a), (_, b) in zip(evals, others, strict=True))


def _final_weights(run: Path) -> Path:
    """final/'s trained weights: the adapter, or the whole model of a full fine-tuning run."""
    adapter = run / "final" / ADAPTER_WEIGHTS
    return adapter if adapter.is_file() else run / "final" / "model.safetensors"


def _same_weights(one: Path, two: Path) -> None:
    a, b = load_file(str(_final_weights(one))), load_file(str(_final_weights(two)))
    assert a.keys() == b.keys()  # a tied head saved once, under the embedding's name, as one process saves it
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= WEIGHT_TOLERANCE


@pytest.mark.parametrize(
    "name", ["sft", "dora", "text", "dpo", "simpo", "distill", "mix", "stages", "full", "full-dpo"]
)
def test_two_ranks_train_what_one_process_trains(name, cases, two_ranks, tmp_path):
    one = tmp_path / name
    train(build_config(cases[name]), one)
    _same_losses(one, two_ranks[name])
    _same_weights(one, two_ranks[name])
    written = sorted(p.name for p in two_ranks[name].iterdir())
    assert written == sorted(p.name for p in one.iterdir())  # rank 0 wrote the folder, and nothing else did


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return launch.run(["train", *args, "--quiet", "--no-eval"], env={**os.environ, **(env or {})})


@pytest.mark.parametrize("name", ["sft", "full"])
def test_a_killed_rank_stops_the_run_with_one_line_and_resuming_on_two_is_exact(name, cases, two_ranks, tmp_path):
    """An adapter under DDP, and full fine-tuning under FSDP2, whose checkpoint is gathered whole and scattered
    back into shards."""
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(cases[name]))
    run = tmp_path / "run"
    started = time.monotonic()
    killed = _cli(
        ["--config", str(config), "--out", str(run), "--processes", "2"],
        {"TUNESMITH_KILL_AT": "logged:3", "TUNESMITH_KILL_RANK": "1"},
    )
    assert killed.returncode == 1 and time.monotonic() - started < 120
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error:")]
    assert any("rank 0 of 2: another process of the run stopped" in line for line in errors), killed.stderr
    assert errors[-1].startswith("error: training stopped: rank 1 was killed by SIGKILL; continue with: ")
    assert "Traceback" not in killed.stderr
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-000002"] and verify(checkpoints[0]) is None
    assert [c.name for c in checkpoints] == ["step-000002"]
    elsewhere = tmp_path / "on-one"
    shutil.copytree(run, elsewhere)

    resumed = _cli(["--resume", str(run), "--processes", "2"])
    assert resumed.returncode == 0, resumed.stderr
    whole = two_ranks[name]
    strip = ("elapsed", "tokens_per_second")
    rows = [{k: v for k, v in r.items() if k not in strip and k != "final"} for r in RunFolder(run).read_metrics()]
    again = [{k: v for k, v in r.items() if k not in strip and k != "final"} for r in RunFolder(whole).read_metrics()]
    assert rows == again  # bit for bit: every loss, gradient norm and evaluation
    assert _final_weights(run).read_bytes() == _final_weights(whole).read_bytes()

    # on another number of processes: allowed, the same run within rounding (not bit for bit)
    resume(elsewhere)
    _same_losses(elsewhere, whole)
    _same_weights(elsewhere, whole)


def test_what_two_ranks_cannot_train_yet_is_refused_before_anything_is_written(cases, tmp_path, monkeypatch):
    from tunesmith.errors import ConfigError
    from tunesmith.training import distributed

    grader, run = tmp_path / "grader.json", tmp_path / "run"
    grader.write_text(
        json.dumps(
            {
                "type": "string_check",
                "name": "same",
                "input": "{{sample.output_text}}",
                "reference": "{{item.reference}}",
                "operation": "eq",
            }
        )
    )
    monkeypatch.setattr(distributed, "size", lambda: 2)  # as rank 0 of 2 sees it: the check, not the launch
    with pytest.raises(ConfigError, match="objective grpo on several processes is not available yet"):
        train(build_config({**cases["sft"], "objective": "grpo", "reinforcement": {"graders": [str(grader)]}}), run)
    assert not run.exists()


def test_the_ranks_share_each_step_disjointly_and_whole():
    from tunesmith.training.distributed import share

    window = [[5, 1, 7, 3, 9], [2, 8]]  # micro-batches sorted by length: striding shares the lengths out evenly
    assert share(window) == window  # one process: the whole step
    parts = [share(window, (r, 3)) for r in range(3)]
    assert parts == [[[5, 3], [2]], [[1, 9], [8]], [[7]]]  # rank 2 has nothing of the second micro-batch
    assert sorted(i for part in parts for mb in part for i in mb) == sorted(i for mb in window for i in mb)
