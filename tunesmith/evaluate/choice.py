"""The `choice` metric: does a model find each held-out question's own answer likelier than other questions' answers?

Knowledge shows here before it shows in generated text. A small model that read a domain's documents may not
recall a definition word for word (ROUGE-L stays low), yet still tell the right one from three others it read too:
the multiple-choice test of knowledge benchmarks (MMLU, lm-evaluation-harness), with the distractors drawn from the
held-out answers themselves, so any question-and-answer data can be scored this way and chance is 1 in CHOICES.
Each answer is scored by its mean log-probability per token (summed log-probabilities favour the shortest answer).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.data.schema import PreferencePair
from tunesmith.evaluate.items import Item
from tunesmith.evaluate.pairs import pair_scores

CHOICES = 4
"""The answer and three distractors, as in MMLU: chance is 25%."""
SEED = 0
"""Draws the distractors: every model is asked the same questions with the same choices."""


def distractors(items: list[Item], choices: int = CHOICES, seed: int = SEED) -> list[list[int]]:
    """For each item, the indices of `choices - 1` other items whose answers differ from its own (fewer where the
    data has fewer distinct answers)."""
    rng = np.random.default_rng(seed)
    drawn = []
    for item in items:
        seen, picked = {item.reference}, []
        for j in rng.permutation(len(items)).tolist():
            if len(picked) < choices - 1 and items[j].reference not in seen:
                seen.add(items[j].reference)
                picked.append(j)
        drawn.append(picked)
    return drawn


def choice_scores(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, items: list[Item], max_length: int
) -> list[float]:
    """Per item, 100 when its own answer has the highest mean log-probability per token of its choices, else 0;
    items too long to score (prompt and an answer over max_length) count as wrong."""
    drawn = distractors(items)
    asked = [(n, j) for n, others in enumerate(drawn) for j in others]  # pair k: item n against item j's answer
    records = [
        (k, PreferencePair(items[n].prompt, items[n].reference, items[j].reference)) for k, (n, j) in enumerate(asked)
    ]
    scored = pair_scores(model, tokenizer, records, max_length)  # pairs are told apart by their line: k, not n
    beaten: dict[int, list[bool]] = {}
    for k, margin in zip(scored.lines, scored.token_margins):
        beaten.setdefault(asked[k][0], []).append(margin > 0)
    return [
        100.0 if len(beaten.get(n, [])) == len(others) > 0 and all(beaten[n]) else 0.0 for n, others in enumerate(drawn)
    ]
