"""Preference pairs: the tokens each side learns (golden), log-probs equal the full softmax's, losses by hand."""

from __future__ import annotations

import contextlib
import copy
import math

import numpy as np
import pytest
import torch

from tunesmith.config import PreferenceSettings
from tunesmith.data.formats import parse_openai_preference
from tunesmith.data.schema import Message, PreferencePair
from tunesmith.tokenize.batches import ordered_batches
from tunesmith.tokenize.encode import IGNORE
from tunesmith.tokenize.pairs import PAIR_WIDTH_STEP, collate_pairs, encode_pairs
from tunesmith.training.objectives.preference import Preference, reference_log_probs
from tunesmith.training.preference import dpo_loss, sequence_log_probs, simpo_loss, token_log_probs

PAIR = PreferencePair(
    prompt=(
        Message("system", "Be warm."),
        Message("user", "My order is late."),
        Message("assistant", "Sorry!"),
        Message("user", "Any news?"),
    ),
    chosen="Great news: it ships today!",
    rejected="No.",
)


def _trained(tokenizer, example) -> str:
    return tokenizer.decode([i for i, label in zip(example.input_ids, example.labels) if label != IGNORE])


def test_each_side_learns_only_its_final_answer_after_the_same_prompt(tokenizer):
    (pair,) = encode_pairs([(3, PAIR)], tokenizer, max_length=512).pairs
    assert pair.line == 3
    assert _trained(tokenizer, pair.chosen) == "Great news: it ships today!<|im_end|>"
    assert _trained(tokenizer, pair.rejected) == "No.<|im_end|>"  # the earlier assistant turn is prompt
    start = int((pair.chosen.labels != IGNORE).argmax())
    assert start == int((pair.rejected.labels != IGNORE).argmax())
    assert pair.chosen.input_ids[:start].tolist() == pair.rejected.input_ids[:start].tolist()
    rendered = tokenizer.apply_chat_template(
        [*({"role": m.role, "content": m.content} for m in PAIR.prompt), {"role": "assistant", "content": "No."}],
        tokenize=False,
    )
    assert tokenizer.decode(pair.rejected.input_ids) == rendered  # exactly as the model's template renders it


def test_openai_preference_records_encode_the_same_way(tokenizer):
    record = parse_openai_preference(
        {
            "input": {"messages": [{"role": "user", "content": "Hi"}]},
            "preferred_output": [{"role": "assistant", "content": "Hello, lovely to see you!"}],
            "non_preferred_output": [{"role": "assistant", "content": "What."}],
        }
    )
    (pair,) = encode_pairs([(1, record)], tokenizer, max_length=512).pairs
    assert _trained(tokenizer, pair.chosen) == "Hello, lovely to see you!<|im_end|>"
    assert _trained(tokenizer, pair.rejected) == "What.<|im_end|>"


def test_a_pair_whose_one_side_does_not_fit_is_left_out_whole(tokenizer):
    long = PreferencePair(prompt=(Message("user", "Hi"),), chosen="ok", rejected="word " * 300)
    out = encode_pairs([(1, PAIR), (2, long)], tokenizer, max_length=64)
    assert [p.line for p in out.pairs] == [1] and [line for line, _ in out.dropped] == [2]
    assert out.dropped[0][1] > 300


def _reference_log_probs(hidden, weight, targets):
    return (hidden @ weight.t()).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)


@pytest.mark.parametrize("trained_head", [False, True])
def test_token_log_probs_and_their_gradients_equal_the_full_softmax(trained_head):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1100, 16, dtype=torch.float64, generator=generator)  # three chunks, the last one short
    weight = torch.randn(50, 16, dtype=torch.float64, generator=generator)
    targets = torch.randint(0, 50, (1100,), generator=generator)
    scale = torch.randn(1100, dtype=torch.float64, generator=generator)  # each row's own weight, as DPO gives
    results = []
    for fn in (token_log_probs, _reference_log_probs):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_(trained_head)
        values = fn(h, w, targets)
        (values * scale).sum().backward()
        results.append((values.detach(), h.grad, w.grad))
    (ours, d_hidden, d_weight), (want, want_hidden, want_weight) = results
    torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-12)  # float64: rounding only
    torch.testing.assert_close(d_hidden, want_hidden, rtol=1e-10, atol=1e-12)
    if trained_head:
        torch.testing.assert_close(d_weight, want_weight, rtol=1e-10, atol=1e-12)


def _own_conversation_log_prob(model, example) -> float:
    """The answer's summed log-prob with the side run alone, as a plain causal LM in its own row."""
    ids = torch.from_numpy(example.input_ids.astype("int64"))[None]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    labels = torch.from_numpy(example.labels.astype("int64"))[1:]
    learned = labels >= 0
    return float(logits[learned].gather(1, labels[learned][:, None]).sum())


def _pairs(tokenizer):
    short = PreferencePair(prompt=(Message("user", "Hi"),), chosen="Hello there, friend!", rejected="Hi.")
    return encode_pairs([(1, PAIR), (2, short), (3, PAIR)], tokenizer, max_length=512).pairs


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_pair_row_runs_the_prompt_once_and_each_answer_sees_only_the_prompt_and_itself(
    tiny_lm64, tokenizer, attention
):
    """Prompt once, both answers after it: each side's log-prob equals its own conversation run alone (float64,
    so rounding only), across rows of different lengths with padding, under both attention implementations."""
    model = copy.deepcopy(tiny_lm64)
    model.set_attn_implementation(attention)
    pairs = _pairs(tokenizer)
    for p in pairs:
        prompt = int((p.chosen.labels != IGNORE).argmax())
        assert p.shared == prompt and p.length == len(p.chosen.input_ids) + len(p.rejected.input_ids) - prompt
    batch = collate_pairs(pairs, int(tokenizer.pad_token_id))
    width = batch.input_ids.shape[1]
    assert width % PAIR_WIDTH_STEP == 0 and width < max(p.length for p in pairs) + PAIR_WIDTH_STEP
    with torch.no_grad():
        sums, counts = sequence_log_probs(model, batch)
    want = [_own_conversation_log_prob(model, e) for p in pairs for e in (p.chosen, p.rejected)]
    # eager attention takes its softmax in float32 (rounding 6e-8 per weight), sdpa stays in float64
    tolerance = 1e-10 if attention == "sdpa" else 1e-6
    torch.testing.assert_close(sums, torch.tensor(want, dtype=torch.float64), rtol=tolerance, atol=tolerance)
    assert counts.tolist() == [e.supervised for p in pairs for e in (p.chosen, p.rejected)]


def test_padding_in_a_pair_batch_sends_no_nan_into_the_gradients(tiny_lm, tokenizer):
    pairs = _pairs(tokenizer)
    model = copy.deepcopy(tiny_lm)  # the fixture is shared
    sums, _ = sequence_log_probs(model, collate_pairs(pairs, int(tokenizer.pad_token_id)))
    sums.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


def test_dpo_and_simpo_losses_equal_their_formulas_by_hand():
    loss, margin = dpo_loss(
        torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0]), beta=0.1
    )
    assert margin.item() == pytest.approx(0.2) and loss.item() == pytest.approx(math.log1p(math.exp(-0.2)))
    loss, margin = simpo_loss(
        torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([5]), torch.tensor([4]), beta=2.0, gamma=1.0
    )
    assert margin.item() == pytest.approx(2.0) and loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))


@pytest.mark.parametrize("sft_weight", [0.0, 0.5])
def test_dpo_start_evaluation_from_the_reference_equals_a_pass_over_the_held_out_pairs(tiny_lm, tokenizer, sft_weight):
    """Before the first step the policy is the reference: the step-0 numbers need no pass of their own."""
    pairs = _pairs(tokenizer)
    pad = int(tokenizer.pad_token_id)
    batches = ordered_batches(np.array([p.length for p in pairs]), 256)
    held_out = reference_log_probs(tiny_lm, pairs, batches, pad, contextlib.nullcontext)
    settings = PreferenceSettings(loss="dpo", beta=0.1, sft_weight=sft_weight)
    objective = Preference(pairs, pairs, settings, (held_out, held_out), pad, contextlib.nullcontext)
    measured, derived = objective.evaluate(tiny_lm, batches), objective.evaluate_start(tiny_lm, batches)
    assert measured is not None and derived is not None and derived.keys() == measured.keys()
    assert derived == pytest.approx(measured, rel=1e-6, abs=1e-6)  # the same fp32 numbers, summed in another order
    assert derived["eval_reward_margin"] == 0.0 and derived["eval_reward_accuracy"] == 0.0
