"""The fast training path gives the numbers of the plain one: bucketed batches, the fused head loss, compiling,
and the compute dtype chosen by device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from tests.conftest import chat
from tunesmith.config import RunConfig
from tunesmith.data.formats import FORMATS
from tunesmith.models import load
from tunesmith.tokenize.encode import IGNORE, encode
from tunesmith.tokenize.pack import PAD_MARK, collate, epoch_batches
from tunesmith.train import memory
from tunesmith.train import plan as plan_module
from tunesmith.train.fused_ce import linear_cross_entropy
from tunesmith.train.loss import supervised_loss
from tunesmith.train.plan import resolve
from tunesmith.train.setup import choose_precision, compile_layers


@pytest.fixture(scope="module")
def examples(tokenizer):
    """Twelve conversations of different lengths (1 to 12 repeats of a sentence)."""
    records = []
    for i in range(12):
        record = chat(i)
        record["messages"][0]["content"] += " Please." * (i * 3)
        records.append((i + 1, FORMATS["chat"].parse(record)))
    return encode(records, tokenizer, max_length=512).examples


def _alone(tiny_lm, example) -> torch.Tensor:
    return tiny_lm(input_ids=torch.as_tensor(example.input_ids, dtype=torch.long)[None]).logits[0]


def test_bucketed_batches_give_each_example_its_one_by_one_logits_and_loss(tiny_lm, examples, tokenizer):
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
                torch.testing.assert_close(logits[row, :n], _alone(tiny_lm, examples[i]), atol=1e-5, rtol=1e-5)
                alone += supervised_loss(tiny_lm, collate([examples[i]], tokenizer.pad_token_id))[0].item()
            assert together.item() == pytest.approx(alone, rel=1e-5)


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
    assert fused.item() == pytest.approx(reference.item(), rel=1e-10)
    torch.testing.assert_close(fused_grads[0], hidden.grad)
    torch.testing.assert_close(fused_grads[1], weight.grad)
    with torch.no_grad():
        assert linear_cross_entropy(hidden, weight, targets, chunk_rows).item() == pytest.approx(reference.item())


def test_every_weight_gets_the_gradient_of_the_full_cross_entropy(tiny_lm, examples, tokenizer):
    batch = collate(examples[:6], tokenizer.pad_token_id)
    tiny_lm.zero_grad(set_to_none=True)
    total, count = supervised_loss(tiny_lm, batch)
    (total / count).backward()
    ours = {name: p.grad.clone() for name, p in tiny_lm.named_parameters()}
    tiny_lm.zero_grad(set_to_none=True)
    labels = batch.labels.clone()
    labels[labels == PAD_MARK] = IGNORE
    tiny_lm(input_ids=batch.input_ids, labels=labels).loss.backward()
    for name, p in tiny_lm.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, atol=1e-6, rtol=1e-5, msg=name)
    tiny_lm.zero_grad(set_to_none=True)


def test_compiled_layers_give_the_same_loss_and_gradients(tiny_model, examples, tokenizer):
    batch = collate(examples, tokenizer.pad_token_id)
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        model = compile_layers(model) if compiled else model
        total, count = supervised_loss(model, batch, compiled=compiled)
        (total / count).backward()
        results.append((total.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-5, rtol=1e-4)


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
    tiny_lm.zero_grad(set_to_none=True)
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    torch.testing.assert_close(results[1][1], results[0][1], atol=2e-3, rtol=2e-2)


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


def test_compile_is_chosen_by_run_size_unless_set(monkeypatch):
    monkeypatch.setattr(plan_module, "compiler_available", lambda: True)
    small, large = np.full(100, 200), np.full(400, 200)  # 20k and 80k tokens in one epoch
    held_out = np.full(10, 200)
    auto = RunConfig(data="x.jsonl", epochs=1)
    assert resolve(auto, small, held_out)[0].compile == "off"
    assert resolve(auto, large, held_out)[0].compile == "on"
    assert resolve(auto.model_copy(update={"compile": "off"}), large, held_out)[0].compile == "off"
    monkeypatch.setattr(plan_module, "compiler_available", lambda: False)
    assert resolve(auto, large, held_out)[0].compile == "off"


@pytest.mark.parametrize(
    ("cuda", "bf16_gpu", "amx", "expected"),
    [
        (False, False, True, torch.bfloat16),  # CPU with AMX: bf16 matmuls are several times faster
        (False, False, False, torch.float32),  # CPU without: fp32 is faster than emulated bf16
        (True, True, False, torch.bfloat16),  # Ampere and newer GPUs
        (True, False, False, torch.float32),  # older GPUs: fp16 would need loss scaling; fp32 instead
    ],
)
def test_compute_dtype_is_chosen_by_device(monkeypatch, cuda, bf16_gpu, amx, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_gpu)
    monkeypatch.setattr(load, "_cpu_has_amx", lambda: amx)
    precision = choose_precision(RunConfig(data="x.jsonl"))
    assert precision.device.type == ("cuda" if cuda else "cpu")
    assert precision.compute == expected
    assert choose_precision(RunConfig(data="x.jsonl", precision="fp32")).compute == torch.float32
