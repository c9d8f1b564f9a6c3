"""Graders at work: `Runner.grade(sample, item)` scores one answer with one grader (a multi grader's sub-graders
first, then its formula) and says what went wrong as OpenAI's error flags; `grade_all` scores many at once, model
graders' calls in parallel. A grader that fails scores 0 for that answer and is reported, never raised."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tunesmith.graders.formula import FormulaError
from tunesmith.graders.judge import Endpoint, Judge, JudgeError, Usage
from tunesmith.graders.sandbox import Limits, PythonSandbox
from tunesmith.graders.similarity import similarity
from tunesmith.graders.spec import (
    Grader,
    LabelModel,
    Multi,
    Python,
    ScoreModel,
    Single,
    StringCheck,
    TextSimilarity,
)
from tunesmith.graders.template import Sample, render

ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)
"""OpenAI's error flags of a grade (each false unless that went wrong)."""


@dataclass
class Grade:
    """One answer's grade."""

    score: float
    """The reward: the grader's score (a multi grader's formula)."""
    sub_scores: dict[str, float] = field(default_factory=dict)
    """Each sub-grader's score by name (a single grader: its own)."""
    errors: dict[str, Any] = field(default_factory=dict)
    """The error flags that are set, with their details."""
    seconds: float = 0.0
    """How long grading took."""

    def metadata_errors(self) -> dict[str, Any]:
        """OpenAI's `metadata.errors` object."""
        flags: dict[str, Any] = {flag: bool(self.errors.get(flag)) for flag in ERROR_FLAGS}
        flags["model_grader_server_error_details"] = self.errors.get("model_grader_server_error_details")
        flags["python_grader_runtime_error_details"] = self.errors.get("python_grader_runtime_error_details")
        flags["python_grader_server_error_type"] = self.errors.get("python_grader_server_error_type")
        return flags


class Runner:
    """One grader ready to score answers: its sandboxes started at the first python call, one judge client."""

    def __init__(self, grader: Grader, endpoint: Endpoint | None = None, limits: Limits | None = None) -> None:
        self.grader = grader
        self.judge = Judge(endpoint or Endpoint())
        self.usage = Usage()
        self._sandboxes: dict[str, PythonSandbox] = {}
        for name, single in self.singles().items():
            if isinstance(single, Python):
                self._sandboxes[name] = PythonSandbox(single.source, limits)

    def singles(self) -> dict[str, Single]:
        """The graders that score directly, by name (a multi grader's sub-graders, or the grader itself)."""
        if isinstance(self.grader, Multi):
            return dict(self.grader.graders)
        return {self.grader.name: self.grader}

    def grade(self, sample: Sample, item: Any) -> Grade:
        started = time.perf_counter()
        grade = Grade(0.0)
        item = item if isinstance(item, dict) else {}
        for name, single in self.singles().items():
            grade.sub_scores[name] = self._single(name, single, sample, item, grade.errors)
        if isinstance(self.grader, Multi):
            try:
                grade.score = self.grader.formula.compute(grade.sub_scores)
            except FormulaError as exc:
                grade.errors["formula_parse_error"] = str(exc)
        else:
            grade.score = grade.sub_scores[self.grader.name]
        grade.seconds = time.perf_counter() - started
        return grade

    def close(self) -> None:
        for sandbox in self._sandboxes.values():
            sandbox.close()

    def _single(self, name: str, grader: Single, sample: Sample, item: dict[str, Any], errors: dict[str, Any]) -> float:
        try:
            if isinstance(grader, StringCheck):
                return _string_check(grader, sample, item)
            if isinstance(grader, TextSimilarity):
                text, reference = render(grader.input, sample, item), render(grader.reference, sample, item)
                if grader.evaluation_metric == "cosine":
                    return self.judge.cosine(text, reference, self.usage)
                return similarity(grader.evaluation_metric, text, reference)
            if isinstance(grader, Python):
                outcome = self._sandboxes[name].grade(sample.namespace(), item)
                if outcome.error is not None:
                    timed_out = outcome.error.startswith("timed out")
                    errors["python_grader_server_error" if timed_out else "python_grader_runtime_error"] = True
                    errors["python_grader_runtime_error_details"] = f"{name}: {outcome.error}"
                    if timed_out:
                        errors["python_grader_server_error_type"] = "timeout"
                return outcome.score
            if isinstance(grader, ScoreModel):
                return self.judge.score(grader, sample, item, self.usage)
            assert isinstance(grader, LabelModel)
            return self.judge.label(grader, sample, item, self.usage)
        except JudgeError as exc:
            errors[exc.kind] = True
            details = "model_grader_server_error_details" if exc.kind == "model_grader_server_error" else "details"
            errors[details] = f"{name}: {exc}"
            return 0.0


def _string_check(grader: StringCheck, sample: Sample, item: dict[str, Any]) -> float:
    text, reference = render(grader.input, sample, item), render(grader.reference, sample, item)
    if grader.operation == "eq":
        return float(text == reference)
    if grader.operation == "ne":
        return float(text != reference)
    if grader.operation == "like":
        return float(reference in text)
    return float(reference.lower() in text.lower())


def grade_all(runner: Runner, samples: Sequence[Sample], items: Sequence[Any], concurrency: int = 8) -> list[Grade]:
    """Every (sample, item) graded, `concurrency` at a time (model graders wait on the network; python graders
    take turns in their sandbox), in order."""
    if len(samples) <= 1 or concurrency <= 1:
        return [runner.grade(s, i) for s, i in zip(samples, items, strict=True)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(runner.grade, samples, items))


def scores_by_name(
    runner: Runner, texts: Sequence[str], items: Sequence[Any], concurrency: int = 8
) -> tuple[dict[str, list[float]], int]:
    """Every answer text graded against its item: the grader's score of each by its name, each sub-grader's by
    theirs; and how many answers a grader failed on (scored 0 there)."""
    grades = grade_all(runner, [Sample(text) for text in texts], items, concurrency)
    scores = {runner.grader.name: [g.score for g in grades]}
    for name in grades[0].sub_scores if grades else ():
        if name != runner.grader.name:
            scores[name] = [g.sub_scores[name] for g in grades]
    return scores, sum(1 for g in grades if g.errors)
