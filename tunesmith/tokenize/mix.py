"""A mix of data sources: how many examples each source puts into every epoch, and which ones, from the seed alone.

The training examples of all sources sit in one list (the pool), source after source. An epoch draws from each
source its share of the pool's size: a source given less than its size is walked through across epochs (epoch 2
takes the examples epoch 1 did not), one given more repeats whole passes first. Every pass is a permutation drawn
from (seed, source, pass), so a resumed run finds the same examples with no sampler state to save.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def shares(sizes: Sequence[int], weights: Sequence[float] | None) -> tuple[int, ...]:
    """Examples per epoch of each source: its size (no weights), or its weight's share of the total size, rounded by
    largest remainder so that the shares add up to the total, and at least one each."""
    if weights is None:
        return tuple(int(n) for n in sizes)
    total = int(sum(sizes))
    exact = np.asarray(weights, dtype=np.float64) / float(sum(weights)) * total
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return tuple(max(1, int(c)) for c in counts)


@dataclass(frozen=True)
class Mix:
    """Where each source's examples sit in the pool, and how many of them each epoch draws."""

    sizes: tuple[int, ...]
    """Training examples of each source, in pool order."""
    per_epoch: tuple[int, ...]
    """Examples each source puts into every epoch."""

    @property
    def starts(self) -> tuple[int, ...]:
        """The pool index of each source's first example."""
        return tuple(int(x) for x in np.cumsum((0, *self.sizes[:-1])))

    @property
    def whole(self) -> bool:
        """Each epoch is every example once: the pool itself, as for a single source."""
        return self.per_epoch == self.sizes

    def epoch(self, seed: int, epoch: int) -> np.ndarray:
        """Pool indices of the examples of `epoch` (with repeats when a source is drawn more than its size)."""
        if self.whole:
            return np.arange(sum(self.sizes), dtype=np.int64)
        parts = [
            start + _stream(size, take, seed, source, epoch)
            for source, (start, size, take) in enumerate(zip(self.starts, self.sizes, self.per_epoch, strict=True))
            if size
        ]
        return np.concatenate(parts)


def _stream(size: int, take: int, seed: int, source: int, epoch: int) -> np.ndarray:
    """Items [epoch x take, (epoch + 1) x take) of the endless sequence of permutations of range(size)."""
    begin, end = epoch * take, (epoch + 1) * take
    passes = range(begin // size, (end - 1) // size + 1)
    walk = np.concatenate([np.random.default_rng([seed, 11, source, p]).permutation(size) for p in passes])
    offset = begin - passes[0] * size
    return walk[offset : offset + take]
