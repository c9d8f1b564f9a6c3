"""Held-out preference pairs: does a model give the chosen answer the higher log-probability than the rejected one?

Asked of the base model and the tuned one alike, so the two can be compared; DPO's own reward accuracy in
metrics.jsonl is measured against the base and is 0 before training by definition.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.data.schema import PreferencePair, Record
from tunesmith.tokenize.batches import ordered_batches
from tunesmith.tokenize.pairs import encode_pairs
from tunesmith.training.objectives.preference import reference_log_probs

PAIR_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class PairScores:
    """One model's log-probabilities of each held-out pair's two answers."""

    lines: list[int]
    """The pair's line in its file."""
    margins: list[float]
    """log p(chosen) - log p(rejected), each summed over its answer's tokens."""
    token_margins: list[float]
    """The same difference of the mean log-probability per answer token (fair to answers of unequal length)."""
    token_means: list[tuple[float, float]]
    """The mean log-probability per answer token of the chosen and of the rejected answer."""

    def summary(self) -> dict[str, Any]:
        return {
            "accuracy": 100 * float(np.mean([m > 0 for m in self.margins])),
            "per_token_accuracy": 100 * float(np.mean([m > 0 for m in self.token_margins])),
            "margin": float(np.mean(self.margins)),
            "pairs": len(self.margins),
        }


def preference_records(records: list[tuple[int, Record]]) -> list[tuple[int, PreferencePair]]:
    return [(line, r) for line, r in records if isinstance(r, PreferencePair)]


def pair_scores(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: list[tuple[int, PreferencePair]],
    max_length: int,
) -> PairScores:
    """Score every pair that fits in max_length (the others are left out, as in training), in the model's dtype."""
    pairs = encode_pairs(records, tokenizer, max_length=max_length).pairs
    batches = ordered_batches(np.array([p.length for p in pairs]), PAIR_BATCH_TOKENS)
    pad = int(tokenizer.pad_token_id)
    sums = reference_log_probs(model, pairs, batches, pad, nullcontext)
    counts = torch.tensor([[p.chosen.supervised, p.rejected.supervised] for p in pairs], dtype=torch.float32)
    means = sums / counts.clamp(min=1)
    margins, token_margins = (sums[:, 0] - sums[:, 1]).tolist(), (means[:, 0] - means[:, 1]).tolist()
    return PairScores([p.line for p in pairs], margins, token_margins, [(a, b) for a, b in means.tolist()])
