"""The parts of training: batching plan, auto settings, the supervised loss, accumulation, config errors."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from tests.conftest import chat, full_cross_entropy
from tests.numerics import TINY_NORMS, assert_identity, assert_identity_scalar
from tunesmith.auto import auto_learning_rate, auto_plan
from tunesmith.config import RunConfig, build_config, merge_settings, parse_assignment
from tunesmith.errors import ConfigError
from tunesmith.tokenize.batches import PAD_MARK, WIDTH_STEP, collate, epoch_batches, padded_width
from tunesmith.tokenize.encode import IGNORE, encode
from tunesmith.training.loss import supervised_loss
from tunesmith.training.plan import Plan, held_out_split, resolve_plan
from tunesmith.training.setup import learning_rate_at


def test_each_epoch_uses_every_example_once_within_the_token_budget():
    lengths = np.random.default_rng(0).integers(5, 300, size=500)
    batches = epoch_batches(lengths, 1024, seed=1, epoch=0)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(500))
    assert all(len(b) * max(lengths[i] for i in b) <= 1024 for b in batches)
    assert batches == epoch_batches(lengths, 1024, seed=1, epoch=0)
    assert batches != epoch_batches(lengths, 1024, seed=1, epoch=1)


def test_training_widths_are_rounded_up_by_less_than_an_eighth_to_few_shapes():
    widths = np.arange(1, 4097)
    padded = np.array([padded_width(int(w)) for w in widths])
    assert (padded >= widths).all() and (padded % 8 == 0).all() and (np.diff(padded) >= 0).all()
    assert (padded - widths < np.maximum(8, widths / 8)).all()  # short rows: < 8 tokens; longer: < 1/8
    assert (padded[widths >= 512] % WIDTH_STEP == 0).all()
    assert len(set(padded[:2048].tolist())) < 2048 // 32  # fewer shapes than a fixed step of 32 would make


def test_auto_settings_are_filled_in():
    config = RunConfig(data="x.jsonl")
    lengths = np.full(160, 100)
    resolved, plan = resolve_plan(config, lengths, np.full(16, 100))
    assert resolved.epochs == 3 and resolved.learning_rate == 1.8e-3  # LoRA's rule for SmolLM2-135M, 576 wide
    assert resolved.precision in ("fp32", "bf16") and resolved.device == "cpu"
    assert plan.total_steps == len(plan.windows) and plan.warmup_steps >= 1
    autos = ("epochs", "learning_rate", "warmup_steps", "batch_tokens", "eval_every", "save_every", "threads")
    assert all(getattr(resolved, name) != "auto" for name in autos)
    assert resolve_plan(config.model_copy(update={"max_steps": 3}), lengths, lengths[:0])[1].total_steps == 3


def _evaluated_epochs(plan: Plan) -> tuple[int, set[int]]:
    """How many evaluations a plan makes, and the epochs they fall in."""
    steps = {s for s in range(1, plan.total_steps + 1) if plan.evaluates_after(s)}
    return len(steps), {plan.windows[s - 1][0] for s in steps}


def test_auto_evaluations_cost_a_share_of_the_run_but_come_at_least_once_an_epoch():
    config = RunConfig(data="x.jsonl", epochs=3)
    lengths = np.full(300, 340)
    small = resolve_plan(config, lengths, np.full(30, 340))[1]  # a tenth of the training set: five fit in the share
    assert _evaluated_epochs(small) == (5, {0, 1, 2})
    large = resolve_plan(config, lengths, np.full(100, 340))[1]  # a third: the share alone would allow two
    assert _evaluated_epochs(large) == (3, {0, 1, 2})
    huge = resolve_plan(config, lengths, np.full(600, 340))[1]  # twice the training set: still once an epoch
    assert _evaluated_epochs(huge) == (3, {0, 1, 2})
    cut = resolve_plan(config.model_copy(update={"max_steps": 60}), lengths, np.full(600, 340))[1]  # 60 steps: 2 epochs
    assert _evaluated_epochs(cut) == (2, {0, 1})


def test_auto_evaluations_reach_every_epoch_when_epochs_differ_in_steps():
    config = RunConfig(data="x.jsonl", epochs=3)
    lengths = np.random.default_rng(9).integers(40, 900, 300)  # packs into epochs of 89, 90 and 89 steps
    plan = resolve_plan(config, lengths, np.full(100, 340))[1]
    assert sorted(Counter(epoch for epoch, _ in plan.windows).values()) == [89, 89, 90]
    # every ceil(268 / 3) = 90 steps would evaluate at 90 (epoch 1), 180 (epoch 2) and 268, missing epoch 0
    # at 89, 178 and 268: the end's evaluation stands in for the one due at 267
    assert plan.eval_every == 89 and _evaluated_epochs(plan) == (3, {0, 1, 2})
    many = resolve_plan(config.model_copy(update={"epochs": 15}), lengths[:30], np.full(10, 340))[1]  # 11 steps each
    assert _evaluated_epochs(many)[0] == 5  # more epochs than evaluations: the cap holds, not one an epoch


def evaluated(total: int, every: int, epoch_steps: int | None = None) -> list[int]:
    """The steps a plan of `total` steps (in epochs of `epoch_steps`, else one) evaluates after, asked to every
    `every` steps."""
    windows = [(step // (epoch_steps or total), [[0]]) for step in range(total)]
    plan = Plan(windows, [], total, 1, 1e-3, every, every)
    return [step for step in range(1, total + 1) if plan.evaluates_after(step)]


def test_the_last_steps_evaluation_stands_in_for_one_due_less_than_half_an_interval_before_it():
    assert evaluated(176, 58) == [58, 116, 176]  # numpy-summaries' epochs of 59, 58 and 59 steps: 174 is dropped
    assert evaluated(130, 43) == [43, 86, 130] and evaluated(87, 43) == [43, 87]
    assert evaluated(200, 50) == [50, 100, 150, 200] and evaluated(130, 50) == [50, 100, 130]  # 30 steps: kept
    assert evaluated(5, 1) == [1, 2, 3, 4, 5] and evaluated(6, 100) == [6]
    assert evaluated(68, 58, epoch_steps=58) == [58, 68]  # cut 10 steps into epoch 1: epoch 0 keeps its evaluation


def test_the_auto_learning_rate_falls_with_the_width_by_tinkers_exponent_and_is_fixed_for_full():
    assert auto_learning_rate("lora", 2000) == 6.8e-4 and auto_learning_rate("dora", None) == 6.8e-4
    assert auto_learning_rate("lora", 576) == 1.8e-3 and auto_learning_rate("lora", 4096) == 3.9e-4
    assert auto_learning_rate("full", 576) == auto_learning_rate("full", 4096) == 2e-5


def test_preference_pairs_learn_at_a_tenth_of_the_supervised_rate():
    assert auto_learning_rate("lora", 576, "dpo") == 1.8e-4 and auto_learning_rate("full", None, "dpo") == 2e-6
    assert auto_learning_rate("lora", 576, "text") == auto_learning_rate("lora", 576)
    assert "divided by 10 for preference pairs" in auto_plan(320, "lora", 576, "dpo")[1]


def test_the_plan_says_what_auto_chooses_and_why():
    epochs, rate, keep = auto_plan(300, "lora", 576)
    assert epochs.startswith("3 epochs for 300 examples (about 3 passes")
    assert rate.startswith("learning rate 0.0018 (") and "576 wide" in rate
    assert "lowest held-out loss" in keep
    assert auto_plan(20, "full", None)[0].startswith("5 epochs for 20 examples (examples x epochs kept within")


def test_held_out_split_is_ten_percent_at_most_200_and_deterministic():
    assert len(held_out_split(160, 42)) == 16
    assert len(held_out_split(5000, 42)) == 200
    assert len(held_out_split(19, 42)) == 0
    assert held_out_split(160, 42).tolist() == held_out_split(160, 42).tolist()


def test_schedule_warms_up_then_decays():
    rates = [learning_rate_at(s, 100, 10, 1e-3, "cosine") for s in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert learning_rate_at(99, 100, 10, 1e-3, "linear") < 2e-5


@pytest.fixture(scope="module")
def examples(tokenizer):
    records = [(i + 1, _conversation(i)) for i in range(8)]
    return encode(records, tokenizer, max_length=512).examples


def _conversation(i):
    from tunesmith.data.formats import FORMATS

    return FORMATS["chat"].parse(chat(i * 37 + 3))


def test_supervised_loss_equals_the_full_cross_entropy_over_supervised_tokens(tiny_lm64, examples, tokenizer):
    tiny_lm = tiny_lm64
    batch = collate(examples, tokenizer.pad_token_id)
    total, count = supervised_loss(tiny_lm, batch)
    labels = batch.labels.clone()
    labels[labels == PAD_MARK] = IGNORE
    reference = full_cross_entropy(tiny_lm, batch)
    assert count == batch.supervised == int((labels[:, 1:] != IGNORE).sum())
    assert_identity_scalar((total / count).item(), reference.item(), "loss")


def _grads(model, groups, pad_id):
    model.zero_grad(set_to_none=True)
    batches = [collate(g, pad_id) for g in groups]
    supervised = sum(b.supervised for b in batches)
    for batch in batches:
        loss, _ = supervised_loss(model, batch)
        (loss / supervised).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_gradient_accumulation_4x2_equals_8x1(tiny_lm64, examples, tokenizer):
    tiny_lm = tiny_lm64
    whole = _grads(tiny_lm, [examples], tokenizer.pad_token_id)
    halves = _grads(tiny_lm, [examples[:4], examples[4:]], tokenizer.pad_token_id)
    assert_identity(halves, whole, "accumulated gradients", extra=TINY_NORMS)
    assert whole.abs().sum() > 0


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"field lora\.rnk: Extra inputs are not permitted"):
        build_config({"data": "d.jsonl", "lora": {"rnk": 8}})
    with pytest.raises(ConfigError, match=r"field lora\.rank: Input should be greater than 0 \(got -1\)"):
        build_config(merge_settings({"data": "d.jsonl"}, dict([parse_assignment("lora.rank=-1")])))
    with pytest.raises(ConfigError, match=r"field method: Input should be 'lora', 'dora' or 'full' \(got 'qlora'\)"):
        build_config({"data": "d.jsonl", "method": "qlora"})
    with pytest.raises(ConfigError, match="field data: Field required"):
        build_config({})
    with pytest.raises(ConfigError, match=r"field epochs: .*\(got 'many'\)"):
        build_config({"data": "d.jsonl", "epochs": "many"})


def test_flags_override_the_file_and_dotted_keys_reach_into_parts():
    merged = merge_settings({"data": "a.jsonl", "lora": {"rank": 8, "alpha": 16}}, {"lora.rank": 4, "data": "b.jsonl"})
    config = build_config(merged)
    assert (config.source, config.lora.rank, config.lora.alpha) == ("b.jsonl", 4, 16)
    assert parse_assignment("lora.targets=[q_proj, v_proj]") == ("lora.targets", ["q_proj", "v_proj"])
