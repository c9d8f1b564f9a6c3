"""Distillation end to end with a real teacher: `tunesmith serve` on 127.0.0.1 (a tiny model whose adapter always
answers "The answer is alpha.") answers with its top-k log-probs, the tiny base model learns them
(--objective distill), and `tunesmith distill report` compares the two."""

from __future__ import annotations

import html
import json
import math

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests import launch
from tests.conftest import write_jsonl
from tunesmith.config import RunConfig
from tunesmith.distill.collect import CollectSettings, TeacherSettings, collect
from tunesmith.distill.student import servers_for, serving
from tunesmith.errors import ConfigError
from tunesmith.runs import RunFolder
from tunesmith.tokenize.batches import collate
from tunesmith.training.objectives import load_run_data
from tunesmith.training.runner import train
from tunesmith.training.top_k_kl import top_k_kl

TOP_K = 5


def _prompt(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Question {i}?"}]}


@pytest.fixture(scope="module")
def teacher(adapter_base, adapter_runs, tmp_path_factory):
    """The alpha adapter behind `tunesmith serve`: (its base URL, its model id)."""
    server = servers_for(str(adapter_runs["alpha"]))[0]
    log = tmp_path_factory.mktemp("teacher") / "server.log"
    with serving(server, "float32", 4, log) as url:
        yield url, server.ids["tuned"]


@pytest.fixture(scope="module")
def collected(teacher, tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill")
    prompts = write_jsonl(folder / "prompts.jsonl", [_prompt(i) for i in range(24)])
    url, model = teacher
    settings = CollectSettings(TeacherSettings(url, model, max_tokens=16, logprobs=TOP_K), "local", concurrency=4)
    summary = collect(str(prompts), folder / "teacher.jsonl", settings)
    assert summary.answered == 24 and not summary.failed
    return folder / "teacher.jsonl"


def test_the_served_teachers_top_k_reaches_the_answers_file(collected):
    records = [json.loads(line) for line in collected.read_text().splitlines()]
    entries = [e for r in records for e in r["logprobs"]]
    assert len(records) == 24 and entries
    assert all(len(e["top_logprobs"]) == TOP_K for e in entries)
    assert all(sum(math.exp(o["logprob"]) for o in e["top_logprobs"]) <= 1 + 1e-4 for e in entries)


def test_a_student_that_is_the_teacher_has_no_kl_where_it_learns_the_teachers_distribution(
    collected, adapter_base, adapter_runs, tokenizer
):
    """The served log-probs, their mapping to the student's ids and the loss agree: the teacher's own weights
    (here in float64) are at KL 0 from its top-k, up to the float32 rounding of the served log-probs."""
    config = RunConfig(data=str(collected), model=str(adapter_base), objective="distill")
    data = load_run_data(config, tokenizer)
    assert data.report["distill"] == {"answers": 24, "aligned": 24, "soft_positions": 24 * 5, "hard_positions": 24}
    batch = collate(data.train + data.held_out, tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(adapter_base, dtype=torch.float64)
    model = PeftModel.from_pretrained(model, RunFolder(adapter_runs["alpha"]).final).eval()
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids).logits[:, :-1][batch.labels[:, 1:] >= 0]
    soft = batch.top_probs[:, 0] < 1
    kl = top_k_kl(logits[soft], batch.top_ids[soft], batch.top_probs[soft]).item()
    hard = top_k_kl(logits[~soft], batch.top_ids[~soft], batch.top_probs[~soft]).item()
    assert kl / soft.sum().item() < 1e-6  # per position; the end-of-turn positions learn their one token:
    assert hard / (~soft).sum().item() > 1e-6


def test_distill_trains_on_the_teachers_top_k_then_the_report_compares_student_and_teacher(
    collected, teacher, adapter_base, tmp_path
):
    run = tmp_path / "run"
    config = RunConfig(
        data=str(collected), model=str(adapter_base), objective="distill", epochs=30, max_steps=60, learning_rate=3e-2,
        batch_tokens=512, threads=1, compile="off", eval_every=30, lora={"rank": 8},
    )  # fmt: skip
    result = train(config, run)
    report = json.loads((run / "data-report.json").read_text())["distill"]
    assert report["answers"] == 24 and report["aligned"] > 0 and report["soft_positions"] > 0
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] if m["event"] == "step" else m["eval_loss"] for m in steps if m["event"] in ("step", "eval")]
    assert result.final is not None and all(math.isfinite(v) and v >= 0 for v in losses)
    evals = [m["eval_loss"] for m in steps if m["event"] == "eval"]
    assert evals[-1] < evals[0] / 4  # the student learnt the teacher's distribution

    held_out = write_jsonl(tmp_path / "held.jsonl", [_prompt(i) for i in range(3)])
    url, model = teacher
    command = [
        "distill", "report", str(run), "--teacher", url, "--teacher-model", model,
        "--data", str(held_out), "--api-key", "local", "--max-tokens", "12", "--price-in", "2.5", "--price-out",
        "10", "--hourly-cost", "0.5", "--dtype", "float32",
    ]  # fmt: skip
    done = launch.run(command)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = run / "distill-report"
    saved = json.loads((folder / "report.json").read_text())
    teacher_rows = [json.loads(line)["teacher"] for line in (folder / "teacher.jsonl").read_text().splitlines()]
    prompt_tokens = sum(r["prompt_tokens"] for r in teacher_rows) / 3
    answer_tokens = sum(r["completion_tokens"] for r in teacher_rows) / 3
    expected_cost = 1000 * (prompt_tokens * 2.5 + answer_tokens * 10) / 1e6
    assert saved["economics"]["teacher"]["cost_per_1000"] == pytest.approx(expected_cost)
    tuned = [json.loads(line)["teacher"] for line in (folder / "tuned.jsonl").read_text().splitlines()]
    mean_latency = sum(r["latency_s"] for r in tuned) / 3
    assert saved["economics"]["tuned"]["cost_per_1000"] == pytest.approx(1000 * 0.5 / 3600 * mean_latency)
    assert saved["quality"]["wins"] is None  # prompts without reference answers
    vs_teacher = saved["quality"]["vs_teacher"]
    assert vs_teacher["tuned"]["rougeL"] > vs_teacher["base"]["rougeL"] + 30, saved["samples"]
    assert len(saved["samples"]) == 3 and all(s["teacher"] and s["tuned"] and s["base"] for s in saved["samples"])
    page = (folder / "report.html").read_text()
    assert html.escape(saved["headline"]) in page and "data:image/png;base64," in page
    assert saved["headline"] in " ".join(done.stdout.split())  # rich wraps lines


def test_distill_on_answers_without_log_probs_says_how_to_get_them(tiny_model, tmp_path):
    answered = [{"messages": _prompt(i)["messages"] + [{"role": "assistant", "content": "Done."}]} for i in range(12)]
    data = write_jsonl(tmp_path / "plain.jsonl", answered)
    with pytest.raises(ConfigError, match="no teacher log-probs"):
        train(RunConfig(data=str(data), model=str(tiny_model), objective="distill"), tmp_path / "run")
