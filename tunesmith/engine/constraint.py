"""What the engine asks of a constrained answer: which tokens may come next, and the token chosen.

The engine knows nothing of grammars: an implementation (tunesmith/constrain) keeps its own state. The masks of a
step are computed in a thread of the engine's while the model's forward pass runs (each depends only on the tokens
chosen before), so a constrained row costs the batch the time of applying a mask, not of computing it.
"""

from __future__ import annotations

from typing import Protocol

import torch

WORD_BITS = 32


class Constraint(Protocol):
    """One answer's constraint."""

    def fill(self, words: torch.Tensor) -> None:
        """Write which tokens may come next into `words` (int32, bit t % 32 of word t // 32 set for token t)."""

    def advance(self, token: int) -> None:
        """Take the token chosen (raises when it breaks the constraint)."""


def mask_words(vocab: int) -> int:
    """int32 words that hold one bit per token."""
    return -(-vocab // WORD_BITS)


def apply_masks(logits: torch.Tensor, words: torch.Tensor, rows: list[int]) -> None:
    """Send the logits of tokens a row's mask forbids to -inf, for the constrained `rows` only."""
    bits = torch.arange(WORD_BITS, dtype=torch.int32)
    allowed = ((words[rows].unsqueeze(-1) >> bits) & 1).bool().flatten(1)[:, : logits.shape[-1]]
    index = torch.tensor(rows, device=logits.device)
    logits[index] = logits[index].masked_fill(~allowed.to(logits.device, non_blocking=True), float("-inf"))
