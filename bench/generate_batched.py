"""tunesmith's generation engine vs Hugging Face `model.generate`: speed and identical greedy outputs.

    .venv/bin/python -m bench.generate_batched [--prompts 64] [--batch 8] [--max-new-tokens auto] [--dtype float32]

Same model, same prompts (call transcripts), greedy, the answer length `tunesmith eval` would allow (auto: a quarter
more than the longest reference). Three arms in one run: plain `model.generate` on each prompt alone (no padding:
what a user writes); `model.generate` on left-padded batches of similar lengths with a static cache (how tunesmith
evaluated before its engine); tunesmith's engine (continuous batching: a finished row leaves, a waiting prompt
joins). Identical outputs are counted against the first arm.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tunesmith.data.schema import as_dicts
from tunesmith.engine.sampling import Sampling
from tunesmith.evaluate.compare import held_out_prompts
from tunesmith.evaluate.evaluation import EvalOptions, answer_limits
from tunesmith.evaluate.generate import Generator, load_generator
from tunesmith.evaluate.items import Item
from tunesmith.models.load import pick_device, pick_dtype

DATA = Path(__file__).resolve().parent.parent / "examples" / "call-summaries"


def plain_generate(generator: Generator, prompt: tuple, sampling: Sampling) -> str:
    """What a user writes without tunesmith: tokenize one prompt, model.generate, decode up to the end token."""
    text = generator.tokenizer.apply_chat_template(as_dicts(prompt), tokenize=False, add_generation_prompt=True)
    inputs = generator.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = generator.model.generate(
            **inputs,
            max_new_tokens=sampling.max_tokens,
            do_sample=False,
            eos_token_id=generator.stop_ids,
            pad_token_id=generator.tokenizer.pad_token_id,
        )
    ids = out[0, inputs["input_ids"].shape[1] :].tolist()
    return generator.tokenizer.decode(ids, skip_special_tokens=True).strip()


def _until_stop(ids: list[int], stops: list[int]) -> list[int]:
    ends = [i for i, token in enumerate(ids) if token in stops]
    return ids[: ends[0]] if ends else ids


def hf_batched(generator: Generator, prompts: list[tuple], sampling: Sampling, batch: int) -> list[str]:
    """`model.generate` on left-padded batches of similar prompt lengths with a static cache."""
    texts = [
        generator.tokenizer.apply_chat_template(as_dicts(p), tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    tokenizer = generator.tokenizer
    tokenizer.padding_side = "left"
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: dict[int, str] = {}
    for start in range(0, len(order), batch):
        chosen = order[start : start + batch]
        inputs = tokenizer([texts[i] for i in chosen], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = generator.model.generate(
                **inputs,
                max_new_tokens=sampling.max_tokens,
                do_sample=False,
                eos_token_id=generator.stop_ids,
                pad_token_id=tokenizer.pad_token_id,
                cache_implementation="static",
            )
        for i, row in zip(chosen, out[:, inputs["input_ids"].shape[1] :].tolist()):
            answers[i] = tokenizer.decode(_until_stop(row, generator.stop_ids), skip_special_tokens=True).strip()
    return [answers[i] for i in range(len(texts))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", default="auto", help="a number, or auto as in tunesmith eval")
    parser.add_argument("--dtype", default="float32", help="float32 (outputs must match), auto or bfloat16")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    pairs = held_out_prompts(str(DATA / "eval.jsonl"), args.prompts)
    if len(pairs) < args.prompts:
        pairs += held_out_prompts(str(DATA / "train.jsonl"), args.prompts - len(pairs))
    prompts = [p for p, _ in pairs][: args.prompts]
    generator = load_generator(args.model, dtype=args.dtype)
    tokens = "auto" if args.max_new_tokens == "auto" else int(args.max_new_tokens)
    items = [Item(0, p, reference) for p, reference in pairs[: args.prompts]]
    sampling = Sampling(max_tokens=max(answer_limits(items, generator.tokenizer, EvalOptions(max_new_tokens=tokens))))
    generator.generate(prompts[:2], sampling, batch_size=2)  # warm-up

    start = time.perf_counter()
    single = [plain_generate(generator, p, sampling) for p in prompts]
    single_seconds = time.perf_counter() - start
    start = time.perf_counter()
    padded = hf_batched(generator, prompts, sampling, args.batch)
    padded_seconds = time.perf_counter() - start
    start = time.perf_counter()
    batched = generator.generate(prompts, sampling, batch_size=args.batch)
    batched_seconds = time.perf_counter() - start

    same = sum(a == b.text for a, b in zip(single, batched))
    same_padded = sum(a == b for a, b in zip(single, padded))
    tokens = sum(a.tokens for a in batched)
    result = {
        "model": args.model,
        "dtype": str(next(generator.model.parameters()).dtype).removeprefix("torch."),
        "prompts": len(prompts),
        "batch": args.batch,
        "max_new_tokens": sampling.max_tokens,
        "one_by_one_seconds": round(single_seconds, 2),
        "hf_batched_seconds": round(padded_seconds, 2),
        "batched_seconds": round(batched_seconds, 2),
        "speedup": round(single_seconds / batched_seconds, 2),
        "speedup_over_hf_batched": round(padded_seconds / batched_seconds, 2),
        "generated_tokens": tokens,
        "identical_outputs": same,
        "hf_batched_identical_outputs": same_padded,
        "threads": torch.get_num_threads(),
        "device": str(pick_device()),
        "auto_dtype": str(pick_dtype(pick_device())),
    }
    print(f"one by one: {single_seconds:.1f} s   HF batched x{args.batch}: {padded_seconds:.1f} s "
          f"({same_padded}/{len(prompts)} identical)   engine x{args.batch}: {batched_seconds:.1f} s "
          f"({same}/{len(prompts)} identical)   {tokens} tokens")  # fmt: skip
    if same != len(prompts):
        for a, b in zip(single, batched):
            if a != b.text:
                print("differs:\n  one by one:", a[:200], "\n  batched:   ", b.text[:200])
                break
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
