"""Objective grpo end to end on a tiny model: the reward rises, a kill -9 resumes bit for bit, `eval` grades base
and tuned, the graders endpoint gives the very grades training and eval computed, and a reinforcement job made with
the official client succeeds with a rising reward."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import openai
import pytest

from bench.kill_trials import history, same_adapter
from tests import launch
from tests.conftest import write_jsonl
from tests.integration.test_jobs_api import wait
from tests.integration.test_serve import KEY, serving
from tunesmith.graders.judge import Endpoint
from tunesmith.graders.run import Runner
from tunesmith.graders.spec import read_grader
from tunesmith.graders.template import Sample

LONGER = "def grade(sample, item):\n    return min(1.0, len(sample['output_text']) / 24)\n"
"""A reward a random model can learn fast: longer answers (in characters) score more."""
GRADER = {
    "type": "multi",
    "name": "mixed",
    "graders": {
        "longer": {"type": "python", "name": "longer", "source": LONGER},
        "echo": {"type": "text_similarity", "name": "echo", "input": "{{sample.output_text}}",
                 "reference": "{{item.word}}", "evaluation_metric": "fuzzy_match"},
        "starts": {"type": "string_check", "name": "starts", "input": "{{sample.output_text}}",
                   "reference": " ", "operation": "like"},
    },
    "calculate_output": "0.8 * longer + 0.1 * echo + 0.1 * starts",
}  # fmt: skip


def prompts(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Say something about {i}."}], "word": f"item {i}"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("grpo")
    (folder / "mixed.json").write_text(json.dumps(GRADER))
    (folder / "longer.py").write_text(LONGER)
    return {
        "train": write_jsonl(folder / "train.jsonl", [prompts(i) for i in range(40)]),
        "grader": folder / "mixed.json",
        "reward": folder / "longer.py",
    }


def _command(files, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(files["train"]), "--model", str(model), "--out", str(out), "--objective", "grpo",
        "--grader", str(files["grader"]), "--reinforcement-max-answer-tokens", "2", "--reinforcement-group-size", "8",
        "--precision", "fp32", "--threads", "1", "--quiet", *extra,
    ]  # fmt: skip


def _rows(run: Path, event: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["event"] == event]


@pytest.fixture(scope="module")
def learned(files, tiny_model, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("learned") / "run"
    launch.run(_command(files, tiny_model, run, "--method", "full", "--lr", "0.1", "--max-steps", "12",
                        "--no-eval"), check=True)  # fmt: skip
    return run


def test_grpo_raises_the_reward_and_logs_what_it_learns(learned):
    steps, evals = _rows(learned, "step"), _rows(learned, "eval")
    first, last = [s["reward"] for s in steps[:3]], [s["reward"] for s in steps[-3:]]
    assert sum(last) / 3 > sum(first) / 3 + 0.05, [s["reward"] for s in steps]
    assert evals[-1]["eval_reward"] > evals[0]["eval_reward"]
    assert evals[-1]["eval_loss"] == -evals[-1]["eval_reward"]  # the best checkpoint is the best graded
    for name in ("reward_std", "kl", "clip_ratio", "answer_length", "reward/mixed", "reward/longer", "reward/echo"):
        assert name in steps[-1], name
    assert steps[-1]["answers"] == 4 * 8 and 1 <= steps[-1]["answer_length"] <= 3  # 2 tokens, the stop token too


def test_kill_9_then_resume_gives_the_uninterrupted_grpo_run_bit_for_bit(files, tiny_model, tmp_path):
    extra = ("--max-steps", "6", "--save-every", "2", "--eval-every", "3", "--lr", "1e-2", "--no-eval")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    launch.run(_command(files, tiny_model, whole, *extra), check=True)
    killed = launch.run(_command(files, tiny_model, cut, *extra), env={**os.environ, "TUNESMITH_KILL_AT": "logged:3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-500:]
    launch.run(["train", "--resume", str(cut), "--quiet", "--no-eval"], check=True)
    assert history(cut) == history(whole) and len(history(whole)) >= 8
    rewards = [(r["step"], r["reward"], r["kl"]) for r in _rows(cut, "step")]
    assert rewards == [(r["step"], r["reward"], r["kl"]) for r in _rows(whole, "step")]
    assert same_adapter(cut, whole)


def test_a_python_file_is_a_reward_function_too(files, tiny_model, tmp_path):
    run = tmp_path / "run"
    command = _command(files, tiny_model, run, "--max-steps", "2", "--no-eval")
    command[command.index(str(files["grader"]))] = str(files["reward"])
    launch.run(command, check=True)
    assert "reward/longer" in _rows(run, "step")[-1]


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with serving(tiny_model, "--api-key", KEY, "--dtype", "float32", home=tmp_path_factory.mktemp("home")) as (_, url):
        yield url


def test_eval_grades_base_and_tuned_and_the_graders_endpoint_gives_the_same_grades(learned, files, server):
    evaluated = launch.run(["eval", str(learned), "--no-guard", "--max-tokens", "2"])
    assert evaluated.returncode == 0, evaluated.stderr[-800:]
    report = json.loads((learned / "eval" / "report.json").read_text())
    assert report["headline"].startswith("grader mixed ")
    assert report["tuned"]["graders"]["mixed"] > report["baseline"]["graders"]["mixed"]
    rows = [json.loads(line) for line in (learned / "eval" / "samples.jsonl").read_text().splitlines()]
    lines = (files["train"]).read_text().splitlines()
    if True:
        client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
        assert client.fine_tuning.alpha.graders.validate(grader=GRADER).grader is not None
        for row in rows:
            item = json.loads(lines[row["line"] - 1])
            for side in ("tuned", "baseline"):
                graded = client.fine_tuning.alpha.graders.run(grader=GRADER, model_sample=row[side], item=item)
                assert graded.reward == row[f"{side}_grades"]["mixed"]  # exactly: the same graders, same inputs
                assert graded.sub_rewards["longer"] == row[f"{side}_grades"]["mixed.longer"]
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.alpha.graders.validate(grader={**GRADER, "calculate_output": "__import__('os')"})
        assert "calculate_output" in refused.value.message


def test_model_graders_ask_tunesmith_serve_as_the_judge(server):
    judge = {"base_url": f"{server}/v1", "api_key": KEY, "max_retries": 0}
    client = openai.OpenAI(**judge)
    model = client.models.list().data[0].id
    ask = [{"role": "system", "content": "Grade the answer."},
           {"role": "user", "content": "Question: {{item.question}} Answer: {{sample.output_text}}"}]  # fmt: skip
    score = {"type": "score_model", "name": "judge", "model": model, "input": ask, "range": [0, 10],
             "sampling_params": {"temperature": 0, "max_completions_tokens": 12}}  # fmt: skip
    label = {"type": "label_model", "name": "label", "model": model, "input": ask, "labels": ["right", "wrong"],
             "passing_labels": ["right"]}  # fmt: skip
    sample, item = Sample("4"), {"question": "2 + 2?"}
    for grader in (score, label):
        runner = Runner(read_grader(grader), endpoint=Endpoint(**judge))
        result = runner.grade(sample, item)
        assert not result.errors, result.errors  # the served model wrote the JSON its schema asked for
        assert 0 <= result.score <= 10 if grader is score else result.score in (0.0, 1.0)
        assert runner.usage.as_dict()[model]["total_tokens"] > 0  # counted for the cost line
    down = Runner(read_grader(score), endpoint=Endpoint(base_url="http://127.0.0.1:9/v1", max_retries=0))
    failed = down.grade(sample, item)
    assert failed.score == 0 and failed.metadata_errors()["model_grader_server_error"]


def test_a_reinforcement_job_succeeds_with_a_rising_reward(files, tiny_model, tmp_path):
    with serving(tiny_model, "--api-key", KEY, "--dtype", "float32", home=tmp_path / "home") as (_, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        uploaded = client.files.create(file=files["train"].open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=str(tiny_model),
            training_file=uploaded.id,
            seed=1,  # unseeded, a job draws its seed: 9 steps of sampled rewards are too few to rise every time
            method={
                "type": "reinforcement",
                "reinforcement": {
                    "grader": GRADER,
                    "hyperparameters": {
                        "n_epochs": 1,
                        "batch_size": 4,
                        "compute_multiplier": 2,
                        "eval_interval": 3,
                        "eval_samples": 4,
                        "reasoning_effort": "low",
                        "finetuning_type": "full",
                        "learning_rate": 0.1,
                        "max_answer_tokens": 2,
                    },
                },
            },
        )
        assert job.method.type == "reinforcement" and job.method.reinforcement.grader.type == "multi"
        job = wait(client, job.id)
        assert job.status == "succeeded", job.error
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data[::-1]
        metrics = [e.data for e in events if e.type == "metrics"]
        rewards = [m["train_reward_mean"] for m in metrics]
        assert len(rewards) == 9 and sum(rewards[-3:]) > sum(rewards[:3]), rewards
        held = [e.data["valid_reward_mean"] for e in events if "valid_reward_mean" in (e.data or {})]
        assert held[-1] > held[0], held
        assert client.fine_tuning.jobs.checkpoints.list(job.id).data
        bad = {"type": "reinforcement", "reinforcement": {"grader": dict(GRADER, calculate_output="longer.__class__")}}
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(model=str(tiny_model), training_file=uploaded.id, method=bad)
        assert "calculate_output" in refused.value.message
