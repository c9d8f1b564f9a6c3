"""Serving under load: the same chat requests one at a time, then from 8 concurrent clients, against one server.

Starts `tunesmith serve` (the default model, or --model/--adapter) on a free local port, sends every request
with the official openai client (greedy, fixed max_tokens), and compares aggregate generated tokens per second.
With adapters, the requests go round-robin to every served id (the base and each run), so batches mix adapters.

    .venv/bin/python bench/serve_load.py [--requests 32] [--clients 8] [--max-tokens 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "examples" / "call-summaries" / "eval.jsonl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(arguments: list[str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tunesmith", "serve", "--port", str(port), *arguments]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
        try:
            client.models.list()
            return server
        except openai.APIConnectionError:
            time.sleep(0.5)
    raise SystemExit("server did not start in 5 minutes")


def _conversations(count: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line)["messages"][:-1] for line in PROMPTS.read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(count)]


def _ask(client: openai.OpenAI, model: str, messages: list[dict[str, str]], max_tokens: int) -> int:
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)  # type: ignore[arg-type]
    assert reply.usage is not None
    return reply.usage.completion_tokens


def _run(client: openai.OpenAI, models: list[str], conversations: list, clients: int, max_tokens: int) -> dict:
    errors: list[str] = []
    tokens = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        futures = [
            pool.submit(_ask, client, models[i % len(models)], c, max_tokens) for i, c in enumerate(conversations)
        ]
        for future in futures:
            try:
                tokens += future.result()
            except Exception as error:  # a failed request is counted and shown, not raised
                errors.append(f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - start
    return {
        "clients": clients,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "failed": len(errors),
        "errors": errors[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default=None, help="base model for the server")
    parser.add_argument("--adapter", action="append", default=[], help="run folder to serve (and to query)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    port = _free_port()
    server_args = ["--dtype", args.dtype] + (["--model", args.model] if args.model else [])
    for run in args.adapter:
        server_args += ["--adapter", run]
    server = start_server(server_args, port)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
        models = [m.id for m in client.models.list().data]
        conversations = _conversations(args.requests)
        _ask(client, models[0], conversations[0], 4)  # warm-up
        one = _run(client, models, conversations, 1, args.max_tokens)
        many = _run(client, models, conversations, args.clients, args.max_tokens)
    finally:
        server.terminate()
        server.wait(timeout=60)
    report = {
        "models": models,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "dtype": args.dtype,
        "one_at_a_time": one,
        "concurrent": many,
        "speedup": many["tokens_per_second"] / one["tokens_per_second"],
        "cpu_threads": os.cpu_count(),
    }
    print("| clients | requests | generated tokens | seconds | tokens/s | failed |\n|---|---|---|---|---|---|")
    for row in (one, many):
        print(
            f"| {row['clients']} | {args.requests} | {row['tokens']} | {row['seconds']:.1f} | "
            f"{row['tokens_per_second']:.1f} | {row['failed']} |"
        )
    for error in one["errors"] + many["errors"]:
        print(f"failed request: {error}")
    print(f"speed-up with {args.clients} clients: {report['speedup']:.2f}x ({', '.join(models)}, {args.dtype})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
