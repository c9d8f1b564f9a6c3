"""Duplicates found by 64-bit digests of the parsed records: 16 bytes a line, however large the records are."""

from __future__ import annotations

import hashlib
from array import array

import numpy as np

from tunesmith.data.schema import Record


def digest(record: Record) -> bytes:
    """8 bytes that stand for the record: equal records give equal digests; two different records collide with
    probability 2^-64 per pair (about 1e-7 over a million lines)."""
    return hashlib.blake2b(repr(record).encode(), digest_size=8).digest()


class Digests:
    """The digest and the line of every record read, in reading order."""

    def __init__(self) -> None:
        self._keys = bytearray()
        self._lines = array("q")

    def add(self, line: int, record: Record) -> None:
        self._keys += digest(record)
        self._lines.append(line)

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def keys(self) -> np.ndarray:
        """uint64 digests, one per record."""
        return np.frombuffer(bytes(self._keys), dtype="<u8")

    @property
    def lines(self) -> np.ndarray:
        """The line of each record."""
        return np.frombuffer(self._lines, dtype=np.int64) if self._lines else np.zeros(0, dtype=np.int64)

    def repeats(self) -> list[tuple[int, int]]:
        """(line, line of its first occurrence) for every record seen before, in reading order."""
        return [(int(self.lines[i]), int(self.lines[j])) for i, j in repeats(self.keys)]

    def also_in(self, earlier: Digests) -> list[tuple[int, int]]:
        """(line here, line in `earlier`) for every record here that `earlier` holds too, in reading order."""
        n = len(earlier)
        pairs = repeats(np.concatenate([earlier.keys, self.keys]))
        return [(int(self.lines[i - n]), int(earlier.lines[j])) for i, j in pairs if i >= n and j < n]


def repeats(keys: np.ndarray) -> list[tuple[int, int]]:
    """(i, j) with keys[i] == keys[j], j the first index holding that key and i > j; sorted by i."""
    if len(keys) < 2:
        return []
    order = np.argsort(keys, kind="stable")  # equal keys keep their reading order: the first comes first
    ordered = keys[order]
    starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    first = order[np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))]
    later = np.flatnonzero(~starts)
    pairs = sorted(zip(order[later].tolist(), first[later].tolist()))
    return pairs
