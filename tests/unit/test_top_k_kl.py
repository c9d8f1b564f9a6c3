"""Distillation's top-k KL: a hand-computed value, its gradient, the fused head, and the teacher's targets."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from tests.conftest import chat
from tunesmith.data.formats import FORMATS
from tunesmith.tokenize.batches import collate
from tunesmith.tokenize.encode import IGNORE, encode
from tunesmith.tokenize.teacher import soften_all, vocabulary_texts
from tunesmith.training.loss import supervised_loss
from tunesmith.training.top_k_kl import linear_top_k_kl, top_k_kl, top_k_kl_kernel


def test_the_loss_is_the_kl_over_the_top_tokens_and_one_bucket_for_the_rest():
    logits = [1.0, 2.0, 0.0, -1.0]
    z = sum(math.exp(x) for x in logits)
    q = [math.exp(x) / z for x in logits]
    # the teacher: token 1 with 0.6, token 0 with 0.3, 0.1 on the others (tokens 2 and 3)
    by_hand = 0.6 * math.log(0.6 / q[1]) + 0.3 * math.log(0.3 / q[0]) + 0.1 * math.log(0.1 / (q[2] + q[3]))
    loss = top_k_kl(torch.tensor([logits], dtype=torch.float64), torch.tensor([[1, 0]]), torch.tensor([[0.6, 0.3]]))
    assert abs(loss.item() - by_hand) < 1e-6  # the teacher's probabilities are float32: 6e-8 relative each
    assert abs(by_hand - 0.0109178) < 1e-6  # worked out on paper: -0.04238 + 0.07088 - 0.01756


def test_one_token_with_all_the_mass_is_cross_entropy_and_repeats_count_once():
    logits = torch.randn(5, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    goal = torch.tensor([3, 0, 10, 7, 3])
    ids = goal[:, None].repeat(1, 4)  # a short top list repeats its id with probability 0
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 5, dtype=torch.float64)
    assert torch.allclose(top_k_kl(logits, ids, probs), F.cross_entropy(logits, goal, reduction="sum"), rtol=1e-12)


def _teacher(rows: int, vocab: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(vocab, generator=generator)[:k] for _ in range(rows)])
    probs = torch.softmax(torch.randn(rows, k + 1, dtype=torch.float64, generator=generator), dim=1)[:, :k]
    probs[0, 1:] = 0.0  # a row whose top list is one token and the rest
    return ids, probs


def test_the_kernels_gradient_is_the_derivative_of_the_loss():
    logits = torch.randn(6, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ids, probs = _teacher(6, 13, 3, seed=2)
    assert torch.autograd.gradcheck(lambda x: top_k_kl(x, ids, probs), (logits,))
    top_k_kl(logits, ids, probs).backward()
    loss, grad = top_k_kl_kernel(logits.detach(), ids, probs)
    assert torch.allclose(loss, top_k_kl(logits.detach(), ids, probs), rtol=1e-12)
    assert torch.allclose(grad, logits.grad, atol=1e-12)


def test_the_fused_head_equals_the_loss_on_full_logits_in_value_and_gradients():
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(10, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(17, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    ids, probs = _teacher(10, 17, 4, seed=4)
    plain = top_k_kl(hidden @ weight.t(), ids, probs)
    plain_grads = torch.autograd.grad(plain, (hidden, weight))
    fused = linear_top_k_kl(hidden, weight, ids, probs, chunk_rows=3)  # chunks of 3, 3, 3, 1 rows
    fused_grads = torch.autograd.grad(fused, (hidden, weight))
    assert torch.allclose(fused, plain, rtol=1e-12)
    for a, b in zip(fused_grads, plain_grads):
        assert torch.allclose(a, b, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(linear_top_k_kl(hidden, weight, ids, probs, chunk_rows=3), plain, rtol=1e-12)


def _entries(tokenizer, ids: list[int], texts: list[str]) -> list[dict]:
    """Log-probs as a teacher with the same tokenizer sends them: each token, and a top-2 of it and token 13."""
    return [
        {
            "token": texts[i],
            "logprob": math.log(0.7),
            "top_logprobs": [{"token": texts[i], "logprob": math.log(0.7)}, {"token": texts[13], "logprob": -2.0}],
        }
        for i in ids
    ]


def test_a_teachers_answer_in_the_students_tokens_becomes_its_top_k_targets(tokenizer):
    records = [(line, FORMATS["chat"].parse(chat(line))) for line in (1, 2)]
    examples = encode(records, tokenizer, max_length=256).examples
    texts, _ = vocabulary_texts(tokenizer)
    answer = [int(t) for t in examples[0].labels if t != IGNORE][:-1]  # the answer without its end-of-turn token
    wrong = [int(t) for t in examples[1].labels if t != IGNORE][:-1][::-1]  # tokens that are not the answer's
    soft, tally = soften_all(
        examples, {1: _entries(tokenizer, answer, texts), 2: _entries(tokenizer, wrong, texts)}, tokenizer
    )
    assert tally.as_dict() == {
        "answers": 2,
        "aligned": 1,
        "soft_positions": len(answer),
        "hard_positions": 1 + len(wrong) + 1,
    }
    first = soft[0]
    assert np.array_equal(first.top_ids[: len(answer)], np.array([[i, 13] for i in answer]))
    assert np.allclose(first.top_probs[: len(answer)], [[0.7, math.exp(-2.0)]] * len(answer))
    assert np.array_equal(first.top_probs[len(answer)], [1.0, 0.0])  # the end-of-turn token: itself
    assert np.array_equal(soft[1].top_probs[:, 0], np.ones(len(wrong) + 1))  # not lined up: plain labels
    batch = collate(soft, tokenizer.pad_token_id)
    assert batch.top_ids is not None and len(batch.top_ids) == batch.supervised


def test_a_distillation_batch_learns_the_kl_of_the_models_own_logits(tiny_lm64, tokenizer):
    records = [(line, FORMATS["chat"].parse(chat(line))) for line in (1, 2, 3)]
    examples = encode(records, tokenizer, max_length=256).examples
    texts, _ = vocabulary_texts(tokenizer)
    logprobs = {}
    for example in examples:  # a teacher whose top-2 is the answer's token and token 13
        answer = [int(t) for t in example.labels if t != IGNORE][:-1]
        logprobs[example.line] = _entries(tokenizer, answer, texts)
    soft, _ = soften_all(examples, logprobs, tokenizer)
    batch = collate(soft, tokenizer.pad_token_id, max_length=256)
    with torch.no_grad():
        fused, count = supervised_loss(tiny_lm64, batch)  # the fused head, chunk by chunk
        logits = tiny_lm64(input_ids=batch.input_ids).logits[:, :-1][batch.labels[:, 1:] >= 0]
    assert count == len(batch.top_ids)
    expected = top_k_kl(logits, batch.top_ids, batch.top_probs)
    assert abs(fused.item() - expected.item()) <= 1e-10 * expected.item()  # float64 throughout
