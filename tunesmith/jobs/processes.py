"""A job trained on several processes: `tunesmith train --processes N --log-json` started by the worker, its
events read back from its output into the job's sink, a cancel or pause sent to it as SIGTERM (every rank saves
the same step's checkpoint and stops)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

from tunesmith import paths
from tunesmith.errors import TrainingError
from tunesmith.runs import RunFolder
from tunesmith.training.checkpoint import TrainState
from tunesmith.training.events import Event, EventSink, StopFlag
from tunesmith.training.runner import TrainResult

WATCH_SECONDS = 0.2
"""How often a stop asked of the job (cancel, pause, the worker's own stop) is looked for."""


def train_on_processes(
    settings: dict[str, Any], run: RunFolder, processes: int, sink: EventSink, stop: StopFlag
) -> TrainResult:
    """Train (or resume, when the run folder has its config) the job's run on `processes` ranks."""
    with tempfile.TemporaryDirectory(dir=paths.home()) as folder:
        if run.config.is_file():
            args = ["--resume", str(run.root)]
        else:
            config = Path(folder) / "settings.yaml"
            config.write_text(yaml.safe_dump(settings), encoding="utf-8")
            args = ["--config", str(config), "--out", str(run.root)]
        command = [sys.executable, "-m", "tunesmith", "train", *args, "--processes", str(processes)]
        process = subprocess.Popen(
            [*command, "--log-json", "--no-eval"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        errors: list[str] = []
        readers = [
            threading.Thread(target=_collect, args=(process.stderr, errors), daemon=True),
            threading.Thread(target=_forward_stop, args=(process, stop), daemon=True),
        ]
        for thread in readers:
            thread.start()
        result = _read_events(process, run, sink, stop)
        readers[0].join()
    if result is None:
        message = next((line for line in reversed(errors) if line.startswith("error:")), "")
        raise TrainingError(
            message.removeprefix("error:").strip()
            or f"training on {processes} processes exited with code {process.returncode}"
        )
    return result


def _read_events(process: subprocess.Popen[str], run: RunFolder, sink: EventSink, stop: StopFlag) -> TrainResult | None:
    """Every event line into the sink; the result from the last ones (None when the run failed)."""
    state, end = TrainState(), None
    assert process.stdout is not None
    for line in process.stdout:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        event = Event(row.pop("event"), int(row.pop("step")), row)
        sink.emit(event)
        if event.kind == "step":
            state.step, state.tokens = event.step, int(event.values.get("tokens") or 0)
        elif event.kind == "end":
            end = event
    process.wait()
    if end is None:
        return None
    values = end.values
    final = Path(str(values["final"])) if values.get("final") else None
    reason = stop.reason if final is None and stop else str(values.get("reason"))
    kept = values.get("kept_step")
    return TrainResult(run.root, reason, final, state, int(kept) if kept is not None else None)


def _collect(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


def _forward_stop(process: subprocess.Popen[str], stop: StopFlag) -> None:
    """A stop asked of the job reaches the launcher as SIGTERM, and from it every rank."""
    while process.poll() is None:
        if stop:
            process.send_signal(signal.SIGTERM)
            return
        try:
            process.wait(WATCH_SECONDS)
        except subprocess.TimeoutExpired:
            continue
