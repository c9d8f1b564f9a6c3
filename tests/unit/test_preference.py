"""Preference pairs: the tokens each side learns (golden), log-probs equal the full softmax's, losses by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tunesmith.data.formats import parse_openai_preference
from tunesmith.data.schema import Message, PreferencePair
from tunesmith.tokenize.batches import collate
from tunesmith.tokenize.encode import IGNORE
from tunesmith.tokenize.pairs import encode_pairs
from tunesmith.train.preference import dpo_loss, sequence_log_probs, simpo_loss, token_log_probs

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


def test_sequence_log_probs_sum_each_rows_answer_tokens(tiny_lm, tokenizer):
    pair = encode_pairs([(1, PAIR)], tokenizer, max_length=512).pairs[0]
    batch = collate([pair.chosen, pair.rejected], int(tokenizer.pad_token_id))
    model = copy.deepcopy(tiny_lm).double()  # the fixture is shared
    with torch.no_grad():
        sums, counts = sequence_log_probs(model, batch)
        logits = model(input_ids=batch.input_ids).logits[:, :-1].log_softmax(-1)
    targets = batch.labels[:, 1:]
    learned = targets >= 0
    want = (logits.gather(2, targets.clamp(min=0)[..., None]).squeeze(2) * learned).sum(1)
    torch.testing.assert_close(sums, want, rtol=1e-10, atol=1e-10)
    assert counts.tolist() == [int((e.labels != IGNORE).sum()) for e in (pair.chosen, pair.rejected)]


def test_dpo_and_simpo_losses_equal_their_formulas_by_hand():
    loss, margin = dpo_loss(
        torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0]), beta=0.1
    )
    assert margin.item() == pytest.approx(0.2) and loss.item() == pytest.approx(math.log1p(math.exp(-0.2)))
    loss, margin = simpo_loss(
        torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([5]), torch.tensor([4]), beta=2.0, gamma=1.0
    )
    assert margin.item() == pytest.approx(2.0) and loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))
