"""Staged runs: plain text, then answers, in one run folder; the adapter handed from stage to stage, a kill in the
second stage resumed exactly, and the evaluation of the base model, the model after stage 1 and final/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from tests import launch
from tests.conftest import chat, prose, write_jsonl
from tunesmith.config import build_config, read_config_file
from tunesmith.errors import ConfigError
from tunesmith.evaluate.evaluation import EvalOptions, evaluate
from tunesmith.evaluate.report import report_dict
from tunesmith.runs import ADAPTER_WEIGHTS, RunFolder
from tunesmith.training.precision import choose_precision
from tunesmith.training.runner import train
from tunesmith.training.setup import ModelSpec, build_model
from tunesmith.training.stages import stage_config, stage_folders

TEXT_STEPS, SFT_STEPS = 4, 8


@pytest.fixture(scope="module")
def staged_config(tmp_path_factory, tiny_model) -> Path:
    root = tmp_path_factory.mktemp("staged")
    docs = write_jsonl(root / "docs.jsonl", [{"text": prose(80, seed=i)} for i in range(30)])
    qa = write_jsonl(root / "qa.jsonl", [chat(i) for i in range(40)])
    settings = {
        "model": str(tiny_model),
        "threads": 1,
        "precision": "fp32",
        "batch_tokens": 256,
        "save_every": 2,
        "eval_every": 2,
        "learning_rate": 1e-2,
        "stages": [
            {"name": "text", "data": str(docs), "objective": "text", "epochs": 5, "max_steps": TEXT_STEPS},
            {"name": "sft", "data": str(qa), "epochs": 10, "max_steps": SFT_STEPS},
        ],
    }
    path = root / "staged.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _train(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return launch.run(["train", *args, "--quiet", "--no-eval"], env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def whole(staged_config, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("whole") / "run"
    done = _train(["--config", str(staged_config), "--out", str(run)])
    assert done.returncode == 0, done.stderr
    return run


def _losses(run: Path) -> list[tuple[str, int, float]]:
    return [(r["stage"], r["step"], r["loss"]) for r in RunFolder(run).read_metrics() if r["event"] == "step"]


def test_the_stages_share_one_folder_and_hand_over_their_adapter(whole, staged_config):
    config = build_config(read_config_file(whole / "config.yaml"))
    first, second = stage_folders(whole, config)
    assert (first.name, second.name) == ("1-text", "2-sft")
    assert (whole / "final" / ADAPTER_WEIGHTS).read_bytes() == (second / "final" / ADAPTER_WEIGHTS).read_bytes()
    assert [(stage, step) for stage, step, _ in _losses(whole)] == [("text", s) for s in range(1, 5)] + [
        ("sft", s) for s in range(5, 13)
    ]  # one curve, steps counted on across the stages
    manifest = json.loads((whole / "manifest.json").read_text())
    assert [s["name"] for s in manifest["stages"]] == ["text", "sft"] and all(s["data"] for s in manifest["stages"])
    second_config = stage_config(config, 1, [first, second])
    assert second_config.start_from == str((first / "final").resolve()) and second_config.objective == "sft"
    model = build_model(ModelSpec.of(second_config), choose_precision(second_config.device, second_config.precision))
    handed = get_peft_model_state_dict(model)
    saved = load_file(str(first / "final" / ADAPTER_WEIGHTS))
    assert handed.keys() == saved.keys() and all(torch.equal(handed[k], saved[k]) for k in saved)
    assert any(bool(saved[k].abs().sum()) for k in saved if "lora_B" in k)  # stage 1 learned something to hand over


def test_an_adapter_of_another_shape_is_refused_in_one_line(whole, staged_config):
    config = build_config(read_config_file(whole / "config.yaml"))
    smaller = config.lora.model_copy(update={"rank": 4})
    other = config.stage(1, str(whole / "final")).model_copy(update={"lora": smaller})
    with pytest.raises(ConfigError, match="its adapter does not fit this run's"):
        build_model(ModelSpec.of(other), choose_precision(other.device, other.precision))


def test_a_kill_in_the_second_stage_then_resume_equals_the_uninterrupted_run(whole, staged_config, tmp_path):
    run = tmp_path / "run"
    killed = _train(["--config", str(staged_config), "--out", str(run)], {"TUNESMITH_KILL_AT": f"step:{5}"})
    assert killed.returncode == -9, killed.stderr  # step 5 of stage 2: stage 1 has only 4
    assert (run / "stages" / "1-text" / "final").is_dir() and not (run / "stages" / "2-sft" / "final").exists()
    resumed = _train(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr
    assert _losses(run) == _losses(whole)
    for folder in ("final", "stages/1-text/final", "stages/2-sft/final"):
        assert (run / folder / ADAPTER_WEIGHTS).read_bytes() == (whole / folder / ADAPTER_WEIGHTS).read_bytes()


def test_the_evaluation_compares_base_after_the_first_stage_and_final(whole, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    evaluation = evaluate(str(run), EvalOptions(limit=4, max_new_tokens=4, guard=False, dtype="float32"))
    assert [stage.name for stage in evaluation.stages] == ["after text"]
    report = report_dict(evaluation)
    losses = [report["baseline"]["loss"], report["stages"][0]["loss"], report["tuned"]["loss"]]
    assert len(set(losses)) == 3 and losses[2] < losses[0]  # three different models; the final one learned the task
    assert "after text" in report["headline"]
    assert evaluation.held_out.source.endswith("qa.jsonl")  # the last stage's held-out examples


def test_a_stage_without_data_and_none_for_the_run_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="field data: Field required"):
        train(build_config({"stages": [{"name": "text"}]}), tmp_path / "run")
