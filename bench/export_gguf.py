"""GGUF exports of a tuned run in every type: file size, held-out perplexity measured by llama.cpp, greedy answers
compared to tunesmith's own, and the exporting process's peak memory against the model's size.

Each export is `tunesmith export RUN --format gguf --dtype T --no-measure` in a fresh child process (its peak RSS is
ru_maxrss of that child); perplexity and answers are measured afterwards here, by llama-cpp-python, on the run's
held-out examples (bench/results/export_gguf.json; the table in docs/export.md).

    .venv/bin/python -m bench.export_gguf runs/demo [--dtypes f32,f16,q8_0,q5_1,q5_0,q4_1,q4_0] [--prompts 10]
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

from bench.scale import MEASURE  # runs a command, prints its descendants' peak RSS

ROOT = Path(__file__).resolve().parent.parent


def _export(run: Path, dtype: str, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of one export in a child process."""
    command = [sys.executable, "-m", "tunesmith", "export", str(run), "--format", "gguf", "--dtype", dtype]
    command += ["--out", str(out), "--no-measure"]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(command)], check=True, capture_output=True, text=True, cwd=ROOT
    )
    return time.perf_counter() - started, int(done.stdout.split()[-1]) / 1024**2


def _answers(path: Path, conversations: list[list[dict]], max_tokens: int) -> list[str]:
    from tunesmith.export import llama_cpp

    llm = llama_cpp.load(path, context=2048)
    try:
        return [llama_cpp.greedy_chat(llm, c, max_tokens).strip() for c in conversations]
    finally:
        llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--dtypes", default="f32,f16,q8_0,q5_1,q5_0,q4_1,q4_0")
    parser.add_argument("--prompts", type=int, default=10, help="held-out prompts answered greedily")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "export_gguf.json")
    args = parser.parse_args()

    from tunesmith.engine.sampling import Sampling
    from tunesmith.evaluate.generate import load_generator
    from tunesmith.evaluate.items import load_held_out
    from tunesmith.export import llama_cpp
    from tunesmith.export.quality import held_out_texts
    from tunesmith.runs import RunFolder

    generator = load_generator(str(args.run), device="cpu", dtype="float32")
    texts = held_out_texts(args.run / "final", generator.tokenizer)
    items = load_held_out(RunFolder(args.run), None, args.prompts).items
    ours = [a.text for a in generator.generate([i.prompt for i in items], Sampling(max_tokens=args.max_tokens))]
    conversations = [[{"role": m.role, "content": m.content or ""} for m in i.prompt] for i in items]
    weights = sum(p.numel() * 4 for p in generator.model.parameters()) / 1024**3
    del generator
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for dtype in args.dtypes.split(","):
            seconds, peak = _export(args.run, dtype, Path(folder) / dtype)
            path = Path(folder) / dtype / "model.gguf"
            llm = llama_cpp.load(path, context=2048, all_logits=True)
            try:
                perplexity = llama_cpp.perplexity(llm, texts)
            finally:
                llm.close()
            theirs = _answers(path, conversations, args.max_tokens)
            row = {
                "dtype": dtype,
                "megabytes": round(path.stat().st_size / 1e6, 1),
                "perplexity": round(perplexity, 4),
                "same_answers": sum(a == b for a, b in zip(theirs, ours, strict=True)),
                "same_first_lines": sum(
                    a.split("\n")[0] == b.split("\n")[0] for a, b in zip(theirs, ours, strict=True)
                ),
                "answers": len(ours),
                "export_seconds": round(seconds, 1),
                "export_peak_rss_gib": round(peak, 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "run": str(args.run),
        "held_out_texts": len(texts),
        "fp32_weights_gib": round(weights, 3),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
