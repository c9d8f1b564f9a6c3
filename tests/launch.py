"""`python -m tunesmith ...` for the tests, without its 7 s of imports each time.

A CLI process spends about 7 s importing torch, transformers and peft before it does anything, and the suite starts
dozens. Here each is forked from a server process that imported them once (multiprocessing's forkserver): still a
process of its own, with its own environment, stdout and stderr, that a test can kill -9 or SIGTERM, running
tunesmith's `__main__` as `python -m tunesmith` does. Processes tunesmith itself starts (the server's jobs worker, a
student's server) stay ordinary `python -m tunesmith` processes, which keeps that entry point tested too.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PRELOAD = ["torch", "transformers", "peft", "safetensors", "typer", "rich"]
"""What the fork server imports once (tunesmith itself is imported in each process, as the command line would)."""


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


def _main(args: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    """In the forked process: `python -m tunesmith *args` in this folder, environment and output files."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(file, fd)
        os.close(file)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["tunesmith", *args]
    runpy.run_module("tunesmith", run_name="__main__", alter_sys=True)


@dataclass
class Launched:
    """A running `tunesmith` process, as much of `subprocess.Popen` as the tests use."""

    process: multiprocessing.process.BaseProcess
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.process.pid  # type: ignore[return-value]

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(["tunesmith"], timeout or 0)
        return self.process.exitcode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def output(self, timeout: float | None = None) -> tuple[str, str]:
        """(stdout, stderr) once the process has ended."""
        self.wait(timeout)
        return _text(self.out), _text(self.err)


@functools.cache
def _outputs() -> tempfile.TemporaryDirectory[str]:
    """The folder of the processes' stdout and stderr files: made at the first start (not in the forked processes,
    which import this module too), removed when the process that made it ends."""
    return tempfile.TemporaryDirectory(prefix="tunesmith-launch-")


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""  # nothing written: it died before its start


def start(args: list[str], env: dict[str, str] | None = None) -> Launched:
    """`tunesmith *args` started in the current folder, not waited for; `env` is the whole environment (default:
    this one). Daemonic: a process a test leaves running ends with the test session."""
    folder = Path(tempfile.mkdtemp(dir=_outputs().name))
    out, err = folder / "stdout", folder / "stderr"
    environment = dict(os.environ if env is None else env)
    process = _CONTEXT.Process(target=_main, args=(args, environment, os.getcwd(), str(out), str(err)), daemon=True)
    process.start()
    return Launched(process, out, err)


def run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """`tunesmith *args` to its end: like `subprocess.run(..., capture_output=True, text=True)`."""
    launched = start(args, env)
    try:
        stdout, stderr = launched.output(timeout)
    except subprocess.TimeoutExpired:
        launched.kill()
        raise
    done = subprocess.CompletedProcess(["tunesmith", *args], launched.wait(), stdout, stderr)
    if check:
        done.check_returncode()
    return done
