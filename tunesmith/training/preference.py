"""Preference losses on sequence log-probs: DPO (sigmoid, against a reference) and SimPO (reference-free).

A sequence's log-prob is the sum over its answer tokens of log p(token); the output head runs only at those
positions and, when it is frozen (LoRA, DoRA), its [tokens x vocab] logits are made chunk by chunk and dropped in
the forward pass, as in `fused_ce`: the gradient with respect to each row is known then up to the row's own weight,
which backward supplies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.tokenize.pairs import PairBatch
from tunesmith.training import distributed
from tunesmith.training.fused_ce import CHUNK_ROWS
from tunesmith.training.loss import causal_lm


class _TokenLogProbs(torch.autograd.Function):
    """log p(target) per row through a frozen head; d/d hidden saved per row in forward, scaled in backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        compute: torch.dtype,
    ) -> torch.Tensor:
        h, w = hidden.to(compute), weight.to(compute)
        wide = torch.promote_types(compute, torch.float32)
        out = torch.empty(h.shape[0], dtype=wide, device=h.device)
        grad_hidden = torch.empty_like(h)
        for start in range(0, h.shape[0], CHUNK_ROWS):
            goal = targets[start : start + CHUNK_ROWS]
            logits = (h[start : start + CHUNK_ROWS] @ w.t()).to(wide)
            log_probs = logits.log_softmax(dim=-1)
            out[start : start + CHUNK_ROWS] = log_probs.gather(1, goal[:, None]).squeeze(1)
            grad = -log_probs.exp_()  # d log p(goal) / d logits = onehot - softmax
            grad[torch.arange(goal.shape[0], device=goal.device), goal] += 1.0
            grad_hidden[start : start + CHUNK_ROWS] = grad.to(compute) @ w
        ctx.save_for_backward(grad_hidden)
        ctx.hidden_dtype = hidden.dtype
        return out

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        (grad_hidden,) = ctx.saved_tensors  # type: ignore[attr-defined]
        scaled = grad_hidden.to(grad_output.dtype) * grad_output[:, None]
        return scaled.to(ctx.hidden_dtype), None, None, None  # type: ignore[attr-defined]


def token_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(hidden @ weight.T)[row, target] for each row, in fp32 or wider; [rows].

    A frozen head (the adapter methods) goes through the fused function; a trained head (full fine-tuning), or no
    gradient at all, makes the logits chunk by chunk (under ordinary autograd for the trained head)."""
    device = hidden.device.type
    compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    with torch.autocast(device, enabled=False):
        if not weight.requires_grad and torch.is_grad_enabled() and hidden.requires_grad:
            return _TokenLogProbs.apply(hidden, weight, targets, compute)  # type: ignore[no-any-return]
        wide = torch.promote_types(compute, torch.float32)
        pieces = []
        for start in range(0, hidden.shape[0], CHUNK_ROWS):
            logits = (hidden[start : start + CHUNK_ROWS].to(compute) @ weight.to(compute).t()).to(wide)
            goal = targets[start : start + CHUNK_ROWS]
            pieces.append(logits.log_softmax(dim=-1).gather(1, goal[:, None]).squeeze(1))
        return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=wide)


def _attention_mask(lm: torch.nn.Module, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The pair rows' mask as the model's attention takes a prepared 4D mask: boolean for sdpa, additive else."""
    if getattr(lm.config, "_attn_implementation", "sdpa") == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def sequence_log_probs(model: torch.nn.Module, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p over each side's labelled tokens, how many there are), chosen and rejected of row i at 2i and
    2i + 1; [2 * rows] each. The head runs only at the states that predict an answer token."""
    lm = causal_lm(model)
    weight = lm.get_output_embeddings().weight
    device = weight.device
    compute = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else weight.dtype
    hidden = distributed.decoder(lm)(
        input_ids=batch.input_ids.to(device),
        position_ids=batch.position_ids.to(device),
        attention_mask=_attention_mask(lm, batch.allowed.to(device), compute),
        use_cache=False,
    ).last_hidden_state
    rows = hidden.reshape(-1, hidden.shape[-1])[batch.sources.to(device)]
    weight = lm.get_output_embeddings().weight  # again: under FSDP2 the forward put the gathered weight in place
    per_token = token_log_probs(rows, weight, batch.targets.to(device))
    sides = batch.sides.to(device)
    sums = torch.zeros(2 * batch.rows, dtype=per_token.dtype, device=device).index_add(0, sides, per_token)
    return sums, torch.bincount(sides, minlength=2 * batch.rows)


def dpo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pair loss, per-pair reward margin) of DPO's sigmoid loss: -log sigmoid(beta x (policy - reference)
    log-ratio of chosen over rejected). The margin is beta x that difference."""
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return -F.logsigmoid(margin), margin


def simpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pair loss, per-pair reward margin) of SimPO: -log sigmoid(beta x (mean log p of chosen - of rejected)
    - gamma), without a reference model; the length-normalised reward keeps long answers from winning by length."""
    margin = beta * (chosen / chosen_tokens - rejected / rejected_tokens)
    return -F.logsigmoid(margin - gamma), margin
