"""The cost of constrained decoding: time per generated token with and without a grammar, in the same run.

    .venv/bin/python -m bench.constrained [--prompts 16] [--max-tokens 48] [--dtype float32] [--write]

The default model answers the tool-use recipe's held-out questions (examples/tool-use/eval.jsonl, their functions in
the prompt) three ways through the one engine: free; under the grammar of their functions' calls (tool_choice
required, what a served request with tools runs); under a JSON schema (response_format json_schema). Per arm and
batch size: milliseconds per generated token over the decoding steps (prefill excluded: it is the same work in every
arm), and the time llguidance spent computing masks, which runs in the engine's mask thread beside the forward pass.
Each arm runs three times; the median is kept. `--write` appends the rows to bench/results/constrained.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tunesmith.constrain.grammar import json_grammar, tools_grammar
from tunesmith.constrain.guide import Grammars
from tunesmith.data.validate import read_dataset
from tunesmith.engine.core import Engine, Request
from tunesmith.engine.sampling import Sampling
from tunesmith.evaluate.generate import Generator, load_generator
from tunesmith.models.sources import DEFAULT_MODEL

DATA = Path(__file__).resolve().parent.parent / "examples" / "tool-use" / "eval.jsonl"
RESULTS = Path(__file__).resolve().parent / "results" / "constrained.jsonl"
ROUNDS = 5
SCHEMA = {
    "type": "object",
    "properties": {
        "command": {"type": "string"},
        "options": {"type": "array", "items": {"type": "string"}},
        "dangerous": {"type": "boolean"},
    },
    "required": ["command", "options", "dangerous"],
    "additionalProperties": False,
}


class Timed:
    """A constraint that counts the time its masks take."""

    spent = 0.0

    def __init__(self, inner) -> None:
        self.inner = inner

    def fill(self, words: torch.Tensor) -> None:
        start = time.perf_counter()
        self.inner.fill(words)
        Timed.spent += time.perf_counter() - start

    def advance(self, token: int) -> None:
        self.inner.advance(token)


def _prompts(generator: Generator, count: int) -> tuple[list[list[int]], tuple]:
    records = [r for _, r in read_dataset(str(DATA)).records][:count]
    tools = records[0].tools
    prompts = [generator.chat_prompt(r.messages[:2], tools) for r in records]  # system and question
    return prompts, tools


def _decode(generator: Generator, prompts, maker, batch: int, max_tokens: int) -> dict:
    """Decode every prompt; time and tokens of the steps that only decode."""
    engine = Engine(generator.model, generator.pad_id, max_batch=batch)
    constrain = (lambda: Timed(maker())) if maker is not None else None
    requests = [Request(p, Sampling(max_tokens), frozenset(generator.stop_ids), constrain=constrain) for p in prompts]
    for request in requests:
        engine.add(request)
    Timed.spent, seconds, tokens = 0.0, 0.0, 0
    with torch.inference_mode():
        while not engine.idle:
            waiting, made = len(engine.pending), sum(len(a.ids) for r in requests for a in r.answers)
            start = time.perf_counter()
            engine.step()
            if len(engine.pending) == waiting:  # nobody joined: a decoding step
                seconds += time.perf_counter() - start
                tokens += sum(len(a.ids) for r in requests for a in r.answers) - made
    failed = [a.error for r in requests for a in r.answers if a.error is not None]
    if failed:
        raise failed[0]
    return {"ms_per_token": 1000 * seconds / max(tokens, 1), "tokens": tokens, "mask_ms": 1000 * Timed.spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    generator = load_generator(DEFAULT_MODEL, dtype=args.dtype)
    prompts, tools = _prompts(generator, args.prompts)
    grammars = Grammars(generator.tokenizer, int(generator.model.config.vocab_size), generator.stop_ids)
    syntax = generator.renderer.call_syntax
    arms = {
        "free": None,
        "tool calls": grammars.guide(tools_grammar(tools, syntax, "required", parallel=True)),
        "json schema": grammars.guide(json_grammar(SCHEMA)),
    }
    _decode(generator, prompts[:2], None, 2, 4)  # warm-up
    rows = []
    for batch, count in ((1, max(1, args.prompts // 2)), (8, args.prompts)):
        runs: dict[str, list[dict]] = {arm: [] for arm in arms}
        for _ in range(ROUNDS):  # arms interleaved, so that a slower minute of the machine hits each alike
            for arm, maker in arms.items():
                runs[arm].append(_decode(generator, prompts[:count], maker, batch, args.max_tokens))
        for arm, measured in runs.items():
            times = sorted(r["ms_per_token"] for r in measured)
            middle = sorted(measured, key=lambda r: r["ms_per_token"])[len(measured) // 2]
            row = {"arm": arm, "batch": batch, "prompts": count, "dtype": args.dtype, "rounds": ROUNDS}
            row |= {"ms_per_token": round(middle["ms_per_token"], 3), "min": round(times[0], 3)}
            row |= {"max": round(times[-1], 3), "tokens": middle["tokens"], "threads": torch.get_num_threads()}
            row["mask_ms_per_token"] = round(middle["mask_ms"] / max(middle["tokens"], 1), 4)
            row["cpu"] = platform.processor() or platform.machine()
            rows.append(row)
            print(json.dumps(row), flush=True)
    free = {r["batch"]: r["ms_per_token"] for r in rows if r["arm"] == "free"}
    print("\n| batch | arm | tokens | ms / token (median; min-max) | vs free | mask ms / token |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["ms_per_token"] / free[r["batch"]]
        spread = f"{r['ms_per_token']:.2f} ({r['min']:.2f}-{r['max']:.2f})"
        print(f"| {r['batch']} | {r['arm']} | {r['tokens']} | {spread} | {ratio:.2f}x | {r['mask_ms_per_token']:.3f} |")
    if args.write:
        with RESULTS.open("a") as out:
            out.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
