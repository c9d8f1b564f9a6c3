"""Output head and cross-entropy fused, in chunks: the [tokens x vocab] logits never exist all at once.

The loss is a sum, so its gradient is known during the forward pass: for each chunk of rows the logits are made,
turned into (softmax - one-hot), multiplied back through the head, and dropped. Only the gradient with respect to
the hidden states (rows x hidden) is kept for backward, and the head's own gradient when it is trained. This is
the idea of Liger's fused linear cross-entropy, in plain PyTorch.
"""

from __future__ import annotations

import torch

CHUNK_ROWS = 512


def _chunk_loss(
    rows: torch.Tensor, w: torch.Tensor, goal: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fp32 logits, log-sum-exp per row, summed loss) of one chunk."""
    logits = rows @ w.t()
    logits = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, goal[:, None]).squeeze(1)
    return logits, lse, (lse - picked).sum()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        compute: torch.dtype,
        chunk_rows: int,
    ) -> torch.Tensor:
        h, w = hidden.to(compute), weight.to(compute)
        grad_hidden = torch.empty_like(h)
        wide = torch.promote_types(compute, torch.float32)
        grad_weight = torch.zeros(weight.shape, dtype=wide, device=weight.device) if weight.requires_grad else None
        total = torch.zeros((), dtype=wide, device=hidden.device)
        for start in range(0, h.shape[0], chunk_rows):
            rows, goal = h[start : start + chunk_rows], targets[start : start + chunk_rows]
            logits, lse, loss = _chunk_loss(rows, w, goal)
            total += loss
            grad_logits = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            grad_logits[torch.arange(goal.shape[0], device=goal.device), goal] -= 1.0
            grad_hidden[start : start + chunk_rows] = grad_logits.to(compute) @ w
            if grad_weight is not None:
                grad_weight += grad_logits.t() @ rows.to(wide)
        ctx.save_for_backward(grad_hidden, grad_weight if grad_weight is not None else torch.empty(0))
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        return total

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors  # type: ignore[attr-defined]
        scale = grad_output.to(torch.promote_types(grad_output.dtype, torch.float32))
        d_hidden = (grad_hidden.to(scale.dtype) * scale).to(ctx.hidden_dtype)  # type: ignore[attr-defined]
        d_weight = (grad_weight * scale).to(ctx.weight_dtype) if grad_weight.numel() else None  # type: ignore[attr-defined]
        return d_hidden, d_weight, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """Sum over rows of cross_entropy(hidden @ weight.T, targets), the softmax in fp32, chunk by chunk.

    hidden: [rows, hidden]; weight: [vocab, hidden] (the output head, trained or not); targets: [rows].
    The matmuls run in the autocast dtype when autocast is on, else in the weight's dtype.
    """
    device = hidden.device.type
    compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    with torch.autocast(device, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return _LinearCrossEntropy.apply(hidden, weight, targets, compute, chunk_rows)  # type: ignore[no-any-return]
        h, w = hidden.to(compute), weight.to(compute)
        losses = [
            _chunk_loss(h[i : i + chunk_rows], w, targets[i : i + chunk_rows])[2] for i in range(0, len(h), chunk_rows)
        ]
        return torch.stack(losses).sum() if losses else torch.zeros((), device=hidden.device)
