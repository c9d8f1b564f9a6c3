"""Exact resume: kill -9 at a random step, resume, and get the same losses and adapter as an uninterrupted run."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.integration.test_train import _fixed_answers

STEPS = 40


def _command(data: Path, model: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "tunesmith", "train", "--data", str(data), "--model", str(model), "--out", str(out),
        "--epochs", "20", "--max-steps", str(STEPS), "--batch-tokens", "256", "--save-every", "3",
        "--eval-every", "10", "--lr", "1e-2", "--threads", "1", "--set", "lora.dropout=0.1", "--quiet",
    ]  # fmt: skip


def _logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


def _start_and_wait(command: list[str], run: Path, step: int) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _logged_steps(run) < step:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not reach the step in time"
        time.sleep(0.02)
    return process


def _history(run: Path) -> list[tuple[str, int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(d["event"], d["step"], d.get("loss", d.get("eval_loss"))) for d in lines]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "adapter_model.safetensors"))


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_model):
    data = _fixed_answers(tmp_path / "train.jsonl", n=40)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run(_command(data, tiny_model, whole), check=True, capture_output=True)

    kill_at = random.Random().randint(4, STEPS - 6)
    process = _start_and_wait(_command(data, tiny_model, broken), broken, kill_at)
    process.kill()  # SIGKILL: no chance to save anything
    process.wait()
    assert not (broken / "final").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "tunesmith", "train", "--resume", str(broken), "--quiet"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr

    assert _history(broken) == _history(whole), f"killed after step {kill_at}"
    expected, got = _adapter(whole), _adapter(broken)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_sigterm_saves_a_checkpoint_before_exit(tmp_path, tiny_model):
    data = _fixed_answers(tmp_path / "train.jsonl", n=40)
    run = tmp_path / "run"
    process = _start_and_wait(_command(data, tiny_model, run), run, 5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in stderr and f"--resume {run}" in stderr
    saved = json.loads(sorted((run / "checkpoints").iterdir())[-1].joinpath("state.json").read_text())["step"]
    assert saved == _logged_steps(run) >= 5  # the step it was on, not the last scheduled checkpoint
