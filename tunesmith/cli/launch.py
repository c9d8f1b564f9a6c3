"""`tunesmith train --processes N`: the same command on N processes through torchrun's launcher (torch's elastic
agent, as `torchrun --standalone --nproc-per-node N -m tunesmith train ...` would), one line when a rank fails."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import uuid
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from tunesmith.cli.common import err

PROCESSES_FLAG = "--processes"


def command_args(argv: list[str]) -> list[str]:
    """The arguments after `train`, without --processes and its value: what each rank is started with."""
    args = argv[argv.index("train") + 1 :] if "train" in argv else list(argv)
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == PROCESSES_FLAG:
            skip = True
        elif not arg.startswith(PROCESSES_FLAG + "="):
            kept.append(arg)
    return kept


def threads_per_rank(processes: int) -> int:
    """Cores per rank on this host, so that N ranks do not fight over the same cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // processes)


def launch(processes: int, args: list[str], run_dir: str) -> int:
    """Run `tunesmith train ARGS` on `processes` ranks of this host; the exit code (0, 128 + the signal that
    stopped it, or 1 when a rank failed)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank(processes)))
    for name in ("torch.distributed.elastic", "torch.distributed.elastic.multiprocessing.api"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the agent's own report: one line below instead
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone
        max_restarts=0,
        monitor_interval=0.1,
        signals_to_handle="SIGHUP,SIGQUIT",  # SIGTERM and SIGINT: forwarded below
    )
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, partial(_forward, received))
    resume = f"tunesmith train --resume {run_dir} --processes {processes}"
    try:
        elastic_launch(config, sys.executable)("-m", "tunesmith", "train", *args)
    except ChildFailedError as exc:
        if not received:
            err.print(f"[bold red]error:[/] training stopped: {_failure(exc)}; continue with: {resume}", soft_wrap=True)
            return 1
    if received:  # rank 0 said where it stopped and how to continue
        return 128 + received[0]
    return 0


def _forward(received: list[int], signum: int, frame: FrameType | None) -> None:
    """A stop for the run goes to each rank's process alone (the launcher would signal their whole process groups,
    the compiler's workers too): each saves the same step's checkpoint and exits."""
    received.append(signum)
    for pid in _children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _children() -> list[int]:
    """This process's child processes (the ranks), from Linux's /proc."""
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in (task / "children").read_text().split()]
    return pids


def _failure(exc: Any) -> str:
    """'rank 1 was killed by SIGKILL': the first rank that failed, from the launcher's report."""
    rank, failure = exc.get_first_failure()
    if failure.exitcode < 0:
        return f"rank {rank} was killed by {failure.signal_name()}"
    return f"rank {rank} exited with code {failure.exitcode}"
