"""Peak memory of `tunesmith data check` as the input grows: does it stream, or hold the whole file?

    .venv/bin/python -m bench.check_memory --megabytes 100 250 1024 [--json FILE]

Writes a JSONL file of chat examples of each size (call-summary-like conversations, every one distinct), runs
`tunesmith data check FILE --no-estimate --json` on it in a fresh process, and reports the wall time and the
process's peak resident memory (ru_maxrss of the child). The target (issue 14) is a peak under 2 GB for 1 GB.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_chats(path: Path, megabytes: int, seed: int = 0) -> int:
    """A JSONL file of about `megabytes` MB of distinct chat examples; returns the number of lines."""
    rng = random.Random(seed)
    words = [
        "account",
        "refund",
        "payment",
        "invoice",
        "order",
        "delivery",
        "late",
        "charge",
        "credit",
        "plan",
        "mobile",
        "broadband",
    ]
    target, written, lines = megabytes * 1_000_000, 0, 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target:
            question = " ".join(rng.choice(words) for _ in range(rng.randint(40, 120)))
            answer = " ".join(rng.choice(words) for _ in range(rng.randint(15, 40)))
            row = {
                "messages": [
                    {"role": "user", "content": f"Call {lines}: {question}"},
                    {"role": "assistant", "content": answer},
                ]
            }
            line = json.dumps(row) + "\n"
            handle.write(line)
            written, lines = written + len(line), lines + 1
    return lines


WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
"""Runs the check as its only child, so that the peak it reports is the check's alone."""


def measure(path: Path) -> dict[str, float]:
    """Seconds and peak RSS (GB) of a data check of `path`, in a fresh process."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "tunesmith", "data", "check", str(path), "--no-estimate", "--json"]
    done = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    code, peak_kb = (int(v) for v in done.stdout.split())
    if code not in (0, 2):
        raise RuntimeError(f"data check exited {code}")
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(peak_kb / 1e6, 2), "exit_code": code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, nargs="+", default=[100, 250, 1024])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sorted(args.megabytes):
            path = Path(folder) / f"chats-{size}mb.jsonl"
            lines = write_chats(path, size)
            result = {"megabytes": size, "lines": lines, **measure(path)}
            path.unlink()
            results.append(result)
            print(f"{size:5d} MB, {lines:,} lines: {result['seconds']} s, peak RSS {result['peak_rss_gb']} GB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
