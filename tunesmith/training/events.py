"""What a run reports as it goes, and who listens: the CLI's progress bar, metrics.jsonl, the jobs database."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tunesmith import paths
from tunesmith.runs import read_json_lines

EventKind = Literal["start", "step", "eval", "checkpoint", "end"]


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run."""

    kind: EventKind
    """start, step, eval, checkpoint or end."""
    step: int
    """Optimizer steps completed when it happened."""
    values: dict[str, float | int | str | None] = field(default_factory=dict)
    """step: loss, lr, grad_norm, epoch, tokens, tokens_per_second; eval: eval_loss; start: total_steps, ..."""

    def as_dict(self) -> dict[str, object]:
        return {"event": self.kind, "step": self.step, **self.values}


class EventSink(Protocol):
    """Anything that wants to hear about a run."""

    def emit(self, event: Event) -> None: ...


class StopFlag:
    """Set from a signal handler or another thread; the loop saves a checkpoint and stops after the step."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def request(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


class MetricsFile:
    """metrics.jsonl: one line per step, per evaluation and at the end (which step final/ holds), flushed as it is
    written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def emit(self, event: Event) -> None:
        if event.kind not in ("step", "eval", "end"):
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event.as_dict()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every complete line logged so far (a line cut short by a crash is left out)."""
        return read_json_lines(self.path)

    def truncate_after(self, step: int) -> None:
        """On resume: forget what was logged after the checkpoint, since those steps run again."""
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if _logged_step(line) <= step]
        paths.write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))


def _logged_step(line: str) -> float:
    """The step of a metrics line; a line cut short by a crash counts as after every checkpoint."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


class Broadcast:
    """Send every event to several sinks."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)
