"""Base and tuned answers to the same held-out prompts, side by side with the reference."""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.schema import Message
from tunesmith.engine.sampling import Sampling
from tunesmith.evaluate.generate import load_generator
from tunesmith.evaluate.items import load_held_out


@dataclass(frozen=True)
class Sample:
    """One held-out prompt and three answers."""

    prompt: tuple[Message, ...]
    """The conversation up to the answer."""
    reference: str
    """The answer in the data."""
    base: str
    """The base model's answer."""
    tuned: str
    """The fine-tuned model's answer."""


def held_out_prompts(source: str, n: int) -> list[tuple[tuple[Message, ...], str]]:
    """(prompt, reference answer) of the first n conversations that end with an assistant turn."""
    items = load_held_out(None, source, n).items
    return [(item.prompt, item.reference) for item in items]


def _answers(name: str, prompts: list[tuple[Message, ...]], sampling: Sampling, *, base: bool) -> list[str]:
    generator = load_generator(name, base=base)
    answers = [a.text for a in generator.generate(prompts, sampling)]
    del generator
    gc.collect()
    return answers


def side_by_side(run: str, data: str, n: int, sampling: Sampling) -> list[Sample]:
    """Answers of a run's base model and of the run itself to n held-out prompts."""
    pairs = held_out_prompts(data, n)
    prompts = [p for p, _ in pairs]
    base = _answers(run, prompts, sampling, base=True)
    tuned = _answers(run, prompts, sampling, base=False)
    return [Sample(p, ref, b, t) for (p, ref), b, t in zip(pairs, base, tuned)]


def from_samples_file(path: Path, n: int) -> list[Sample]:
    """The first n samples of an evaluation's samples.jsonl (no generation)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return [
        Sample(
            tuple(Message(m["role"], m["content"]) for m in row["prompt"]),
            row["reference"],
            row.get("baseline", ""),
            row["tuned"],
        )
        for row in rows
    ]
