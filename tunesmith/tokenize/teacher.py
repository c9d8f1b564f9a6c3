"""A teacher's top-k log-probs (as `tunesmith distill collect` stores them) -> soft targets on the student's tokens.

The teacher returns tokens as text (OpenAI's `token`), so they are matched through the student's own vocabulary:
a token text that exactly one student id decodes to is that id. A collected answer is used when the student
tokenises it into the very tokens the teacher generated (same tokenizer, same tokenisation); its positions then
learn the teacher's top-k distribution, and every other learned position (earlier turns, the end-of-turn token, an
answer that does not line up) learns its one token, as in plain SFT.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from tunesmith.tokenize.encode import IGNORE, Example

TokenEntries = list[dict[str, Any]]
"""One answer's `logprobs`: per generated token {token, logprob, top_logprobs: [{token, logprob}]}."""


@dataclass(frozen=True, slots=True)
class SoftExample(Example):
    """An example whose learned positions carry a target distribution (top-k ids and probabilities)."""

    top_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))
    """[learned positions after the first token, K] int64, in position order; short rows repeat an id."""
    top_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.float32))
    """[learned positions after the first token, K] float32: the teacher's probabilities (one 1.0 where the target
    is the token itself); what is missing from 1 is the mass of every other token."""


@dataclass
class Alignment:
    """How many collected answers lined up with the student's tokens."""

    answers: int = 0
    """Examples with the teacher's log-probs."""
    aligned: int = 0
    """Of those, answers the student tokenises into the teacher's tokens: they learn the top-k distribution."""
    soft_positions: int = 0
    """Learned positions with a teacher distribution."""
    hard_positions: int = 0
    """Learned positions that learn their one token."""

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("answers", "aligned", "soft_positions", "hard_positions")}


def teacher_logprobs(path: str) -> dict[int, TokenEntries]:
    """line -> the `logprobs` stored on that line of a JSONL file (lines without any are left out)."""
    out: dict[int, TokenEntries] = {}
    if not Path(path).is_file():
        return out
    with open(path, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if '"logprobs"' not in text:
                continue
            entries = json.loads(text).get("logprobs")
            if isinstance(entries, list) and entries:
                out[line] = entries
    return out


def vocabulary_texts(tokenizer: PreTrainedTokenizerBase) -> tuple[list[str], dict[str, int]]:
    """(the text of each id, text -> id for texts exactly one id decodes to)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    counts = Counter(texts)
    return texts, {text: i for i, text in enumerate(texts) if counts[text] == 1}


def _last_answer(positions: np.ndarray) -> np.ndarray:
    """Indexes (into positions) of the last run of consecutive learned positions: the final answer."""
    breaks = np.flatnonzero(np.diff(positions) != 1)
    return np.arange(breaks[-1] + 1 if len(breaks) else 0, len(positions))


def _top(entry: Mapping[str, Any], ids: Mapping[str, int], k: int) -> tuple[list[int], list[float]]:
    """The top-k of one teacher token as student ids and probabilities; unknown texts join the rest."""
    pairs = [(ids[o["token"]], math.exp(o["logprob"])) for o in entry.get("top_logprobs") or [] if o["token"] in ids]
    pairs = pairs[:k]
    total = sum(p for _, p in pairs)
    if total > 1.0:  # rounding in the teacher's log-probs
        pairs = [(i, p / total) for i, p in pairs]
    return [i for i, _ in pairs], [p for _, p in pairs]


def soften(
    example: Example, entries: TokenEntries, vocab: tuple[Sequence[str], Mapping[str, int]], k: int
) -> tuple[SoftExample, int]:
    """The example with its targets, and how many of its positions took the teacher's distribution (0: its final
    answer did not line up with the teacher's tokens, or there was no teacher answer)."""
    positions = np.flatnonzero(example.labels != IGNORE)
    positions = positions[positions >= 1]
    labels = example.labels[positions].astype(np.int64)
    top_ids = np.repeat(labels[:, None], k, axis=1)
    top_probs = np.zeros((len(positions), k), dtype=np.float32)
    top_probs[:, 0] = 1.0
    texts, ids = vocab
    answer = _last_answer(positions) if len(positions) else positions
    aligned = 0 < len(entries) <= len(answer)
    aligned = aligned and all(texts[labels[a]] == e["token"] for a, e in zip(answer, entries))
    for a, entry in zip(answer, entries if aligned else []):
        chosen, probs = _top(entry, ids, k)
        if chosen:
            top_ids[a] = chosen + [chosen[0]] * (k - len(chosen))
            top_probs[a] = probs + [0.0] * (k - len(probs))
    soft = SoftExample(example.line, example.input_ids, example.labels, top_ids, top_probs)
    return soft, len(entries) if aligned else 0


def soften_all(
    examples: Sequence[Example], logprobs: Mapping[int, TokenEntries], tokenizer: PreTrainedTokenizerBase
) -> tuple[list[SoftExample], Alignment]:
    """Every example with its targets (K = the widest top-k collected), and how many lined up."""
    k = max((len(e.get("top_logprobs") or []) for entries in logprobs.values() for e in entries), default=1)
    vocab = vocabulary_texts(tokenizer)
    tally = Alignment()
    out = []
    for example in examples:
        entries = logprobs.get(example.line, [])
        soft, taught = soften(example, entries, vocab, max(k, 1))
        tally.answers += bool(entries)
        tally.aligned += taught > 0
        tally.soft_positions += taught
        tally.hard_positions += len(soft.top_probs) - taught
        out.append(soft)
    return out, tally
