"""Training on 1 and on N processes of this host: tokens/s, the peak resident memory of the largest rank, and
whether the runs agree (per-step losses, held-out loss).

Each run is `tunesmith train --processes N` in a fresh process on the same settings (examples/call-summaries with
the default model unless --model/--data say otherwise), fp32 so that the runs can be compared step by step.
tokens/s counts the training loop only (metrics.jsonl's elapsed: model loading and evaluations left out). Peak RSS
is the largest ru_maxrss among the finished child processes (the launcher and every rank): on N processes, the
largest rank's. On a 2-core CPU no speed-up is expected; the point is equal results and bounded memory per rank.
On a GPU host each rank takes one GPU (NCCL).

    .venv/bin/python -m bench.scale [--processes 1,2] [--steps 8] [--json bench/results/scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "call-summaries"
MEASURE = """
import json, resource, subprocess, sys
subprocess.run(json.loads(sys.argv[1]), check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
"""Runs a command and prints the largest ru_maxrss of its descendants (the launcher or any rank)."""


def _run(processes: int, steps: int, out: Path, model: str | None) -> dict[str, float | int]:
    """One training run on `processes` processes in a child process; its numbers."""
    command = [
        sys.executable, "-m", "tunesmith", "train", "--data", str(DATA / "train.jsonl"),
        "--eval", str(DATA / "eval.jsonl"), "--max-steps", str(steps), "--eval-every", str(steps),
        "--precision", "fp32", "--batch-tokens", "2048", "--grad-accum", "2", "--learning-rate", "1e-3",
        "--compile", "off", "--out", str(out), "--quiet", "--no-eval", "--processes", str(processes),
    ]  # fmt: skip
    if model:
        command += ["--model", model]
    started = time.perf_counter()
    # a fresh parent per run, so that its children's peak is this run's alone
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(command)],
        check=True, cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    peak = int(measured.stdout.strip().splitlines()[-1])  # KiB on Linux
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_rows = [r for r in rows if r["event"] == "step"]
    evals = [r for r in rows if r["event"] == "eval"]
    last = steps_rows[-1]
    return {
        "processes": processes,
        "steps": len(steps_rows),
        "tokens": last["tokens"],
        "tokens_per_second": round(last["tokens"] / last["elapsed"], 1),
        "wall_seconds": round(wall, 1),
        "peak_rss_gib": round(peak / 1024**2, 2),
        "losses": [r["loss"] for r in steps_rows],
        "eval_loss": evals[-1]["eval_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2", help="Comma-separated process counts, smallest first.")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model", default=None, help="A model other than the default.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for count in (int(n) for n in args.processes.split(",")):
            result = _run(count, args.steps, Path(folder) / f"p{count}", args.model)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "losses"}), flush=True)
    first = results[0]
    for other in results[1:]:
        worst = max(abs(a - b) for a, b in zip(first["losses"], other["losses"], strict=True))
        other["max_loss_difference_vs_first"] = worst
        other["eval_loss_difference_vs_first"] = abs(other["eval_loss"] - first["eval_loss"])
        print(f"{other['processes']} vs {first['processes']} processes: per-step losses within {worst:.2e}, "
              f"held-out loss within {other['eval_loss_difference_vs_first']:.2e}")  # fmt: skip
    record = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "runs": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
