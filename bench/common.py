"""What the side-by-side benchmarks share: a fresh process per measurement, its peak memory, the versions run."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import torch


def peak_rss_gb() -> float:
    """This process's peak resident set size, in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def report(result: dict) -> None:
    """A child's measurement, with its peak memory, as the line `spawn` reads."""
    print("RESULT " + json.dumps(result | {"peak_rss_gb": peak_rss_gb()}), flush=True)


def spawn(command: list[str], kind: str) -> dict:
    """Run one measurement in a fresh process; its RESULT line, with the wall time of the whole process."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{kind} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")) | {"wall_seconds": time.perf_counter() - start}


def versions() -> dict[str, str]:
    """The versions of the libraries compared."""
    import peft
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "trl": trl.__version__}  # fmt: skip
