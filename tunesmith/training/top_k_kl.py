"""Distillation's loss: KL from a teacher's top-k next-token distribution, the rest of its mass as one bucket.

A teacher behind an API returns, per answer token, its k likeliest tokens and their log-probs; the mass it put
on every other token is r = 1 - sum(p). Over the k + 1 outcomes (each top token, and "any other token") the loss
per position is

    KL = sum_j p_j log(p_j / q_j) + r log(r / q_rest),    q = softmax(student logits), q_rest = 1 - sum_j q_j,

which is 0 when the student matches the teacher on those outcomes, and plain cross-entropy when a position's
target is one token with p = 1 (its top-k then holds that token alone, r = 0). Its gradient with respect to the
logits is softmax(z) - p on the top tokens and softmax(z) - r softmax_rest(z) elsewhere, so the fused head can
apply it chunk by chunk, as it does for cross-entropy.

Targets are two [rows, K] tensors: token ids, and their teacher probabilities. A row with fewer than K top tokens
repeats one of its ids with probability 0 (repeats are harmless: the top set is a set).
"""

from __future__ import annotations

import torch

from tunesmith.training.fused_ce import CHUNK_ROWS, chunked_head_loss, fused_head_loss


def _terms(wide: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(loss per row, log-sum-exp, log-sum-exp over the rest, the top set as a mask, rest mass) of wide logits."""
    p = probs.to(wide.dtype)
    rest = (1.0 - p.sum(dim=1)).clamp_min(0.0)
    top = torch.zeros(wide.shape, dtype=torch.bool, device=wide.device).scatter_(1, ids, True)
    lse = torch.logsumexp(wide, dim=1)
    lse_rest = torch.logsumexp(wide.masked_fill(top, float("-inf")), dim=1)
    entropy = torch.xlogy(p, p).sum(dim=1) + torch.xlogy(rest, rest)
    cross = (p * (wide.gather(1, ids) - lse[:, None])).sum(dim=1)
    cross = cross + torch.where(rest > 0, rest * (lse_rest - lse), torch.zeros_like(rest))
    return entropy - cross, lse, lse_rest, top, rest


def top_k_kl(logits: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Summed KL over rows (differentiable by autograd); the softmax in fp32 or wider.

    logits: [rows, vocab]; ids: [rows, K] int64; probs: [rows, K], summing to at most 1 per row.
    """
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return _terms(wide, ids, probs)[0].sum()


def top_k_kl_kernel(logits: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed KL, d KL / d logits) of one chunk, for the fused head; the gradient in the logits' dtype."""
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    loss, lse, lse_rest, top, rest = _terms(wide, ids, probs)
    grad = (wide - lse[:, None]).exp_()
    grad.scatter_add_(1, ids, -probs.to(wide.dtype))
    other = (wide - lse_rest[:, None]).exp_().masked_fill_(top, 0.0)  # the rest's softmax; finite: K < vocab
    grad -= other.mul_(rest[:, None])
    return loss.sum(), grad.to(logits.dtype)


def linear_top_k_kl(
    hidden: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """Summed top-k KL of hidden @ weight.T against the teacher's (ids, probs), chunk by chunk."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return fused_head_loss(hidden, weight, (ids, probs), top_k_kl_kernel, chunk_rows)
    return chunked_head_loss(hidden, weight, (ids, probs), top_k_kl, chunk_rows)
