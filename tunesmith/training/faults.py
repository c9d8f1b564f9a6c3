"""A test hook that kills the process at a named moment of a run, to show that a kill at any moment loses nothing.

Set TUNESMITH_KILL_AT=POINT:STEP[:FILE] (read once at import): the process sends itself SIGKILL when it reaches
that point (with TUNESMITH_KILL_RANK=R, only rank R of a run on several processes does). Points: `step` (after
the optimizer step, before it is logged), `logged` (after its metrics line),
`checkpoint` (inside the checkpoint write, after FILE is written), `renamed` (the checkpoint in place, older
ones not yet removed), `final` (final/ written, not yet renamed into place). Unset, each check is one comparison.
"""

from __future__ import annotations

import os
import signal

KILL_AT = os.environ.get("TUNESMITH_KILL_AT", "")
"""The moment to die at, or empty."""
KILL_RANK = os.environ.get("TUNESMITH_KILL_RANK", "")
"""The rank that dies, or empty for every one."""
POINTS = ("step", "logged", "checkpoint", "renamed", "final")
"""Where a kill can be asked for."""


def reached(point: str, step: int, detail: str = "") -> None:
    """Die here if TUNESMITH_KILL_AT names this moment."""
    if KILL_AT and (f"{point}:{step}:{detail}" if detail else f"{point}:{step}") == KILL_AT:
        if KILL_RANK and os.environ.get("RANK", "0") != KILL_RANK:
            return
        os.kill(os.getpid(), signal.SIGKILL)
