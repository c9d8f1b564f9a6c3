"""Preference pairs -> two examples each: the prompt with the chosen answer and with the rejected one.

Both are rendered by the model's own chat template exactly as supervised fine-tuning renders a conversation, and
only the final answer (with its end-of-turn token) is marked: it is what the preference losses sum log-probs over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from tunesmith.data.schema import Conversation, Message, PreferencePair
from tunesmith.tokenize.encode import Example, encode


@dataclass(frozen=True, slots=True)
class PairExample:
    """One preference pair as the model sees it."""

    line: int
    """The input line it came from."""
    chosen: Example
    """The prompt and the preferred answer; the answer's tokens are labelled."""
    rejected: Example
    """The prompt and the rejected answer; the answer's tokens are labelled."""


@dataclass
class EncodedPairs:
    """The pairs of a data set, and those left out."""

    pairs: list[PairExample] = field(default_factory=list)
    """Pairs to train on, in input order."""
    dropped: list[tuple[int, int]] = field(default_factory=list)
    """(line, length of the longer side): no whole answer fits in max_length on one side or both."""


def _with_answer(pair: PreferencePair, answer: str) -> Conversation:
    return Conversation((*pair.prompt, Message("assistant", answer)))


def encode_pairs(
    records: list[tuple[int, PreferencePair]], tokenizer: PreTrainedTokenizerBase, *, max_length: int
) -> EncodedPairs:
    """Tokenise each pair's two conversations; a pair whose either side cannot keep its answer is left out."""
    sides = []
    for pick in ("chosen", "rejected"):
        rows = [(line, _with_answer(pair, getattr(pair, pick))) for line, pair in records]
        encoded = encode(rows, tokenizer, max_length=max_length, supervise="last")
        sides.append(({e.line: e for e in encoded.examples}, encoded.full_lengths))
    (chosen, chosen_lengths), (rejected, rejected_lengths) = sides
    out = EncodedPairs()
    for line, _ in records:
        if line in chosen and line in rejected:
            out.pairs.append(PairExample(line, chosen[line], rejected[line]))
        else:
            out.dropped.append((line, max(chosen_lengths.get(line, 0), rejected_lengths.get(line, 0))))
    return out
