"""Held-out answers scored by graders (`tunesmith eval --grader`): every answer of a model graded by each grader
against its data line, concurrently; the scores kept per item and averaged per grader (and sub-grader)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.graders.run import Runner, grade_all
from tunesmith.graders.spec import Grader
from tunesmith.graders.template import Sample

CONCURRENCY = 8
"""Answers graded at once."""


def grade_answers(graders: Sequence[Grader], texts: Sequence[str], items: Sequence[Any]) -> dict[str, list[float]]:
    """grader (and sub-grader) name -> the score of each answer."""
    samples = [Sample(text) for text in texts]
    scores: dict[str, list[float]] = {}
    for grader in graders:
        runner = Runner(grader)
        try:
            grades = grade_all(runner, samples, items, CONCURRENCY)
        finally:
            runner.close()
        scores[grader.name] = [g.score for g in grades]
        for name in grades[0].sub_scores if grades else ():
            if name != grader.name:
                scores[f"{grader.name}.{name}"] = [g.sub_scores[name] for g in grades]
    return scores
