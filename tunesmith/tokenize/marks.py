"""What a model learns from one example: runs of trained and masked text, for `tunesmith data show`."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from tunesmith.tokenize.encode import IGNORE, Example


@dataclass(frozen=True, slots=True)
class Mark:
    """A run of consecutive tokens that are all trained or all masked."""

    text: str
    """The decoded text of the run, special tokens included."""
    trained: bool
    """Whether the model learns these tokens."""
    tokens: int
    """How many tokens the run has."""


def marks(example: Example, tokenizer: PreTrainedTokenizerBase) -> list[Mark]:
    """The example as alternating runs of masked and trained text."""
    runs: list[tuple[bool, list[int]]] = []
    for token, label in zip(example.input_ids.tolist(), example.labels.tolist()):
        trained = label != IGNORE
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(token)
        else:
            runs.append((trained, [token]))
    return [Mark(tokenizer.decode(ids), trained, len(ids)) for trained, ids in runs]
