"""rsLoRA, LoRA+ and NEFTune: each does what its paper says, and nothing when off."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.config import LoraSettings, RunConfig
from tunesmith.training.loss import causal_lm
from tunesmith.training.precision import Precision
from tunesmith.training.setup import ModelSpec, build_model, build_optimizer, set_learning_rate

CPU_FP32 = Precision(torch.device("cpu"), torch.float32)


def _model(tiny_model, **settings):
    lora = LoraSettings(**settings.pop("lora", {}))
    config = RunConfig(data="x.jsonl", model=str(tiny_model), lora=lora, compile="off", **settings)
    return config, build_model(ModelSpec.of(config), CPU_FP32)


def _scalings(model) -> set[float]:
    return {s for m in model.modules() if isinstance(getattr(m, "scaling", None), dict) for s in m.scaling.values()}


def test_rslora_scales_by_the_square_root_of_the_rank(tiny_model):
    assert _scalings(_model(tiny_model, lora={"rank": 16, "alpha": 32})[1]) == {2.0}
    assert _scalings(_model(tiny_model, lora={"rank": 16, "alpha": 32, "rslora": True})[1]) == {8.0}


def test_lora_plus_gives_the_b_matrices_their_ratio_and_a_the_rate(tiny_model):
    config, model = _model(tiny_model, lora={"b_lr_ratio": 16})
    optimizer = build_optimizer(model, 1e-4, b_lr_ratio=config.lora.b_lr_ratio)
    set_learning_rate(optimizer, 3e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    rates = {names[id(p)]: group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates and all(rate == pytest.approx(48e-4 if ".lora_B." in name else 3e-4) for name, rate in rates.items())
    assert {".lora_A." in n for n in rates} == {True, False}  # both kinds are trained


def test_plain_lora_keeps_one_rate_and_the_two_groups_of_before(tiny_model):
    _, model = _model(tiny_model)
    optimizer = build_optimizer(model, 1e-4)
    set_learning_rate(optimizer, 3e-4)
    assert len(optimizer.param_groups) == 2 and {g["lr"] for g in optimizer.param_groups} == {3e-4}


def test_neftune_adds_bounded_noise_to_the_embeddings_in_training_only(tiny_model):
    alpha = 5.0
    _, plain = _model(tiny_model)
    _, noisy = _model(tiny_model, neftune_alpha=alpha)
    ids = torch.arange(3, 35).reshape(2, 16)
    clean = causal_lm(plain).get_input_embeddings()(ids)
    embed = causal_lm(noisy).get_input_embeddings()
    noise = embed(ids) - clean
    bound = alpha / math.sqrt(16 * clean.shape[-1])
    assert noise.abs().max() <= bound and noise.abs().max() > 0.9 * bound  # uniform in [-bound, bound]
    noisy.eval()
    assert torch.equal(embed(ids), clean)
