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
    items too long to score (prompt and an answer over max_length) count as wrong.

    Each of an item's choices is scored once: they go two to a scored pair (the pair scorer shares its batching and
    padding), the own answer doubled when the count is odd."""
    drawn = distractors(items)
    asked: list[tuple[int, str, str]] = []  # pair k: item n's prompt with two of its choices
    for n, others in enumerate(drawn):
        choices = [items[n].reference, *(items[j].reference for j in others)]
        choices += choices[:1] * (len(choices) % 2)
        asked += [(n, choices[i], choices[i + 1]) for i in range(0, len(choices), 2)]
    records = [(k, PreferencePair(items[n].prompt, a, b)) for k, (n, a, b) in enumerate(asked)]
    scored = pair_scores(model, tokenizer, records, max_length)  # pairs are told apart by their line: k, not n
    means: dict[int, dict[str, float]] = {}
    for k, (mean_a, mean_b) in zip(scored.lines, scored.token_means):
        n, a, b = asked[k]
        means.setdefault(n, {}).update({a: mean_a, b: mean_b})
    return [
        100.0 if _own_wins(items[n].reference, means.get(n, {}), len(others)) else 0.0 for n, others in enumerate(drawn)
    ]


def _own_wins(own: str, means: dict[str, float], others: int) -> bool:
    """Every choice was scored and the own answer's mean beats each distractor's."""
    if others == 0 or len(means) != others + 1:
        return False
    return all(means[own] > mean for answer, mean in means.items() if answer != own)
