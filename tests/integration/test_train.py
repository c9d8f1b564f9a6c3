"""Training runs on a tiny model: learning, the run folder, reloading results, errors, text objective."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from tests.conftest import prose, write_jsonl
from tunesmith.cli import app
from tunesmith.config import build_config
from tunesmith.errors import ConfigError, TrainingError
from tunesmith.training import loop as loop_module
from tunesmith.training.objectives import supervised as objectives
from tunesmith.training.runner import resume, train

FIXED = "The answer is always blue."


def _fixed_answers(path, n=24):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}: what colour?"},
                {"role": "assistant", "content": FIXED},
            ]
        }
        for i in range(n)
    ]
    return write_jsonl(path, rows)


def _config(data, model, **values):
    """Settings of a small test run; compile off unless asked (compiling a 2-layer model costs more than it saves)."""
    return build_config({"data": str(data), "model": str(model), "batch_tokens": 512, "compile": "off", **values})


def _losses(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if line["event"] == "step"]


def test_loss_falls_and_the_run_folder_is_complete(tmp_path, tiny_model):
    data = _fixed_answers(tmp_path / "train.jsonl")
    result = train(_config(data, tiny_model, epochs=20, max_steps=30, learning_rate=1e-2), tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert (
        len(losses) == 30 and sum(losses[-3:]) / 3 < losses[0] - 0.5
    )  # a random tiny model plateaus near 9.7 under LoRA
    run = tmp_path / "run"
    for name in ("config.yaml", "manifest.json", "data-report.json", "metrics.jsonl", "final/adapter_config.json"):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["data"]) >= {"train", "tokenizer", "chat_template"} and manifest["seed"] == 42
    assert manifest["libraries"]["torch"] == torch.__version__.split("+")[0] or manifest["libraries"]["torch"]
    assert result.state.best_eval_loss is not None  # 10% of 24 examples held out
    assert json.loads((run / "data-report.json").read_text())["held_out"]["lines"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000024", "step-000030"]  # keep 2


def test_lora_trains_every_adapter_weight_and_no_base_weight(tmp_path, tiny_model, monkeypatch):
    seen = {}
    original = loop_module.train_steps

    def spy(run, state):
        seen["before"] = {n: p.detach().clone() for n, p in run.model.named_parameters()}
        reason = original(run, state)
        seen["after"] = {n: p.detach().clone() for n, p in run.model.named_parameters()}
        seen["trainable"] = {n for n, p in run.model.named_parameters() if p.requires_grad}
        return reason

    monkeypatch.setattr("tunesmith.training.runner.train_steps", spy)
    train(_config(_fixed_answers(tmp_path / "t.jsonl"), tiny_model, max_steps=3), tmp_path / "run")
    before, after, trainable = seen["before"], seen["after"], seen["trainable"]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(not torch.equal(before[n], after[n]) for n in trainable)
    assert all(torch.equal(before[n], after[n]) for n in before if n not in trainable)


def test_lora_result_loads_with_plain_peft(tmp_path, tiny_model):
    train(_config(_fixed_answers(tmp_path / "t.jsonl"), tiny_model, max_steps=4), tmp_path / "run")
    final = tmp_path / "run" / "final"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), final)
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "step-000004" / "trainable.safetensors"))
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved) and all(torch.equal(loaded[n].float(), saved[n]) for n in saved)
    assert (final / "chat_template.jinja").is_file() or "chat_template" in (final / "tokenizer_config.json").read_text()


@pytest.mark.parametrize("method", ["full", "dora"])
def test_full_and_dora_run_and_reload(tmp_path, tiny_model, method):
    train(_config(_fixed_answers(tmp_path / "t.jsonl"), tiny_model, max_steps=3, method=method), tmp_path / "run")
    final = tmp_path / "run" / "final"
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    if method == "full":
        tuned = AutoModelForCausalLM.from_pretrained(final)
        assert not torch.equal(tuned.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)
    else:
        tuned = PeftModel.from_pretrained(base, final)
        assert tuned.peft_config["default"].use_dora
        assert any("lora_magnitude" in n for n, _ in tuned.named_parameters())
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(tuned(input_ids=ids).logits).all()


def test_a_non_finite_loss_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path, tiny_model, monkeypatch):
    calls = {"n": 0}
    original = objectives.supervised_loss

    def poisoned(model, batch, compiled=False, correct=None):
        calls["n"] += 1
        loss, count = original(model, batch, compiled, correct)
        return (loss * float("nan") if calls["n"] == 3 else loss), count

    monkeypatch.setattr(objectives, "supervised_loss", poisoned)
    config = _config(_fixed_answers(tmp_path / "t.jsonl"), tiny_model, max_steps=6, save_every=2, eval_every=100)
    with pytest.raises(TrainingError, match=r"step 3: the loss \(nan\) .* is not finite"):
        train(config, tmp_path / "run")
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-000002"]
    assert not (tmp_path / "run" / "final").exists()


def test_text_objective_learns_every_token(tmp_path, tiny_model):
    docs = write_jsonl(
        tmp_path / "docs.jsonl", [{"text": f"Clause {i}: the tenant pays rent monthly."} for i in range(30)]
    )
    result = train(_config(docs, tiny_model, objective="text", max_steps=3), tmp_path / "run")
    report = json.loads((tmp_path / "run" / "data-report.json").read_text())
    assert report["stats"]["train"]["supervised_tokens"] == report["stats"]["train"]["tokens"]
    assert result.final is not None
    with pytest.raises(ConfigError, match="plain text has no answers to learn with objective sft"):
        train(_config(docs, tiny_model), tmp_path / "run2")


def test_a_resume_with_changed_settings_refuses_unless_forced(tmp_path, tiny_model):
    data = _fixed_answers(tmp_path / "t.jsonl")
    train(_config(data, tiny_model, max_steps=2), tmp_path / "run")
    with pytest.raises(TrainingError, match=r"changed settings \(learning_rate\)"):
        resume(tmp_path / "run", overrides={"learning_rate": 0.1})
    _fixed_answers(data, n=30)
    with pytest.raises(TrainingError, match="the data or tokenizer changed"):
        resume(tmp_path / "run")
    assert resume(tmp_path / "run", force=True).reason == "finished"
    with pytest.raises(ConfigError, match="is not empty"):
        train(_config(data, tiny_model), tmp_path / "run")


def test_cli_train_errors_are_one_line_with_exit_2(tmp_path, tiny_model):
    runner = CliRunner()
    data = _fixed_answers(tmp_path / "t.jsonl")
    bad_yaml = tmp_path / "run.yaml"
    bad_yaml.write_text(f"data: {data}\nlora:\n  rnk: 8\n")
    result = runner.invoke(app, ["train", "--config", str(bad_yaml), "--model", str(tiny_model)])
    assert result.exit_code == 2
    assert f"{bad_yaml}: field lora.rnk: Extra inputs are not permitted" in result.output
    result = runner.invoke(app, ["train", "--data", str(data), "--set", "lora.rank=0"])
    assert result.exit_code == 2 and "field lora.rank: Input should be greater than 0 (got 0)" in result.output
    broken = write_jsonl(
        tmp_path / "broken.jsonl", ['{"messages": [}', *[json.loads(data.read_text().splitlines()[0])] * 12]
    )
    result = runner.invoke(
        app, ["train", "--data", str(broken), "--model", str(tiny_model), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and f"{broken}:1:" in result.output and "Traceback" not in result.output


def test_generate_and_chat_answer_like_the_training_data(tmp_path, tiny_model):
    data = _fixed_answers(tmp_path / "t.jsonl", n=40)
    config = _config(data, tiny_model, method="full", epochs=40, max_steps=80, learning_rate=5e-3, eval_every=100)
    train(config, tmp_path / "run")
    result = CliRunner().invoke(
        app,
        ["generate", "--model", str(tmp_path / "run"), "--prompt", "Question 99: what colour?", "--max-tokens", "20"],
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == FIXED
    questions = "Question 5: what colour?\n/reset\nQuestion 6: what colour?\n/exit\n"
    chat = CliRunner().invoke(app, ["chat", str(tmp_path / "run"), "--max-tokens", "20"], input=questions)
    assert chat.exit_code == 0, chat.output
    assert chat.output.count(FIXED) == 2 and chat.output.count("you>") == 4


def test_early_stopping_ends_the_run_when_the_held_out_loss_stops_improving(tmp_path, tiny_model):
    data = _fixed_answers(tmp_path / "t.jsonl", n=40)
    config = _config(data, tiny_model, epochs=50, learning_rate=0.5, eval_every=1, early_stopping=2)
    result = train(config, tmp_path / "run")
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert result.reason == "early_stopping" and result.final is not None
    assert result.state.step < 50 * 2 and len(evals) == result.state.step + 1  # and one before the first step
    assert evals[0]["step"] == 0 and "best_eval_loss" not in evals[0]
    assert min(e["eval_loss"] for e in evals[:-2]) <= min(e["eval_loss"] for e in evals[-2:])


def test_log_json_prints_every_event(tmp_path, tiny_model):
    data = _fixed_answers(tmp_path / "t.jsonl")
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--model", str(tiny_model), "--out", str(run), "--max-steps", "2"]
    result = CliRunner().invoke(app, [*args, "--log-json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert events[0]["event"] == "start" and events[-2]["event"] == "end" and events[-1]["event"] == "evaluation"
    assert sum(e["event"] == "step" for e in events) == 2


def test_a_run_too_small_to_hold_examples_out_trains_and_says_it_is_not_evaluated(tmp_path, tiny_model):
    data = _fixed_answers(tmp_path / "t.jsonl", n=12)
    args = ["train", "--data", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*args, "--max-steps", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "not evaluated" in result.output and (tmp_path / "run" / "final").is_dir()


def test_one_plain_text_file_trains_and_its_held_out_windows_are_evaluated(tmp_path, tiny_model):
    """A user's collected writing as one 180 KB .txt file, for continued pre-training."""
    writings = tmp_path / "writings.txt"
    writings.write_text(prose(27_000), encoding="utf-8")
    assert 170_000 < writings.stat().st_size < 200_000
    args = ["train", "--data", str(writings), "--objective", "text", "--model", str(tiny_model), "--max-length", "1024"]
    result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output  # the evaluation after training ran on the held-out windows
    report = json.loads((tmp_path / "run" / "data-report.json").read_text())
    windows = report["stats"]["train"]["rows"]
    assert report["stats"]["train"]["examples"] == 1 and windows >= 20
    held = [json.loads(line)["text"] for line in (tmp_path / "run" / "held-out.jsonl").read_text().splitlines()]
    assert len(held) == report["held_out"]["windows"] == round(windows * 0.1)
    assert all(text and text in writings.read_text() for text in held)  # whole windows of the file, as text
    evaluation = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert evaluation["kind"] == "text" and evaluation["examples"] == len(held)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_activation_checkpointing_recomputes_the_same_steps(tmp_path, tiny_model, method):
    """Checkpointed layers are recomputed in backward with the same weights and dropout draws: the same losses."""
    data = _fixed_answers(tmp_path / "train.jsonl")
    runs = {}
    for checkpointing in (False, True):
        values = {"epochs": 3, "max_steps": 4, "precision": "fp32", "compile": "off", "method": method}
        config = _config(data, tiny_model, activation_checkpointing=checkpointing, **values)
        train(config, tmp_path / str(checkpointing))
        runs[checkpointing] = _losses(tmp_path / str(checkpointing))
    assert len(runs[True]) == 4
    assert runs[True] == pytest.approx(runs[False], rel=1e-6, abs=1e-6)  # fp32 rounding of the same operations
    with pytest.raises(ConfigError, match="cannot be used together"):
        train(_config(data, tiny_model, activation_checkpointing=True, compile="on"), tmp_path / "both")
