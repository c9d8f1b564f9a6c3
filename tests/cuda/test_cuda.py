"""The CUDA path, where a GPU is present (each test skips without one): precision chosen by the GPU, the fused
output-head loss against the plain one, the engine's greedy answer against transformers' generate, sampling under a
function's grammar, a LoRA and a QLoRA run, and the memory plan against torch.cuda.max_memory_allocated.
bench/gpu_check.sh runs them.

TUNESMITH_CUDA_TESTS_ON=cpu runs the same tests on CPU (those that can), which checks the tests themselves here.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import chat, write_jsonl
from tests.families import BY_NAME, make_family_model

DEVICE = torch.device(os.environ.get("TUNESMITH_CUDA_TESTS_ON", "cuda"))
ON_CUDA = DEVICE.type == "cuda"
pytestmark = pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU (gpu_check.sh)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5 with its real chat template: the GPU machine has no default model (an 80 MB wheel)."""
    return make_family_model(BY_NAME["qwen2.5"], tmp_path_factory.mktemp("cuda") / "tiny")


def test_auto_precision_is_bf16_where_the_gpu_has_it_else_fp16_with_a_scaler():
    from tunesmith.training.precision import choose_precision

    if not ON_CUDA:
        pytest.skip("a GPU's choice")
    precision = choose_precision("auto", "auto")
    assert precision.device.type == "cuda"
    assert precision.compute == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert (precision.scaler() is None) == torch.cuda.is_bf16_supported()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_head_loss_and_gradients_equal_the_plain_cross_entropy(dtype):
    from tunesmith.training.fused_ce import linear_cross_entropy

    torch.manual_seed(1)
    hidden = torch.randn(300, 64, dtype=dtype, device=DEVICE, requires_grad=True)
    weight = torch.randn(1000, 64, dtype=dtype, device=DEVICE, requires_grad=True)
    targets = torch.randint(0, 1000, (300,), device=DEVICE)
    fused = linear_cross_entropy(hidden, weight, targets, 128)
    fused.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    reference = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    reference.backward()
    # the same sums in another order: relative error within a few units of the dtype's epsilon times the terms
    tolerance = 64 * torch.finfo(dtype).eps * 300
    assert abs(fused.item() - reference.item()) <= tolerance * abs(reference.item())
    assert torch.allclose(grads[0], hidden.grad, rtol=tolerance, atol=tolerance)
    assert torch.allclose(grads[1], weight.grad, rtol=tolerance, atol=tolerance)


def test_engine_greedy_answers_equal_transformers_generate(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.engine.core import generate
    from tunesmith.engine.sampling import Sampling

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).to(DEVICE).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    prompt = tokenizer("What is 3 + 3? Answer:").input_ids
    with torch.inference_mode():
        ids = torch.tensor([prompt], device=DEVICE)
        expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    stops = [int(tokenizer.eos_token_id)]  # where generate stops too (the config's eos)
    answers = generate(model, [prompt], [Sampling(max_tokens=12)], pad_id=int(tokenizer.pad_token_id), stop_ids=stops)
    wanted = expected[0, len(prompt) :].tolist()
    assert answers[0].ids == (wanted[:-1] if wanted[-1:] == stops else wanted)  # generate keeps the stop token


def test_constrained_sampling_on_the_device_always_writes_a_valid_call(tiny):
    """The engine's masks (computed on the CPU beside the forward pass) applied to the device's logits: sampled at
    temperature 1, a random model's calls always parse and match the function's parameters."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.constrain.grammar import tools_grammar
    from tunesmith.constrain.guide import Grammars
    from tunesmith.data.schema import Tool
    from tunesmith.engine.core import generate
    from tunesmith.engine.sampling import Sampling
    from tunesmith.tokenize.render import ChatRenderer

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).to(DEVICE).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    renderer = ChatRenderer(tokenizer)
    schema = {"type": "object", "properties": {"n": {"enum": [1, 2, 30]}, "unit": {"enum": ["a", "b"]}}}
    tool = Tool("count", "Count", json.dumps(schema | {"required": ["n", "unit"]}))
    stops = renderer.stop_token_ids()
    grammars = Grammars(tokenizer, model.config.vocab_size, stops)
    made = grammars.guide(tools_grammar((tool,), renderer.call_syntax, "required", parallel=False))
    prompt = tokenizer("<|im_start|>assistant\n")["input_ids"]
    samplings = [Sampling(160, 1.0, 1.0, seed) for seed in range(8)]  # a tiny vocabulary: about a token a byte
    answers = generate(
        model, [prompt] * 8, samplings, pad_id=int(tokenizer.pad_token_id), stop_ids=stops, constraints=[made] * 8
    )
    finished = [a for a in answers if a.finish == "stop"]
    assert len(finished) >= 4, [(a.finish, tokenizer.decode(a.ids)) for a in answers[:2]]
    for answer in finished:
        _, calls = renderer.call_syntax.read(tokenizer.decode(answer.ids))
        ((name, arguments),) = calls
        values = json.loads(arguments)
        assert name == "count" and values["n"] in (1, 2, 30) and values["unit"] in ("a", "b")


@pytest.mark.parametrize("quantize", ["none", "4bit"])
def test_a_lora_run_learns(quantize, tiny, tmp_path):
    if quantize != "none" and (not ON_CUDA or importlib.util.find_spec("bitsandbytes") is None):
        pytest.skip("QLoRA needs CUDA and bitsandbytes")
    from tunesmith.config import build_config
    from tunesmith.training.runner import train

    data = write_jsonl(tmp_path / "train.jsonl", [chat(i) for i in range(32)])
    values = {"data": str(data), "model": str(tiny), "device": DEVICE.type, "max_steps": 12}
    values |= {"learning_rate": 1e-2, "quantize": quantize, "eval_every": 1000, "batch_tokens": 512}
    result = train(build_config(values), tmp_path / "run")
    losses = [row["loss"] for row in _rows(result.run_dir) if row["event"] == "step"]
    assert result.final is not None and len(losses) == 12 and losses[-1] < losses[0]


def _rows(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_memory_plan_is_within_a_quarter_of_cudas_peak(tmp_path):
    if not ON_CUDA:
        pytest.skip("tests/integration/test_fit.py holds the plan against CPU peaks")
    from bench import memory_fit
    from bench.gpu_lora import make_model

    model = make_model("llama-3.2-1b", tmp_path / "model")
    for case in [c for c in memory_fit.CASES if c["precision"] == "bf16"][:1]:  # the script measures the rest
        result = memory_fit.run_case(str(model), "cuda", case)
        assert 0.75 <= result["ratio"] <= 1.25, result


def test_the_distillation_kernel_on_the_device_equals_its_loss_on_full_logits():
    from tests.unit.test_top_k_kl import _teacher
    from tunesmith.training.top_k_kl import linear_top_k_kl, top_k_kl

    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(40, 16, dtype=torch.float64, generator=generator).to(DEVICE).requires_grad_()
    weight = torch.randn(97, 16, dtype=torch.float64, generator=generator).to(DEVICE).requires_grad_()
    ids, probs = (t.to(DEVICE) for t in _teacher(40, 97, 5, seed=4))
    plain = top_k_kl(hidden @ weight.t(), ids, probs)
    plain_grads = torch.autograd.grad(plain, (hidden, weight))
    fused = linear_top_k_kl(hidden, weight, ids, probs, chunk_rows=7)
    fused_grads = torch.autograd.grad(fused, (hidden, weight))
    assert torch.allclose(fused, plain, rtol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(fused_grads, plain_grads))


def test_the_preference_losses_on_the_device_equal_their_cpu_values():
    from tunesmith.training.preference import dpo_loss, simpo_loss

    generator = torch.Generator().manual_seed(5)
    chosen, rejected, ref_c, ref_r = torch.randn(4, 8, dtype=torch.float64, generator=generator)
    counts = torch.tensor([3.0, 5.0, 7.0, 2.0, 4.0, 6.0, 1.0, 9.0], dtype=torch.float64)
    on_cpu = [dpo_loss(chosen, rejected, ref_c, ref_r, 0.1), simpo_loss(chosen, rejected, counts[:8], counts, 2.0, 0.5)]
    moved = [t.to(DEVICE) for t in (chosen, rejected, ref_c, ref_r, counts)]
    on_device = [
        dpo_loss(moved[0], moved[1], moved[2], moved[3], 0.1),
        simpo_loss(moved[0], moved[1], moved[4][:8], moved[4], 2.0, 0.5),
    ]
    for cpu_pair, device_pair in zip(on_cpu, on_device):
        for a, b in zip(cpu_pair, device_pair):
            assert torch.allclose(a, b.cpu(), rtol=1e-12)
