"""Training on 1 and on N processes of this host: tokens/s, the peak resident memory of the largest rank, and
whether the runs agree (per-step losses, held-out loss). With --jobs, the jobs queue on PostgreSQL: N workers on
a queue of small jobs, jobs per hour and the time from submit to start.

Each run is `tunesmith train --processes N` in a fresh process on the same settings (examples/call-summaries with
the default model unless --model/--data say otherwise), fp32 so that the runs can be compared step by step.
tokens/s counts the training loop only (metrics.jsonl's elapsed: model loading and evaluations left out). Peak RSS
is the largest ru_maxrss among the finished child processes (the launcher and every rank): on N processes, the
largest rank's. On a 2-core CPU no speed-up is expected; the point is equal results and bounded memory per rank.
On a GPU host each rank takes one GPU (NCCL).

    .venv/bin/python -m bench.scale [--processes 1,2] [--steps 8] [--json bench/results/scale.json]
    .venv/bin/python -m bench.scale --method full [--json bench/results/scale_full.json]   (FSDP2 on N > 1)
    .venv/bin/python -m bench.scale --jobs 20 --workers 1,2 [--json bench/results/scale_jobs.json]

The jobs part starts a throwaway PostgreSQL (bench/postgres_server.py), a `tunesmith serve --no-worker` and N
`tunesmith jobs worker` processes per round, a fresh database each; each job fine-tunes a tiny random model (2 layers,
the default model's tokenizer: tests/conftest.make_tiny_model) for 2 epochs of 24 conversations, so that the queue,
not the training, is measured.
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


def _run(processes: int, steps: int, out: Path, model: str | None, method: str) -> dict[str, float | int]:
    """One training run on `processes` processes in a child process; its numbers."""
    command = [
        sys.executable, "-m", "tunesmith", "train", "--data", str(DATA / "train.jsonl"),
        "--eval", str(DATA / "eval.jsonl"), "--max-steps", str(steps), "--eval-every", str(steps),
        "--precision", "fp32", "--batch-tokens", "2048", "--grad-accum", "2",
        "--learning-rate", "2e-5" if method == "full" else "1e-3",
        "--compile", "off", "--out", str(out), "--quiet", "--no-eval", "--processes", str(processes),
        "--method", method,
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
        "method": method,
        "steps": len(steps_rows),
        "tokens": last["tokens"],
        "tokens_per_second": round(last["tokens"] / last["elapsed"], 1),
        "wall_seconds": round(wall, 1),
        "peak_rss_gib": round(peak / 1024**2, 2),
        "losses": [r["loss"] for r in steps_rows],
        "eval_loss": evals[-1]["eval_loss"],
    }


def _serve(model: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "tunesmith", "serve", "--model", str(model), "--port", str(port), "--no-worker"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=2).close()
            return server, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the server did not start")


def _queue_round(server_pg: object, workers: int, jobs: int, model: Path, folder: Path) -> dict[str, float | int]:
    """`jobs` small jobs submitted at once to a fresh database, run by `workers` workers: jobs per hour (first
    worker started to last job ended) and the time from submit to start (mean, max)."""
    import openai

    env = {**os.environ, "TUNESMITH_HOME": str(folder), "TUNESMITH_DATABASE_URL": server_pg.new_database()}  # type: ignore[attr-defined]
    server, url = _serve(model, env)
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=2)
        rows = "".join(
            json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                     {"role": "assistant", "content": f"{i} + {i} is {2 * i}."}]}) + "\n"
            for i in range(24)
        ).encode()  # fmt: skip
        data = client.files.create(file=("t.jsonl", rows), purpose="fine-tune")
        submitted = {}
        for _ in range(jobs):
            job = client.fine_tuning.jobs.create(
                model=str(model), training_file=data.id, hyperparameters={"n_epochs": 2}
            )
            submitted[job.id] = time.time()
        started = time.time()
        command = [sys.executable, "-m", "tunesmith", "jobs", "worker", "--lease", "60"]
        running = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        begun: dict[str, float] = {}
        statuses: dict[str, str] = {}
        while len(statuses) < jobs or any(status not in ("succeeded", "failed") for status in statuses.values()):
            time.sleep(0.25)
            statuses = {job.id: job.status for job in client.fine_tuning.jobs.list(limit=100).data}
            for job_id, status in statuses.items():
                if job_id not in begun and status not in ("validating_files", "queued"):
                    begun[job_id] = time.time()  # within 0.25 s of its start
        ended = time.time()
        for worker in running:
            worker.terminate()
            worker.wait(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=60)
    waits = [begun[j] - submitted[j] for j in submitted]
    return {
        "workers": workers,
        "jobs": jobs,
        "succeeded": list(statuses.values()).count("succeeded"),
        "jobs_per_hour": round(jobs / (ended - started) * 3600, 1),
        "seconds_submit_to_start_mean": round(sum(waits) / len(waits), 1),
        "seconds_submit_to_start_max": round(max(waits), 1),
        "seconds_first_worker_to_last_job": round(ended - started, 1),
    }  # fmt: skip


def _queue(args: argparse.Namespace) -> list[dict[str, float | int]]:
    from bench.postgres_server import temporary_postgres
    from tests.conftest import make_tiny_model
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.sources import DEFAULT_MODEL

    results = []
    with tempfile.TemporaryDirectory() as folder, temporary_postgres() as server:
        model = make_tiny_model(Path(folder) / "tiny", load_tokenizer(DEFAULT_MODEL))
        for count in (int(n) for n in args.workers.split(",")):
            result = _queue_round(server, count, args.jobs, model, Path(folder) / f"home{count}")
            results.append(result)
            print(json.dumps(result), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2", help="Comma-separated process counts, smallest first.")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model", default=None, help="A model other than the default.")
    parser.add_argument("--method", default="lora", help="lora (DDP on N > 1) or full (FSDP2 on N > 1).")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=0, help="Measure the jobs queue instead: this many small jobs.")
    parser.add_argument("--workers", default="1,2", help="Comma-separated worker counts for --jobs.")
    args = parser.parse_args()
    if args.jobs:
        record = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "rounds": _queue(args)}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(record, indent=2) + "\n")
        return
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for count in (int(n) for n in args.processes.split(",")):
            result = _run(count, args.steps, Path(folder) / f"p{count}", args.model, args.method)
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
