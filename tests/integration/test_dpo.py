"""Preference training end to end on a tiny model: the held-out pairs move the right way, the reference is computed
once and kept, SimPO needs none, and kill -9 + resume gives the uninterrupted run's losses and adapter bit for bit."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from bench.kill_trials import history, same_adapter
from tests import launch
from tests.conftest import write_jsonl
from tunesmith.config import RunConfig
from tunesmith.evaluate.evaluation import EvalOptions
from tunesmith.evaluate.report import evaluate_to_folder
from tunesmith.runs import RunFolder
from tunesmith.training.runner import train

ROOT = Path(__file__).resolve().parents[2]
BRAND = ROOT / "examples" / "brand-voice"


def _pairs(path: Path, first: int, count: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[first : first + count]]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pairs")
    train = write_jsonl(root / "train.jsonl", _pairs(BRAND / "train-openai.jsonl", 0, 24))  # OpenAI's format
    held_out = write_jsonl(root / "eval.jsonl", _pairs(BRAND / "eval.jsonl", 0, 12))  # {prompt, chosen, rejected}
    return train, held_out


def _evals(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["event"] == "eval"]


def _config(pairs, tiny_model, **settings) -> RunConfig:
    train_path, held_out = pairs
    values = {"data": str(train_path), "eval_data": str(held_out), "model": str(tiny_model), "objective": "dpo"}
    values |= {"epochs": 3, "batch_tokens": 1024, "learning_rate": 5e-3, "eval_every": 12, "compile": "off"}
    return RunConfig.model_validate(values | settings)


@pytest.fixture(scope="module")
def dpo_run(pairs, tiny_model, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("dpo") / "run"
    train(_config(pairs, tiny_model), run)
    return run


def test_dpo_learns_the_chosen_side_of_held_out_pairs_against_a_reference_kept_in_the_run(dpo_run):
    first, *_, last = _evals(dpo_run)
    assert first["eval_reward_accuracy"] == 0 and first["eval_reward_margin"] == 0  # the policy is the reference
    assert last["eval_reward_accuracy"] >= 0.9 and last["eval_reward_margin"] > 0
    assert last["eval_loss"] < first["eval_loss"] == pytest.approx(0.6931, abs=1e-4)  # -log sigmoid(0)
    steps = [row for row in map(json.loads, (dpo_run / "metrics.jsonl").read_text().splitlines())
             if row["event"] == "step"]  # fmt: skip
    assert {"reward_accuracy", "reward_margin", "chosen_logps", "rejected_logps"} <= steps[-1].keys()
    assert (dpo_run / "reference.safetensors").is_file() and (dpo_run / "final").is_dir()


def test_eval_compares_base_and_tuned_on_the_held_out_pairs_as_training_measured_them(dpo_run, pairs):
    _, html = evaluate_to_folder(str(dpo_run), EvalOptions(dtype="float32", guard=False))
    report = json.loads((dpo_run / "eval" / "report.json").read_text())
    rows = [json.loads(line) for line in (dpo_run / "eval" / "samples.jsonl").read_text().splitlines()]
    assert report["kind"] == "pairs" and len(rows) == 12
    assert {"rejected", "tuned_margin", "baseline_margin"} <= rows[0].keys()
    # the tuned model's margin over the base's, pair by pair, is DPO's reward / beta: its sign is the reward accuracy
    moved = [r["tuned_margin"] > r["baseline_margin"] for r in rows]
    kept = next(e for e in _evals(dpo_run) if e["step"] == RunFolder(dpo_run).kept_step())  # what final/ holds
    assert sum(moved) / len(moved) == pytest.approx(kept["eval_reward_accuracy"], abs=1 / 12 + 1e-9)
    tuned, base = report["tuned"]["preference"], report["baseline"]["preference"]
    assert tuned["margin"] > base["margin"] and tuned["pairs"] == base["pairs"] == 12
    assert report["headline"].startswith("preference accuracy ") and "held-out pairs" in report["headline"]
    assert "per-token preference accuracy" in html.read_text() and report["tuned"]["loss"] is not None


def test_simpo_trains_without_a_reference(pairs, tiny_model, tmp_path):
    train(_config(pairs, tiny_model, preference={"loss": "simpo"}), tmp_path / "run")
    first, *_, last = _evals(tmp_path / "run")
    assert not (tmp_path / "run" / "reference.safetensors").exists()
    assert last["eval_reward_margin"] > first["eval_reward_margin"] and last["eval_reward_accuracy"] >= 0.9


def test_a_text_file_cannot_train_dpo(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": f"plain text number {i}"} for i in range(30)])
    with pytest.raises(Exception, match="objective dpo needs preference pairs"):
        train(RunConfig(data=str(data), model=str(tiny_model), objective="dpo"), tmp_path / "run")


def _command(pairs, model: Path, out: Path) -> list[str]:
    train_path, held_out = pairs
    return [
        "train", "--data", str(train_path), "--eval", str(held_out),
        "--model", str(model), "--out", str(out), "--objective", "dpo", "--epochs", "2", "--batch-tokens", "1024",
        "--lr", "5e-3", "--save-every", "3", "--eval-every", "5", "--threads", "1", "--compile", "off", "--quiet",
        "--no-eval",
    ]  # fmt: skip


def test_kill_9_then_resume_gives_the_uninterrupted_dpo_run_bit_for_bit(pairs, tiny_model, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    launch.run(_command(pairs, tiny_model, whole), check=True)
    env = {**os.environ, "TUNESMITH_KILL_AT": "logged:7"}
    killed = launch.run(_command(pairs, tiny_model, cut), env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-500:]
    launch.run(["train", "--resume", str(cut), "--quiet", "--no-eval"], check=True)
    assert history(cut) == history(whole) and len(history(whole)) > 10
    assert same_adapter(cut, whole)
