"""Held-out answers scored by graders (`tunesmith eval --grader`): every answer of a model graded by each grader
against its data line, concurrently; the scores kept per item and averaged per grader (and sub-grader)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.graders.run import Runner, scores_by_name
from tunesmith.graders.spec import Grader

CONCURRENCY = 8
"""Answers graded at once."""


def grade_answers(graders: Sequence[Grader], texts: Sequence[str], items: Sequence[Any]) -> dict[str, list[float]]:
    """grader (and grader.sub-grader) name -> the score of each answer."""
    scores: dict[str, list[float]] = {}
    for grader in graders:
        runner = Runner(grader)
        try:
            named, _ = scores_by_name(runner, texts, items, CONCURRENCY)
        finally:
            runner.close()
        scores[grader.name] = named.pop(grader.name)
        scores |= {f"{grader.name}.{name}": values for name, values in named.items()}
    return scores
