"""Returning freed heap memory to the system between optimizer steps (glibc only; a no-op elsewhere)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

TRIM_SLACK = 0.4 * 1024**3
"""Bytes the resident set may grow past one step's working set before the heap is trimmed."""
WORKING_SET_STEPS = 2
"""Steps at the start of a run whose resident size measures the working set."""


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def resident_bytes() -> int:
    """This process's resident set size now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class HeapTrimmer:
    """Calls glibc's malloc_trim when the resident set has grown TRIM_SLACK past the run's working set.

    Batches differ from step to step, so glibc's heap fragments: it keeps what was freed and grows by a few hundred
    MB every few steps, without bound (from 2.0 to 3.4 GB over the benchmark run). A trim hands everything free
    back, and the steps after it pay by faulting their working set in again (about 0.4 s a step on 2 CPU cores:
    trimming after every step cost 12% of the speed). The working set is the largest resident size at the end of
    the first WORKING_SET_STEPS steps; only growth past it is trimmed.
    """

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._steps = 0
        self._working_set = 0

    def after_step(self) -> None:
        if self._trim is None:
            return
        resident = resident_bytes()
        self._steps += 1
        if self._steps <= WORKING_SET_STEPS:
            self._working_set = max(self._working_set, resident)
        elif resident > self._working_set + TRIM_SLACK:
            self._trim(0)
