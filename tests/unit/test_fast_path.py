"""The fast training path gives the numbers of the plain one: bucketed batches, the fused head loss, compiling,
and the compute dtype chosen by device."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from tests.conftest import chat, full_cross_entropy
from tests.numerics import TINY_NORMS, assert_identity, assert_identity_scalar, bf16_rounding_bound
from tunesmith.config import RunConfig
from tunesmith.data.formats import FORMATS
from tunesmith.models import hardware
from tunesmith.tokenize.batches import collate, epoch_batches
from tunesmith.tokenize.encode import encode
from tunesmith.training import memory
from tunesmith.training.fused_ce import linear_cross_entropy
from tunesmith.training.loss import supervised_loss
from tunesmith.training.plan import PlanFacts, resolve_plan
from tunesmith.training.precision import choose_precision
from tunesmith.training.setup import compile_layers, compiler_settings


@pytest.fixture(scope="module")
def examples(tokenizer):
    """Twelve conversations of different lengths (1 to 12 repeats of a sentence)."""
    records = []
    for i in range(12):
        record = chat(i)
        record["messages"][0]["content"] += " Please." * (i * 3)
        records.append((i + 1, FORMATS["chat"].parse(record)))
    return encode(records, tokenizer, max_length=512).examples


def _alone(model, example) -> torch.Tensor:
    return model(input_ids=torch.as_tensor(example.input_ids, dtype=torch.long)[None]).logits[0]


def test_bucketed_batches_give_each_example_its_one_by_one_logits_and_loss(tiny_lm64, examples, tokenizer):
    tiny_lm = tiny_lm64
    lengths = np.array([len(e.input_ids) for e in examples])
    batches = epoch_batches(lengths, budget=int(lengths.sum()) // 3, seed=0, epoch=0)
    assert max(len(b) for b in batches) > 1, "the budget should put several examples in a batch"
    with torch.no_grad():
        for indices in batches:
            batch = collate([examples[i] for i in indices], tokenizer.pad_token_id, max_length=2048)
            logits = tiny_lm(input_ids=batch.input_ids).logits  # no mask: padding is on the right, attention is causal
            together, _ = supervised_loss(tiny_lm, batch)
            alone = 0.0
            for row, i in enumerate(indices):
                n = len(examples[i].input_ids)
                assert_identity(logits[row, :n], _alone(tiny_lm, examples[i]), f"row {row}", extra=TINY_NORMS)
                alone += supervised_loss(tiny_lm, collate([examples[i]], tokenizer.pad_token_id))[0].item()
            assert_identity_scalar(together.item(), alone, "batch loss", extra=TINY_NORMS)


@pytest.mark.parametrize(("chunk_rows", "compiled"), [(3, False), (512, False), (3, True)])
def test_fused_head_loss_and_gradients_equal_the_full_cross_entropy(chunk_rows, compiled):
    torch.manual_seed(1)
    hidden = torch.randn(10, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (10,))
    fused = linear_cross_entropy(hidden, weight, targets, chunk_rows, compiled=compiled)
    (fused * 0.5).backward()
    fused_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    reference = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    (reference * 0.5).backward()
    assert_identity_scalar(fused.item(), reference.item(), "loss")
    assert_identity(fused_grads[0], hidden.grad, "hidden grad")
    assert_identity(fused_grads[1], weight.grad, "weight grad")
    with torch.no_grad():
        assert_identity_scalar(linear_cross_entropy(hidden, weight, targets, chunk_rows).item(), reference.item())


def test_every_weight_gets_the_gradient_of_the_full_cross_entropy(tiny_lm64, examples, tokenizer):
    tiny_lm = tiny_lm64
    batch = collate(examples[:6], tokenizer.pad_token_id)
    tiny_lm.zero_grad(set_to_none=True)
    total, count = supervised_loss(tiny_lm, batch)
    (total / count).backward()
    ours = {name: p.grad.clone() for name, p in tiny_lm.named_parameters()}
    tiny_lm.zero_grad(set_to_none=True)
    full_cross_entropy(tiny_lm, batch).backward()
    for name, p in tiny_lm.named_parameters():
        assert_identity(ours[name], p.grad, name)
    tiny_lm.zero_grad(set_to_none=True)


def test_compiled_layers_give_the_same_loss_and_gradients(tiny_model, examples, tokenizer):
    batch = collate(examples, tokenizer.pad_token_id)
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64)
        model = compile_layers(model) if compiled else model
        with compiler_settings():
            total, count = supervised_loss(model, batch, compiled=compiled)
            (total / count).backward()
        results.append((total.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    assert_identity_scalar(results[1][0], results[0][0], "loss", extra=TINY_NORMS)
    assert_identity(results[1][1], results[0][1], "gradients", extra=TINY_NORMS)


def test_bf16_fused_loss_matches_the_plain_loss_under_autocast(tiny_lm, examples, tokenizer):
    """The compiled softmax step keeps bf16 logits and gradients as the eager one does: same loss, same grads."""
    batch = collate(examples[:6], tokenizer.pad_token_id)
    results = []
    for compiled in (False, True):
        tiny_lm.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            total, count = supervised_loss(tiny_lm, batch, compiled=compiled)
        (total / count).backward()
        results.append((total.item(), torch.cat([p.grad.flatten() for p in tiny_lm.parameters()])))
    sizes = [p.numel() for p in tiny_lm.parameters()]
    tiny_lm.zero_grad(set_to_none=True)
    # Both paths take the same bf16 logits; the loss is then summed in fp32 in both (reordered: float32 noise,
    # far below one bf16 rounding). The gradient of the logits is rounded to bf16 in the compiled path and
    # not in the eager one (1 rounding); backward then runs the same bf16 matmuls on it, each rounding its output
    # once in either path, so the difference grows by at most one rounding per matmul the gradient passes
    # (head, and o/down/up/gate/v/q/k per layer: 1 + 7 * 2 layers), relative to each tensor's largest gradient.
    assert abs(results[1][0] - results[0][0]) <= bf16_rounding_bound(1) * abs(results[0][0])
    bound = bf16_rounding_bound(1 + 1 + 7 * 2)
    for compiled, eager in zip(torch.split(results[1][1], sizes), torch.split(results[0][1], sizes)):
        assert (compiled - eager).abs().max() <= bound * eager.abs().max()


def test_heap_is_trimmed_only_past_the_working_set(monkeypatch):
    """Resident sizes (GB) at the end of each step: the first WORKING_SET_STEPS measure the working set (the largest),
    and a trim happens only at a step that ends more than TRIM_SLACK above it."""
    trims: list[int] = []
    sizes = iter([1.5, 2.0, 2.2, 2.5, 2.3, 2.0, 2.6])
    current = {"step": 0}
    monkeypatch.setattr(memory, "WORKING_SET_STEPS", 2)
    monkeypatch.setattr(memory, "TRIM_SLACK", int(0.4 * 1e9))
    monkeypatch.setattr(memory, "resident_bytes", lambda: int(next(sizes) * 1e9))
    monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda pad: trims.append(current["step"]) or 1)
    trimmer = memory.HeapTrimmer()
    for step in range(7):
        current["step"] = step
        trimmer.after_step()
    assert trims == [3, 6]


def test_compile_is_chosen_by_run_size_unless_set():
    small, large = np.full(100, 200), np.full(400, 200)  # 20k and 80k tokens in one epoch
    held_out = np.full(10, 200)
    auto = RunConfig(data="x.jsonl", epochs=1)
    compiler = PlanFacts("cpu", precision="fp32", width=576, compiler=True)  # the plan is a function of these facts
    assert resolve_plan(auto, small, held_out, facts=compiler)[0].compile == "off"
    assert resolve_plan(auto, large, held_out, facts=compiler)[0].compile == "on"
    assert resolve_plan(auto.model_copy(update={"compile": "off"}), large, held_out, facts=compiler)[0].compile == "off"
    without = PlanFacts("cpu", precision="fp32", width=576, compiler=False)
    assert resolve_plan(auto, large, held_out, facts=without)[0].compile == "off"


@pytest.mark.parametrize(
    ("cuda", "bf16_gpu", "cpu_speedup", "expected"),
    [
        (False, False, 4.0, torch.bfloat16),  # CPU with AMX: bf16 matmuls are several times faster
        (False, False, 2.8, torch.bfloat16),  # AVX512-BF16 on Zen 4: 2.8x matmuls, 1.5x a LoRA step
        (False, False, 1.3, torch.float32),  # too little gain for autocast's casts
        (False, False, 0.5, torch.float32),  # CPUs that emulate bf16: fp32 is faster
        (True, True, 0.5, torch.bfloat16),  # Ampere and newer GPUs
        (True, False, 0.5, torch.float16),  # older GPUs (T4, V100): fp16 with a loss scaler
    ],
)
def test_compute_dtype_is_chosen_by_device(monkeypatch, cuda, bf16_gpu, cpu_speedup, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_gpu)
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda: cpu_speedup)
    precision = choose_precision()
    assert precision.device.type == ("cuda" if cuda else "cpu")
    assert precision.compute == expected
    assert (precision.scaler() is not None) == (expected == torch.float16)
    assert choose_precision(precision="fp32").compute == torch.float32


def test_the_cpu_measurement_is_made_once_and_cached(home, monkeypatch):
    calls = []
    monkeypatch.setattr(hardware, "measure_bf16_speedup", lambda: calls.append(1) or 2.5)
    hardware.cpu_bf16_speedup.cache_clear()
    try:
        assert hardware.cpu_prefers_bf16() and hardware.cpu_bf16_speedup() == 2.5
        hardware.cpu_bf16_speedup.cache_clear()  # a new process reads the cached value
        assert hardware.cpu_bf16_speedup() == 2.5 and calls == [1]
        assert next(iter(json.loads((home / "machine.json").read_text()).values())) == {"bf16_speedup": 2.5}
    finally:
        hardware.cpu_bf16_speedup.cache_clear()


def test_the_cpu_measurement_times_real_matmuls_and_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    assert hardware.measure_bf16_speedup() > 0
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(("bf16_seconds", "pairs"), [(10.0, 2), (0.3, hardware.REPEATS + 1)])
def test_a_far_slower_bf16_is_timed_once_a_close_one_repeatedly(monkeypatch, bf16_seconds, pairs):
    """Emulated bf16 (a first timing far below the threshold) is not timed again; a close call is."""
    calls = []
    monkeypatch.setattr(
        hardware, "_seconds", lambda a, b: calls.append(a.dtype) or (bf16_seconds if a.dtype == torch.bfloat16 else 1.0)
    )
    assert hardware.measure_bf16_speedup() == 1.0 / bf16_seconds
    assert calls.count(torch.bfloat16) == calls.count(torch.float32) == pairs  # the first pair warms up


def test_save_every_epoch_saves_once_an_epoch():
    lengths = np.full(100, 200)  # 20k tokens: 10 batches of 2048 tokens an epoch
    config = RunConfig(data="x.jsonl", epochs=3, save_every="epoch", device="cpu", precision="fp32")
    resolved, plan = resolve_plan(config, lengths, np.full(10, 200))
    per_epoch = plan.total_steps // 3
    assert plan.save_every == per_epoch == resolved.save_every and plan.total_steps == 3 * per_epoch
