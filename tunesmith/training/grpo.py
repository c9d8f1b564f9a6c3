"""GRPO's arithmetic: advantages normalised within each group of answers to one prompt, the answer tokens'
log-probabilities of the policy and the reference, and the clipped, KL-penalised loss.

    ratio_t = exp(logp_t - old_t)
    loss    = sum over answer tokens of [ -min(ratio_t A, clip(ratio_t, 1 - eps, 1 + eps) A) + beta KL_t ] / tokens
    KL_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1       (the k3 estimator: unbiased, never negative)

averaged over every answer token of the step (each token counts once, so long answers are not diluted, as in DAPO),
with A the answer's advantage (its reward less its group's mean, over the group's standard deviation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.training.loss import causal_lm
from tunesmith.training.preference import token_log_probs

STD_FLOOR = 1e-4
"""Added to a group's standard deviation: a group whose answers all scored alike has advantages 0."""


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """[prompts, G] rewards -> advantages: (r - group mean) / (group std + STD_FLOOR), the std unbiased."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, correction=1)
    return (rewards - mean) / (std + STD_FLOOR)


def grpo_token_losses(
    logp: torch.Tensor,
    old: torch.Tensor,
    ref: torch.Tensor | None,
    advantages: torch.Tensor,
    epsilon: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss per token, KL per token, clipped or not per token) for answer tokens given flat: logp, old and ref
    [tokens] (ref None: no KL term), advantages [tokens] (each token its answer's)."""
    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    if ref is None or beta == 0:
        kl = torch.zeros_like(logp)
    else:
        delta = ref - logp
        kl = torch.exp(delta) - delta - 1.0
    was_clipped = (ratio * advantages) != surrogate
    return -surrogate + beta * kl, kl.detach(), was_clipped


@dataclass(frozen=True)
class Rows:
    """Prompts with their sampled answers, right-padded, and where the answer tokens are."""

    input_ids: torch.Tensor
    """[rows, length]."""
    attention: torch.Tensor
    """[rows, length] 1 for real tokens."""
    positions: torch.Tensor
    """Flat indexes into [rows * length] of the states that predict an answer token."""
    targets: torch.Tensor
    """The answer token each of those states predicts."""
    owner: torch.Tensor
    """The row each answer token belongs to."""


def answer_rows(prompts: list[list[int]], answers: list[list[int]], pad_id: int) -> Rows:
    """Rows of prompt + answer (the answer's stop token included when it stopped: it is learned too)."""
    length = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), length), dtype=torch.long)
    positions, targets, owner = [], [], []
    for row, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        sequence = prompt + answer
        ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
        for k in range(len(answer)):
            positions.append(row * length + len(prompt) + k - 1)
            targets.append(answer[k])
            owner.append(row)
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    return Rows(ids, attention, as_long(positions), as_long(targets), as_long(owner))


def answer_log_probs(model: torch.nn.Module, rows: Rows, temperature: float) -> torch.Tensor:
    """log p(answer token) of each answer token under the model at this temperature; [answer tokens]."""
    lm = causal_lm(model)
    weight = lm.get_output_embeddings().weight
    device = weight.device
    hidden = lm.get_decoder()(
        input_ids=rows.input_ids.to(device), attention_mask=rows.attention.to(device), use_cache=False
    ).last_hidden_state
    states = hidden.reshape(-1, hidden.shape[-1])[rows.positions.to(device)]
    return token_log_probs(states / temperature, weight, rows.targets.to(device))
