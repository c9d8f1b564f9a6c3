"""Exact resume: kill -9 at any moment (mid-checkpoint too), resume, and get the uninterrupted run's losses and
adapter; damaged checkpoints and a full disk lose nothing."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from bench import kill_trials
from tests import launch
from tests.conftest import chat, write_jsonl
from tests.integration.test_train import _fixed_answers
from tunesmith.config import build_config
from tunesmith.errors import TrainingError
from tunesmith.training import checkpoint
from tunesmith.training.runner import train

STEPS = 40


def _logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


def _start_and_wait(command: list[str], run: Path, step: int) -> launch.Launched:
    process = launch.start(command)
    deadline = time.monotonic() + 120
    while _logged_steps(run) < step:
        assert process.poll() is None, process.output()
        assert time.monotonic() < deadline, "the run did not reach the step in time"
        time.sleep(0.02)
    return process


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model):
    """The kill trials' run, never interrupted: (data, its run folder)."""
    root = tmp_path_factory.mktemp("whole")
    data = write_jsonl(root / "train.jsonl", [chat(i) for i in range(40)])
    launch.run(kill_trials.command(data, tiny_model, root / "whole"), check=True)
    return data, root / "whole"


@pytest.mark.parametrize("kind", ["checkpoint", "renamed", "step", "final"])
def test_kill_9_at_a_chosen_moment_then_resume_equals_an_uninterrupted_run(uninterrupted, tiny_model, tmp_path, kind):
    """One trial of bench/kill_trials.py per kind of moment; the step and file are drawn at random each time."""
    data, whole = uninterrupted
    moment = next(m for m in kill_trials.moments(random.Random(), 5) if m.startswith(kind))
    trial = kill_trials.run_trial(moment, data, tiny_model, whole, tmp_path / "run")
    assert trial.killed and trial.same_losses and trial.same_adapter, trial


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(uninterrupted, tiny_model, tmp_path):
    data, whole = uninterrupted
    run = tmp_path / "run"
    env = {**os.environ, "TUNESMITH_KILL_AT": "logged:14"}
    launch.run(kill_trials.command(data, tiny_model, run), env=env)
    latest = sorted((run / "checkpoints").iterdir())[-1]
    assert latest.name == "step-000012"
    weights = latest / "optimizer.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated, as by a disk that filled up or a lost write
    resumed = launch.run(["train", "--resume", str(run), "--quiet", "--no-eval"])
    assert resumed.returncode == 0, resumed.stderr
    warning = [line for line in resumed.stderr.splitlines() if "damaged" in line]
    assert len(warning) == 1 and "step-000012" in warning[0] and "optimizer.safetensors has" in warning[0]
    assert kill_trials.history(run) == kill_trials.history(whole) and kill_trials.same_adapter(run, whole)


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_previous(tmp_path, tiny_model, monkeypatch):
    data = write_jsonl(tmp_path / "train.jsonl", [chat(i) for i in range(40)])
    real = checkpoint.save_file
    calls = {"n": 0}

    def full_disk(tensors, path):
        calls["n"] += 1
        if calls["n"] > 3:  # the first checkpoint (3 safetensors files) is written, the disk fills in the second
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    config = build_config({"data": str(data), "model": str(tiny_model), "batch_tokens": 256, "save_every": 2})
    with pytest.raises(TrainingError, match=r"step-000004: could not write the checkpoint \(No space left on device\)"):
        train(config.model_copy(update={"max_steps": 6}), tmp_path / "run")
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["step-000002"] and checkpoint.verify(tmp_path / "run" / "checkpoints" / "step-000002") is None


def test_sigterm_saves_a_checkpoint_before_exit(tmp_path, tiny_model):
    data = _fixed_answers(tmp_path / "train.jsonl", n=40)
    run = tmp_path / "run"
    process = _start_and_wait(kill_trials.command(data, tiny_model, run, STEPS), run, 5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.output(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in stderr and f"--resume {run}" in stderr
    saved = json.loads(sorted((run / "checkpoints").iterdir())[-1].joinpath("state.json").read_text())["step"]
    assert saved == _logged_steps(run) >= 5  # the step it was on, not the last scheduled checkpoint
