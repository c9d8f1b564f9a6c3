"""The student served the way a user would serve it: `tunesmith serve` in a process of its own on this machine.

The report asks it through the same client as the teacher, so both latencies are measured the same way: from
sending a request to having its whole answer, HTTP included.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import ModelError
from tunesmith.runs import base_model_of, is_adapter, result_folder
from tunesmith.serve.loaded import run_model_id, short_id

START_TIMEOUT = 600.0
"""Seconds a server may take to load its model (a large model from a slow disk)."""


@dataclass(frozen=True)
class Server:
    """One `tunesmith serve` to start, and which of the students it answers for."""

    model: str
    """--model: the base, or a full run's weights."""
    adapters: tuple[str, ...]
    """--adapter run folders."""
    ids: dict[str, str]
    """role (tuned, base) -> the model id to ask for."""


def servers_for(run: str) -> list[Server]:
    """The tuned student first, then the base: one server for an adapter run (the base is the adapter turned
    off), two in turn for a full run."""
    final = result_folder(run)
    if final is None:
        raise ModelError(f"{run}: not a run folder", hint="pass a folder that tunesmith train wrote")
    base = base_model_of(final)
    if is_adapter(final):
        ids = {"tuned": run_model_id(short_id(base), final), "base": short_id(base)}
        return [Server(base, (run,), ids)]
    return [Server(str(final), (), {"tuned": short_id(str(final))}), Server(base, (), {"base": short_id(base)})]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the server lists its models; its own error (the last log line) when it stops first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
            raise ModelError(f"the student's server stopped: {lines[-1]}", hint=f"see {log}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"{url}/models", timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise ModelError(f"the student's server did not start in {START_TIMEOUT:.0f} s", hint=f"see {log}")


@contextlib.contextmanager
def serving(server: Server, dtype: str, max_batch: int, log: Path) -> Iterator[str]:
    """Run the server for the duration of the block; yields its OpenAI base URL."""
    port = _free_port()
    command = [sys.executable, "-m", "tunesmith", "serve", "--model", server.model, "--port", str(port)]
    command += [arg for run in server.adapters for arg in ("--adapter", run)]
    command += ["--dtype", dtype, "--max-batch", str(max_batch), "--no-worker"]
    with open(log, "ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
