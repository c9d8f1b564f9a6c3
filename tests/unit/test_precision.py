"""The CUDA path's choices, checked on CPU: fp16's loss scaler (a skipped overflow, its state resumed), QLoRA and
bitsandbytes' optimisers refused off CUDA with one line, and the memory plan's choices."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import chat, write_jsonl
from tunesmith.cli import app
from tunesmith.config import build_config
from tunesmith.errors import ConfigError
from tunesmith.training.checkpoint import checkpoint_dirs
from tunesmith.training.events import StopFlag
from tunesmith.training.fit import GIB, Shape, choose_fit, memory_needed
from tunesmith.training.loop import _update
from tunesmith.training.precision import Precision, check_optimizer, check_quantize, choose_precision
from tunesmith.training.runner import resume, train

CPU = torch.device("cpu")
# Llama-3.1-8B and Llama-3.2-1B's sizes (their config.json)
LLAMA_8B = Shape(
    layers=32, hidden=4096, intermediate=14336, vocab=128256, heads=32, kv_heads=8, head_dim=128, tied=False
)
LLAMA_1B = Shape(layers=16, hidden=2048, intermediate=8192, vocab=128256, heads=32, kv_heads=8, head_dim=64, tied=True)


def _step_inputs(weight: torch.nn.Parameter) -> SimpleNamespace:
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    scaler = Precision(CPU, torch.float16).scaler()
    scaler.scale(torch.tensor(1.0))  # as every step's backward does first
    return SimpleNamespace(optimizer=optimizer, scaler=scaler, config=SimpleNamespace(max_grad_norm=1.0))


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_halved():
    weight = torch.nn.Parameter(torch.ones(4))
    run = _step_inputs(weight)
    scale = run.scaler.get_scale()
    weight.grad = torch.tensor([1.0, float("inf"), 0.0, 0.0])
    _, skipped = _update(run, [weight], 0, loss=1.0)
    assert skipped and torch.equal(weight.detach(), torch.ones(4)) and run.scaler.get_scale() == scale / 2
    run.optimizer.zero_grad()
    weight.grad = torch.full((4,), scale / 2)  # scaled gradients: unscaled they are 1.0 each, norm 2 clipped to 1
    norm, skipped = _update(run, [weight], 1, loss=1.0)
    assert not skipped and norm == pytest.approx(2.0) and not torch.equal(weight.detach(), torch.ones(4))


def test_a_non_finite_loss_without_a_scaler_stops_the_run_before_the_weights_change():
    weight = torch.nn.Parameter(torch.ones(2))
    run = SimpleNamespace(optimizer=torch.optim.AdamW([weight]), scaler=None, config=SimpleNamespace(max_grad_norm=1.0))
    weight.grad = torch.ones(2)
    with pytest.raises(Exception, match="not finite"):
        _update(run, [weight], 4, loss=float("nan"))
    assert torch.equal(weight.detach(), torch.ones(2))


def test_fp16_training_keeps_its_scale_in_checkpoints_and_resumes_exactly(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "train.jsonl", [chat(i) for i in range(24)])
    values = {"data": str(data), "model": str(tiny_model), "batch_tokens": 256, "precision": "fp16"}
    values |= {"max_steps": 6, "save_every": 1, "eval_every": 1000, "learning_rate": 1e-2, "compile": "off"}
    whole = train(build_config(values), tmp_path / "whole")

    class StopAfter:
        def __init__(self, stop: StopFlag, step: int) -> None:
            self.stop, self.step = stop, step

        def emit(self, event) -> None:
            if event.kind == "step" and event.step == self.step:
                self.stop.request("test")

    stop = StopFlag()
    first = train(build_config(values), tmp_path / "split", sink=StopAfter(stop, 3), stop=stop)
    assert first.reason == "test" and first.state.step == 3
    state = json.loads((checkpoint_dirs(first.run_dir)[-1] / "state.json").read_text())
    assert state["scaler"]["scale"] > 0
    second = resume(first.run_dir)
    rows = [json.loads(line) for line in (whole.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if row["event"] == "step"]
    assert all("loss_scale" in row for row in steps) and steps[-1]["loss"] < steps[0]["loss"]
    a = (whole.final / "adapter_model.safetensors").read_bytes()
    b = (second.final / "adapter_model.safetensors").read_bytes()
    assert a == b


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_qlora_is_refused_off_cuda_with_one_line(quantize, arithmetic, tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="CUDA GPUs only, and this run is on cpu"):
        check_quantize(quantize, "lora", CPU)
    with pytest.raises(ConfigError, match="trains an adapter"):
        check_quantize(quantize, "full", torch.device("cuda"))
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(arithmetic),
            "--model",
            str(tiny_model),
            "--quantize",
            quantize,
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2 and not (tmp_path / "r").exists()  # refused before anything is written
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"quantize {quantize}" in lines[0] and "Traceback" not in result.output


def test_bitsandbytes_optimisers_are_refused_off_cuda():
    check_optimizer("adamw", CPU)
    with pytest.raises(ConfigError, match="optimizer adamw_8bit: bitsandbytes quantises on CUDA GPUs only"):
        check_optimizer("adamw_8bit", CPU)


def test_bf16_asked_on_a_gpu_without_it_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ConfigError, match="Tesla T4"):
        choose_precision("cuda", "bf16")
    assert choose_precision("cuda", "auto").compute == torch.float16


def test_qlora_keeps_an_8b_model_within_a_24_gb_gpu_where_bf16_lora_does_not():
    common = {"method": "lora", "precision": "bf16", "batch_tokens": 4096}
    plain = memory_needed(LLAMA_8B, **common)
    nf4 = memory_needed(LLAMA_8B, **common, quantize="4bit")
    assert 14.5 * GIB < plain.weights < 15.5 * GIB  # 8.03e9 parameters in 2 bytes
    assert nf4.weights < 0.4 * plain.weights  # the projections in about half a byte, the rest in bf16
    gpu = choose_fit(LLAMA_8B, method="lora", precision="bf16", available=24 * GIB, quantize="4bit")
    assert gpu.fits and not choose_fit(LLAMA_8B, method="lora", precision="bf16", available=16 * GIB).fits


def test_auto_takes_the_largest_batch_that_fits_then_checkpointing():
    roomy = choose_fit(LLAMA_1B, method="lora", precision="bf16", available=80 * GIB)
    assert (roomy.batch_tokens, roomy.checkpointing) == (16384, False)
    tight = choose_fit(LLAMA_1B, method="lora", precision="bf16", available=8 * GIB)
    assert tight.fits and tight.checkpointing  # a large batch with checkpointing, rather than a small one without
    small = choose_fit(LLAMA_1B, method="lora", precision="bf16", available=16 * GIB)
    assert small.fits and not small.checkpointing and 4096 <= small.batch_tokens < 16384
    given = choose_fit(LLAMA_1B, method="lora", precision="bf16", available=8 * GIB, batch_tokens=16384)
    assert given.batch_tokens == 16384 and given.checkpointing  # a given batch is kept: checkpointing makes it fit
    cpu = choose_fit(LLAMA_1B, method="lora", precision="fp32", available=64 * GIB, device="cpu", largest=2048)
    assert cpu.batch_tokens == 2048 and cpu.slack > 1


def test_data_check_says_whether_the_run_fits_and_refuses_qlora_here(arithmetic, tiny_model):
    runner = CliRunner()
    base = ["data", "check", str(arithmetic), "--model", str(tiny_model), "--no-estimate"]
    result = runner.invoke(app, [*base, "--json", "--method", "full"])
    memory = json.loads(result.output)["stats"]["training"]["memory"]
    assert result.exit_code == 0 and memory["fits"] and memory["device"] == "cpu"
    assert memory["batch_tokens"] == 2048 and memory["activation_checkpointing"] is False
    assert memory["parts_gib"]["trained"] > 0 and memory["needed_gib"] < memory["available_gib"]
    refused = runner.invoke(app, [*base, "--quantize", "4bit"])
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1
