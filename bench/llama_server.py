"""A GGUF export served by llama.cpp's OpenAI-compatible server (llama-cpp-python's `python -m llama_cpp.server`),
asked held-out calls with the official openai client at temperature 0, its answers compared with tunesmith's own
greedy answers (fp32, the engine every command uses).

    pip install sse-starlette starlette-context pydantic-settings   # llama-cpp-python's [server] extra
    tunesmith export runs/demo --format gguf --dtype q8_0 --out /tmp/q8
    .venv/bin/python -m bench.llama_server /tmp/q8 runs/demo --data examples/call-summaries/eval.jsonl -n 10 \
        --json bench/results/llama_server_q8_0.json
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _conversations(data: Path, n: int) -> list[list[dict[str, str]]]:
    """The first n held-out conversations, up to (not including) their answer."""
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    return [[m for m in row["messages"] if m["role"] != "assistant"] for row in rows]


def _ours(run: str, conversations: list[list[dict[str, str]]], max_tokens: int) -> list[str]:
    from tunesmith.data.schema import Message
    from tunesmith.engine.sampling import Sampling
    from tunesmith.evaluate.generate import load_generator

    generator = load_generator(run, device="cpu", dtype="float32")
    asked = [tuple(Message(m["role"], m["content"]) for m in c) for c in conversations]
    return [answer.text for answer in generator.generate(asked, Sampling(max_tokens=max_tokens))]


def _ask(client, server, log, conversations: list[list[dict[str, str]]], max_tokens: int) -> list[str]:
    """The server's greedy answers, once it answers at all."""
    deadline = time.monotonic() + 120
    while True:
        try:
            served = client.models.list().data[0].id
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"llama_cpp.server did not start: {log.read()[-2000:]}") from None
            time.sleep(0.5)
    return [
        # llama-cpp-python's server penalises repeats by default (1.1; llama.cpp's own llama-server does not)
        client.chat.completions.create(
            model=served, messages=c, temperature=0, max_tokens=max_tokens, extra_body={"repeat_penalty": 1.0}
        )
        .choices[0]
        .message.content
        or ""
        for c in conversations
    ]


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="A gguf export folder (model.gguf).")
    parser.add_argument("run", help="The run it was exported from.")
    parser.add_argument("--data", type=Path, required=True, help="Held-out chat JSONL.")
    parser.add_argument("-n", type=int, default=5, help="How many held-out calls.")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--json", type=Path, help="Where the answers go (default: bench/results/llama_server.json).")
    parser.add_argument(
        "--f32-cache", action="store_true", help="Attention keys and values cached in f32 (llama.cpp's default: f16)."
    )
    args = parser.parse_args()
    from openai import OpenAI

    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(args.export / "model.gguf")]
    command += ["--port", str(port), "--n_ctx", "2048"]  # the chat template: the file's own
    command += ["--type_k", "0", "--type_v", "0"] if args.f32_cache else []  # GGML_TYPE_F32
    conversations = _conversations(args.data, args.n)
    with tempfile.TemporaryFile(mode="w+") as log:  # the server logs each request: a pipe nobody reads would fill
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            theirs = _ask(OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300),
                          server, log, conversations, args.max_tokens)  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=60)
    ours = _ours(args.run, conversations, args.max_tokens)
    same = [a.strip() == b.strip() for a, b in zip(theirs, ours, strict=True)]
    first = [a.strip().splitlines()[:1] == b.strip().splitlines()[:1] for a, b in zip(theirs, ours, strict=True)]
    return {
        "command": " ".join(["python -m llama_cpp.server", *command[3:]]),
        "file": str(args.export / "model.gguf"),
        "cache": "f32" if args.f32_cache else "f16",
        "calls": len(conversations),
        "answers_equal": sum(same),
        "first_lines_equal": sum(first),
        "pairs": [{"llama_cpp_server": a, "tunesmith": b} for a, b in zip(theirs, ours, strict=True)],
        "json": str(args.json or RESULTS / "llama_server.json"),
    }


if __name__ == "__main__":
    found = main()
    Path(found.pop("json")).write_text(json.dumps(found, indent=2) + "\n")
    print(json.dumps({k: v for k, v in found.items() if k != "pairs"}, indent=2))
