"""Python graders run in a child process of their own (`sandbox_worker.py`): no network (a network namespace of
its own where the machine allows one, and an audit hook that refuses sockets, processes and native code in any
case), memory and file size capped by rlimits, writes only inside a temporary folder that is removed afterwards,
and a time limit per call. The child lives for many calls (starting Python per answer would cost more than most
graders); one that times out or dies is killed and started again for the next call."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("sandbox_worker.py")


@dataclass(frozen=True)
class Limits:
    """What a python grader may use."""

    seconds: float = 30.0
    """Wall-clock time of one call (and of running the source) before the grader is killed and scores 0."""
    memory_bytes: int = 2 * 1024**3
    """Address space of the grader's process."""
    file_bytes: int = 64 * 1024**2
    """The largest file it may write (inside its temporary folder)."""


@dataclass(frozen=True)
class Outcome:
    """One call's result: a score, or the error that made it 0."""

    score: float
    error: str | None = None
    """The grader's traceback, "timed out after N s", or why the process died."""


@lru_cache(maxsize=1)
def _isolation() -> list[str]:
    """`unshare` into new user and network namespaces when this machine allows it (most Linux kernels do); the
    audit hook still refuses sockets where it does not."""
    command = ["unshare", "--user", "--map-root-user", "--net", "--"]
    if shutil.which("unshare") is None:
        return []
    try:
        subprocess.run([*command, "true"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return command


def network_isolated() -> bool:
    """Python graders run without any network interface but loopback."""
    return bool(_isolation())


class PythonSandbox:
    """One python grader's child process; `grade` may be called from many threads (calls take turns)."""

    def __init__(self, source: str, limits: Limits | None = None) -> None:
        self.source, self.limits = source, limits or Limits()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._folder: str | None = None

    def grade(self, sample: dict[str, Any], item: Any) -> Outcome:
        with self._lock:
            started = self._start()
            if started is not None:
                return started
            assert self._process is not None and self._process.stdin is not None
            try:
                self._process.stdin.write(json.dumps({"sample": sample, "item": item}, default=str) + "\n")
                self._process.stdin.flush()
            except OSError:
                return self._died()
            return self._reply()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> Outcome | None:
        """Start the child and run the source; an Outcome when that failed."""
        if self._process is not None and self._process.poll() is None:
            return None
        self._stop()
        self._folder = tempfile.mkdtemp(prefix="tunesmith-grader-")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self._folder,
            "TMPDIR": self._folder,
            "LANG": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
        }
        command = [
            *_isolation(),
            sys.executable,
            "-I",
            str(WORKER),
            str(self.limits.memory_bytes),
            str(self.limits.file_bytes),
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self._folder,
            env=env,
            text=True,
            start_new_session=True,
        )
        self._replies = queue.Queue()
        threading.Thread(target=_read, args=(self._process, self._replies), daemon=True).start()
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"source": self.source}) + "\n")
        self._process.stdin.flush()
        ready = self._reply()
        if ready.error is not None:
            self._stop()
            return ready
        return None

    def _reply(self) -> Outcome:
        try:
            line = self._replies.get(timeout=self.limits.seconds)
        except queue.Empty:
            self._stop()
            return Outcome(0.0, f"timed out after {self.limits.seconds:g} s")
        if line is None:
            return self._died()
        reply = json.loads(line)
        if "error" in reply:
            return Outcome(0.0, str(reply["error"]).strip())
        return Outcome(float(reply.get("score", 0.0)))

    def _died(self) -> Outcome:
        code = self._process.wait() if self._process is not None else None
        self._stop()
        reason = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return Outcome(0.0, f"the grader's process {reason} (out of memory?)")

    def _stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()
            self._process = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _read(process: subprocess.Popen[str], replies: queue.Queue[str | None]) -> None:
    assert process.stdout is not None
    try:
        for line in process.stdout:
            replies.put(line)
    except (OSError, ValueError):
        pass
    replies.put(None)
