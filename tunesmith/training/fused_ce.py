"""Output head and cross-entropy fused, in chunks: the [tokens x vocab] logits never exist all at once.

The loss is a sum, so its gradient is known during the forward pass: for each chunk of rows the logits are made,
turned into (softmax - one-hot), multiplied back through the head, and dropped. Only the gradient with respect to
the hidden states (rows x hidden) is kept for backward, and the head's own gradient when it is trained. This is
the idea of Liger's fused linear cross-entropy, in plain PyTorch. Compiled, the softmax step is one pass over the
logits instead of a dozen, which is most of the head's time on a CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

CHUNK_ROWS = 512

Kernel = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""(logits of a chunk of rows, that chunk's targets...) -> (summed loss, d loss / d logits in the logits' dtype)."""


def _summed_loss(wide: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-sum-exp per row, summed loss) of fp32-or-wider logits."""
    lse = torch.logsumexp(wide, dim=-1)
    return lse, (lse - wide.gather(1, goal[:, None]).squeeze(1)).sum()


def softmax_minus_onehot(logits: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, d loss / d logits) of one chunk: softmax in fp32 or wider, the gradient in the logits' dtype."""
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    lse, loss = _summed_loss(wide, goal)
    grad = (wide - lse[:, None]).exp_()
    grad[torch.arange(goal.shape[0], device=goal.device), goal] -= 1.0
    return loss, grad.to(logits.dtype)


def count_hits(correct: torch.Tensor | None, logits: torch.Tensor, goal: torch.Tensor) -> None:
    """Add to `correct` the rows whose highest logit is their target (token accuracy); nothing when None."""
    if correct is not None:
        correct += (logits.argmax(-1) == goal).sum()


@functools.cache
def compiled_kernel() -> Kernel:
    """softmax_minus_onehot compiled once per process, for any number of rows."""
    return torch.compile(softmax_minus_onehot, dynamic=True)  # type: ignore[return-value]


class _FusedHead(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: tuple[torch.Tensor, ...],
        compute: torch.dtype,
        chunk_rows: int,
        kernel: Kernel,
        correct: torch.Tensor | None,
    ) -> torch.Tensor:
        h, w = hidden.to(compute), weight.to(compute)
        grad_hidden = torch.empty_like(h)
        wide = torch.promote_types(compute, torch.float32)
        grad_weight = torch.zeros(weight.shape, dtype=wide, device=weight.device) if weight.requires_grad else None
        total = torch.zeros((), dtype=wide, device=hidden.device)
        for start in range(0, h.shape[0], chunk_rows):
            rows = h[start : start + chunk_rows]
            logits = rows @ w.t()
            count_hits(correct, logits, targets[0][start : start + chunk_rows])  # one more read of these logits
            loss, grad_logits = kernel(logits, *(t[start : start + chunk_rows] for t in targets))
            total += loss
            grad_hidden[start : start + chunk_rows] = grad_logits @ w
            if grad_weight is not None:
                grad_weight += grad_logits.t() @ rows
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
        return d_hidden, d_weight, None, None, None, None, None


def compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmuls run in: autocast's when it is on, else the weight's."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


def fused_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: tuple[torch.Tensor, ...],
    kernel: Kernel,
    chunk_rows: int = CHUNK_ROWS,
    correct: torch.Tensor | None = None,
) -> torch.Tensor:
    """A summed loss of hidden @ weight.T whose gradient `kernel` gives chunk by chunk, during the forward pass.

    targets: tensors with one row per row of hidden, sliced with it. Call it with gradients wanted (hidden or
    weight requiring them); the [rows x vocab] logits never exist beyond one chunk. `correct`, when given, is
    increased by the rows whose highest logit is targets[0] (token accuracy).
    """
    compute = compute_dtype(hidden, weight)
    with torch.autocast(hidden.device.type, enabled=False):
        return _FusedHead.apply(hidden, weight, targets, compute, chunk_rows, kernel, correct)  # type: ignore[no-any-return]


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_rows: int = CHUNK_ROWS,
    compiled: bool = False,
    correct: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over rows of cross_entropy(hidden @ weight.T, targets), the softmax in fp32, chunk by chunk.

    hidden: [rows, hidden]; weight: [vocab, hidden] (the output head, trained or not); targets: [rows].
    The matmuls run in the autocast dtype when autocast is on, else in the weight's dtype (so a trained head's
    gradient is summed per chunk in that dtype, as autocast does for any linear layer). `compiled` runs the
    softmax step through torch.compile (it needs a C++ compiler on CPU). `correct`, when given, is increased by
    the rows whose highest logit is their target.
    """
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        kernel = compiled_kernel() if compiled else softmax_minus_onehot
        return fused_head_loss(hidden, weight, (targets,), kernel, chunk_rows, correct)
    return chunked_head_loss(hidden, weight, (targets,), cross_entropy_sum, chunk_rows, correct)


def cross_entropy_sum(logits: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of a chunk of logits, the softmax in fp32 or wider."""
    return _summed_loss(logits.to(torch.promote_types(logits.dtype, torch.float32)), goal)[1]


def chunked_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: tuple[torch.Tensor, ...],
    loss: Callable[..., torch.Tensor],
    chunk_rows: int = CHUNK_ROWS,
    correct: torch.Tensor | None = None,
) -> torch.Tensor:
    """Without gradients: the sum of loss(hidden @ weight.T, targets...) over chunks of rows, in the dtype the
    fused path computes in; the logits of one chunk at a time. `correct` counts hits of targets[0] as
    fused_head_loss does."""
    compute = compute_dtype(hidden, weight)
    with torch.autocast(hidden.device.type, enabled=False):
        h, w = hidden.to(compute), weight.to(compute)
        losses = []
        for i in range(0, len(h), chunk_rows):
            logits = h[i : i + chunk_rows] @ w.t()
            count_hits(correct, logits, targets[0][i : i + chunk_rows])
            losses.append(loss(logits, *(t[i : i + chunk_rows] for t in targets)))
        return torch.stack(losses).sum() if losses else torch.zeros((), device=hidden.device)
