"""Token-budget batches: examples of similar length together, a fresh mix each epoch, a pure function of the seed.

Because every epoch's batches follow from (seed, epoch) alone, a resumed run finds its place from the step
number, with no sampler state to save.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tunesmith.tokenize.encode import Example
from tunesmith.tokenize.teacher import SoftExample

BUCKET = 256
"""Examples shuffled together before being sorted by length: larger buckets pad less, mix less."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Right-padded rows: padding comes after every real token, so causal attention never sees it."""

    input_ids: torch.Tensor
    """[rows, length] int64."""
    labels: torch.Tensor
    """[rows, length] int64: the token where it is learned, IGNORE where not, PAD_MARK on padding."""
    top_ids: torch.Tensor | None = None
    """Distillation: [learned positions, K] int64 target tokens, in row-major order of the learned positions
    (labels[:, 1:] >= 0); None when each position learns its label alone."""
    top_probs: torch.Tensor | None = None
    """Distillation: [learned positions, K] float32 target probabilities, beside top_ids."""

    @property
    def supervised(self) -> int:
        """Tokens learned, counting the shift: label t is predicted at position t-1."""
        return int((self.labels[:, 1:] >= 0).sum())

    @property
    def real_tokens(self) -> int:
        """Rows' tokens without padding."""
        return int(self.lengths.sum())

    @property
    def lengths(self) -> torch.Tensor:
        return (self.labels != PAD_MARK).sum(dim=1)


PAD_MARK = -101
"""Label of a padding position inside a Batch (ignored by the loss like IGNORE, but countable)."""


def _pack_sorted(indices: np.ndarray, lengths: np.ndarray, budget: int) -> list[list[int]]:
    """Greedy batches over indices sorted by length: padded size (rows x longest) stays within the budget."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in indices.tolist():
        grown = max(longest, int(lengths[i]))
        if current and grown * (len(current) + 1) > budget:
            batches.append(current)
            current, grown = [], int(lengths[i])
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches


def epoch_batches(lengths: np.ndarray, budget: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices of each micro-batch of one epoch, in training order."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches: list[list[int]] = []
    for start in range(0, len(order), BUCKET):
        bucket = order[start : start + BUCKET]
        batches += _pack_sorted(bucket[np.argsort(lengths[bucket], kind="stable")], lengths, budget)
    return [batches[i] for i in rng.permutation(len(batches))]


def ordered_batches(lengths: np.ndarray, budget: int) -> list[list[int]]:
    """Batches for evaluation: sorted by length for the least padding; no shuffling."""
    return _pack_sorted(np.argsort(lengths, kind="stable"), lengths, budget)


WIDTH_STEP = 64
"""The largest step training widths are rounded up to (padded_width): fewer distinct shapes let the CPU kernels
(oneDNN) reuse their prepared primitives and keep the heap from fragmenting, for a little padding."""


def padded_width(width: int) -> int:
    """`width` rounded up to a multiple of a step that grows with it: 8 below 128 tokens, 16 below 256, 32 below 512,
    then WIDTH_STEP. Beyond 64 tokens the rounding adds less than 1/8, and a width of up to 2,048 takes one of 56
    shapes (a fixed step of 64 doubled short rows: fortunes' median of 30 tokens became 64)."""
    step = min(WIDTH_STEP, max(8, 1 << max(0, width.bit_length() - 4)))
    return -(-width // step) * step


def collate(examples: Sequence[Example], pad_id: int, max_length: int | None = None) -> Batch:
    """Stack examples into right-padded tensors.

    With `max_length`, the width is rounded up by `padded_width`, never beyond max_length.
    """
    width = max(len(e.input_ids) for e in examples)
    if max_length is not None:
        width = min(padded_width(width), max(width, max_length))
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), PAD_MARK, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.from_numpy(example.input_ids.astype(np.int64))
        labels[row, :n] = torch.from_numpy(example.labels.astype(np.int64))
    if not all(isinstance(e, SoftExample) for e in examples):
        return Batch(ids, labels)
    top_ids = torch.from_numpy(np.concatenate([e.top_ids for e in examples]))  # type: ignore[attr-defined]
    top_probs = torch.from_numpy(np.concatenate([e.top_probs for e in examples]))  # type: ignore[attr-defined]
    return Batch(ids, labels, top_ids, top_probs)
