"""`evaluate`: the tuned model and a baseline on the same held-out data: loss, answers, scores, who won."""

from __future__ import annotations

import gc
import math
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from transformers import PreTrainedTokenizerBase

from tunesmith.engine.sampling import Sampling
from tunesmith.errors import ConfigError
from tunesmith.evaluate.choice import choice_scores
from tunesmith.evaluate.generate import Answer, Generator, load_generator
from tunesmith.evaluate.graded import grade_answers
from tunesmith.evaluate.items import HeldOut, Item, general_questions, load_graded, load_held_out
from tunesmith.evaluate.metrics import (
    DIAGNOSTICS,
    HIGHER_IS_BETTER,
    METRICS,
    MODEL_METRICS,
    choose_metrics,
    contains,
)
from tunesmith.evaluate.pairs import PairScores, pair_scores, preference_records
from tunesmith.evaluate.tool_metrics import TOOL_METRICS, canonical_answer
from tunesmith.runs import RunFolder, result_folder, run_of
from tunesmith.tokenize.batches import ordered_batches
from tunesmith.tokenize.encode import encode
from tunesmith.training.loss import mean_loss
from tunesmith.training.rewards import read_graders
from tunesmith.training.stages import stages_of

LABELS = {
    "rougeL": "ROUGE-L",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "choice": "choice accuracy (%)",
    "tool_exact": "exact tool calls (%)",
}
"""How the headline names a primary metric."""
TIE = 0.5
"""Scores closer than this (on 0-100) are a tie."""
GUARD_TOKENS = 32
MAX_ANSWER_TOKENS = 512
LOSS_BATCH_TOKENS = 4096
UNGUIDED_TOKENS = 256
"""The longest answer to a prompt without a reference (graded data), when max_new_tokens is auto."""


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """What to evaluate and how."""

    data: str | None = None
    """Held-out data; default: the run's eval data, or the examples it held out."""
    baseline: str = "base"
    """base (the run's base model), none, or another model or run."""
    metrics: tuple[str, ...] = ()
    """Metrics to compute, the first deciding who wins; empty: chosen from the data."""
    limit: int | None = None
    """Evaluate at most this many examples."""
    max_new_tokens: int | Literal["auto"] = "auto"
    """The longest answer; auto: a quarter more than each reference (+8 tokens), at most 512."""
    batch_size: int = 16
    """Prompts generated together (similar lengths, left padding)."""
    guard: bool = True
    """Score a small set of general questions before and after, to catch forgetting."""
    guard_margin: float = 10.0
    """Warn when the tuned model's general score falls by more than this many points."""
    dtype: str = "auto"
    """auto (bf16 where fast), float32 (batching never changes a greedy answer) or bfloat16."""
    max_length: int = 2048
    """Longest example for the held-out loss."""
    graders: tuple[str, ...] = ()
    """Grader files (OpenAI grader objects in JSON, or .py files defining grade(sample, item)): each answer graded
    against its data line; with graders the first one decides who wins, and lines need no reference answer."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in HIGHER_IS_BETTER]
        if unknown:
            raise ConfigError(f"metric {unknown[0]!r} is unknown", hint=f"use some of {', '.join(HIGHER_IS_BETTER)}")


@dataclass
class ModelResult:
    """One model's results on the held-out data."""

    name: str
    """What was evaluated."""
    loss: float | None = None
    """Mean loss per supervised held-out token."""
    answers: list[Answer] = field(default_factory=list)
    """Its answer to each held-out prompt."""
    scores: dict[str, list[float | None]] = field(default_factory=dict)
    """metric -> score of each answer (None where the metric does not apply: a call's metric on a final answer)."""
    guard: float | None = None
    """Share of general questions answered right (0-100)."""
    pairs: PairScores | None = None
    """Preference pairs: the log-probabilities it gives each pair's chosen and rejected answers."""
    grades: dict[str, list[float]] = field(default_factory=dict)
    """grader (and sub-grader) name -> the grade of each answer."""

    def summary(self) -> dict[str, Any]:
        means = {name: mean for name, values in self.scores.items() if (mean := mean_score(values)) is not None}
        grades = {name: float(np.mean(values)) for name, values in self.grades.items() if values}
        return {
            "graders": grades or None,
            "preference": self.pairs.summary() if self.pairs is not None else None,
            "name": self.name,
            "loss": self.loss,
            "perplexity": math.exp(self.loss) if self.loss is not None and self.loss < 50 else None,
            "metrics": means,
            "stop_rate": 100 * float(np.mean([a.stopped for a in self.answers])) if self.answers else None,
            "general": self.guard,
        }


def mean_score(values: list[float | None]) -> float | None:
    """The mean of the scores that apply; None when none does."""
    applied = [v for v in values if v is not None]
    return float(np.mean(applied)) if applied else None


def answer_limits(items: list[Item], tokenizer: PreTrainedTokenizerBase, options: EvalOptions) -> list[int]:
    """The longest answer for each item: max_new_tokens, or auto: a quarter more than its reference (+8), at most
    512, so that a model that never stops is cut where a good answer would have ended."""
    if options.max_new_tokens != "auto":
        return [options.max_new_tokens] * len(items)
    lengths = [len(ids) for ids in tokenizer([i.reference for i in items], add_special_tokens=False)["input_ids"]]
    return [
        min(MAX_ANSWER_TOKENS, int(n * 1.25) + 8) if i.reference else UNGUIDED_TOKENS for n, i in zip(lengths, items)
    ]


def _loss(generator: Generator, held_out: HeldOut, max_length: int) -> float | None:
    if not held_out.records:  # graded prompts: no answers to measure a loss on
        return None
    supervise = "all" if held_out.kind == "text" else "assistant"
    examples = encode(held_out.records, generator.tokenizer, max_length=max_length, supervise=supervise).examples
    batches = ordered_batches(np.array([len(e.input_ids) for e in examples]), LOSS_BATCH_TOKENS)
    pad = int(generator.tokenizer.pad_token_id)
    measured = mean_loss(generator.model, examples, batches, pad, nullcontext)
    return None if measured is None else measured[0]


def _run_model(
    name: str, base: bool, held_out: HeldOut, metrics: list[str], options: EvalOptions, known_loss: float | None
) -> ModelResult:
    generator = load_generator(name, base=base, dtype=options.dtype)
    result = ModelResult(f"{name} (base model)" if base else name)
    result.loss = known_loss if known_loss is not None else _loss(generator, held_out, options.max_length)
    if held_out.kind == "pairs":
        pairs = preference_records(held_out.records)
        result.pairs = pair_scores(generator.model, generator.tokenizer, pairs, options.max_length)
    if held_out.items:
        prompts = [i.prompt for i in held_out.items]
        limits = answer_limits(held_out.items, generator.tokenizer, options)
        sampling = Sampling(max_tokens=max(limits))
        if held_out.kind == "text":
            texts = [p[0].content for p in prompts]
            result.answers = generator.complete(texts, sampling, options.batch_size)
        else:
            tools = [i.tools for i in held_out.items]
            result.answers = generator.generate(prompts, sampling, options.batch_size, limits, tools)
        if held_out.kind == "tools":  # calls compared as calls: read in the model's own syntax
            syntax = generator.renderer.call_syntax
            result.answers = [replace(a, text=canonical_answer(a.text, syntax)) for a in result.answers]
        result.scores = {m: _item_scores(m, generator, held_out, result.answers, options) for m in metrics}
        if options.graders and held_out.raw is not None:
            texts = [a.text for a in result.answers]
            result.grades = grade_answers(read_graders(options.graders), texts, held_out.raw)
    if options.guard:
        questions = general_questions()
        sampling = Sampling(max_tokens=GUARD_TOKENS)  # short prompts and answers: one batch
        answers = generator.generate([q.prompt for q in questions], sampling, len(questions))
        result.guard = float(np.mean([contains(a.text, q.reference) for a, q in zip(answers, questions)]))
    del generator
    gc.collect()
    return result


def _item_scores(
    metric: str, generator: Generator, held_out: HeldOut, answers: list[Answer], options: EvalOptions
) -> list[float]:
    """One metric's score of each held-out item: from the answer against the reference, or from the model. On tool
    data the call metrics score the items that should call, the others the items that should answer in words."""
    if metric not in MODEL_METRICS:
        return [
            METRICS[metric](a.text, i.reference) if _applies(metric, i, held_out.kind) else None
            for a, i in zip(answers, held_out.items)
        ]
    return choice_scores(generator.model, generator.tokenizer, held_out.items, options.max_length)


def _applies(metric: str, item: Item, kind: str) -> bool:
    return kind != "tools" or (metric in TOOL_METRICS) == bool(item.calls)


def _measured_losses(
    run: RunFolder | None, held_out: HeldOut, options: EvalOptions
) -> tuple[float | None, float | None]:
    """The held-out losses a run measured itself, before its first step (the base model) and at the step final/ holds,
    when this evaluation uses the same held-out data in full; (None, None) when they must be computed (and for
    pairs, whose measured loss is DPO's, not the loss on the chosen answers reported here)."""
    if run is None or options.data is not None or held_out.cut or held_out.kind == "pairs":
        return None, None
    if stages_of(run):  # its metrics hold every stage's, each on its own held-out data
        return None, None
    rows = run.read_metrics()
    evals = {row["step"]: row["eval_loss"] for row in rows if row.get("event") == "eval"}
    last = max((row["step"] for row in rows if row.get("event") == "step"), default=None)
    kept = run.kept_step() or last  # runs from before final/ could be the best step held their last
    if 0 not in evals or kept not in evals:
        return None, None
    return evals[0], evals[kept]


def _winners(tuned: ModelResult, baseline: ModelResult, metric: str) -> list[str]:
    if tuned.grades:  # the first grader decides: its scores as they are (grades are not on the 0-100 scale)
        first = next(iter(tuned.grades))
        return [
            "tie" if abs(a - b) < 1e-9 else "tuned" if a > b else "baseline"
            for a, b in zip(tuned.grades[first], baseline.grades[first])
        ]
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    out = []
    for a, b in zip(tuned.scores[metric], baseline.scores[metric]):
        if a is None or b is None:
            out.append("n/a")
            continue
        delta = sign * (a - b)
        out.append("tie" if abs(delta) < TIE else "tuned" if delta > 0 else "baseline")
    return out


def _change(before: dict[str, Any] | None, after: dict[str, Any], key: str, form: str, unit: str = "") -> str:
    """The change of one number, before -> after, or the after alone without a before."""
    return (f"{before[key]:{form}}{unit} -> " if before else "") + f"{after[key]:{form}}{unit}"


@dataclass
class Evaluation:
    """Everything an evaluation found; `report.py` writes it out."""

    target: str
    held_out: HeldOut
    metrics: list[str]
    tuned: ModelResult
    baseline: ModelResult | None
    winners: list[str]
    options: EvalOptions
    run_dir: Path | None
    """The run evaluated, None for a plain model."""
    stages: list[ModelResult] = field(default_factory=list)
    """A staged run's model after each stage but the last (final/ is the tuned model), on the same data."""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def primary(self) -> str | None:
        return self.metrics[0] if self.metrics else None

    def guard_warning(self) -> str | None:
        if self.baseline is None or self.tuned.guard is None or self.baseline.guard is None:
            return None
        drop = self.baseline.guard - self.tuned.guard
        if drop <= self.options.guard_margin:
            return None
        return (
            f"general questions: {self.baseline.guard:.0f}% -> {self.tuned.guard:.0f}% right "
            f"(-{drop:.0f} points): the tuned model may have forgotten general knowledge; "
            f"try fewer epochs, a lower learning rate, or mix general examples into the data"
        )

    def _perplexity(self) -> str:
        base = self.baseline.summary()["perplexity"] if self.baseline else None
        tuned = self.tuned.summary()["perplexity"]
        before = f"{base:.2f} -> " if base is not None else ""
        return f"perplexity {before}{tuned:.2f}" if tuned is not None else "perplexity -"

    def _preference(self) -> str:
        """Both accuracies: per answer token first, since summed log-probs favour the shorter answer whatever its
        tone (a base model's summed accuracy is near 0 when the chosen answers are the longer ones)."""
        tuned = self.tuned.summary()["preference"]
        base = self.baseline.summary()["preference"] if self.baseline else None
        return (
            f"preference accuracy {_change(base, tuned, 'per_token_accuracy', '.0f', '%')} per answer token "
            f"({_change(base, tuned, 'accuracy', '.0f', '%')} by summed log-prob, "
            f"margin {_change(base, tuned, 'margin', '.1f')}) "
            f"on {tuned['pairs']} held-out pairs"
        )

    def headline(self) -> str:
        n = len(self.held_out.items) or len(self.held_out.records)
        if self.tuned.grades:
            return self._grades(n)
        primary = self.primary
        if self.held_out.kind == "pairs" and self.tuned.pairs is not None:
            return f"{self._preference()}; {self._scores(primary, n)}{self._stages(primary)}"
        return self._scores(primary, n) + self._stages(primary)

    def _grades(self, n: int) -> str:
        """Each grader's mean grade, base -> tuned, and who won by the first."""
        tuned = self.tuned.summary()["graders"]
        base = self.baseline.summary()["graders"] if self.baseline else None
        parts = [
            f"grader {name} " + (f"{base[name]:.3f} -> " if base else "") + f"{tuned[name]:.3f}"
            for name in tuned
            if "." not in name
        ]
        text = "; ".join(parts) + f" on {n} held-out prompts"
        if self.winners:
            wins, ties = self.winners.count("tuned"), self.winners.count("tie")
            text += f" ({wins} wins, {ties} ties, {self.winners.count('baseline')} losses)"
        return text

    def _stages(self, primary: str | None) -> str:
        """What each earlier stage of a staged run reached on the same data: its score, or its perplexity."""
        parts = []
        for result in self.stages:
            summary = result.summary()
            if primary is not None and result.scores:
                parts.append(f"{result.name} {mean_score(result.scores[primary]) or 0.0:.1f}")
            elif summary["perplexity"] is not None:
                parts.append(f"{result.name} perplexity {summary['perplexity']:.2f}")
        return f" ({'; '.join(parts)})" if parts else ""

    def _scores(self, primary: str | None, n: int) -> str:
        if primary is None or not self.tuned.scores:
            return f"{self._perplexity()} on {n} held-out texts"
        label = LABELS.get(primary, primary)
        if self.held_out.kind == "text":
            label = f"{self._perplexity()}; {'style similarity' if primary == 'style' else label}"
        if self.held_out.kind == "pairs":
            label = f"{label} against the chosen answers"
        scored = sum(s is not None for s in self.tuned.scores[primary])
        what = f"{scored} held-out calls" if self.held_out.kind == "tools" else f"{n} held-out examples"
        tuned_mean = mean_score(self.tuned.scores[primary]) or 0.0
        if self.baseline is None:
            return f"{label} {tuned_mean:.1f} on {what}"
        base_mean = mean_score(self.baseline.scores[primary]) or 0.0
        wins, ties = self.winners.count("tuned"), self.winners.count("tie")
        return (
            f"{label} {base_mean:.1f} -> {tuned_mean:.1f} on {what} ({tuned_mean - base_mean:+.1f}; "
            f"{wins} wins, {ties} ties, {self.winners.count('baseline')} losses)"
        )


def evaluate(target: str, options: EvalOptions) -> Evaluation:
    """Evaluate a run (against its base model by default) or a plain model on held-out data."""
    run = run_of(target)
    if not options.graders and run is not None:
        options = replace(options, graders=run_graders(run))
    if options.graders:
        read_graders(options.graders)  # a bad grader file fails before any model is loaded
        held_out = load_graded(run, options.data, options.limit)
    else:
        held_out = load_held_out(run, options.data, options.limit)
    metrics = list(options.metrics) or choose_metrics([i.reference for i in held_out.items], held_out.kind)
    if held_out.kind == "prompts":
        metrics = []  # nothing to compare answers with: the graders score them
    if held_out.kind == "text" and set(metrics) & set(MODEL_METRICS):
        raise ConfigError(
            f"{held_out.source}: metric 'choice' needs questions with answers",
            hint="plain texts are scored by perplexity",
        )
    metrics = [*metrics, *(d for d in DIAGNOSTICS if d not in metrics)] if metrics and held_out.items else []
    base_loss, tuned_loss = _measured_losses(run, held_out, options)
    tuned = _run_model(target, False, held_out, metrics, options, tuned_loss)
    baseline = None
    if options.baseline == "base" and result_folder(target) is not None:  # a run, or a result folder alone
        baseline = _run_model(target, True, held_out, metrics, options, base_loss)
    elif options.baseline not in ("base", "none"):
        baseline = _run_model(options.baseline, False, held_out, metrics, options, None)
    winners = _winners(tuned, baseline, metrics[0] if metrics else "") if baseline and (metrics or tuned.grades) else []
    stages = _earlier_stages(run, held_out, metrics, options) if run is not None else []
    return Evaluation(target, held_out, metrics, tuned, baseline, winners, options, run.root if run else None, stages)


def run_graders(run: RunFolder) -> tuple[str, ...]:
    """The graders a grpo run learned from (what its answers are graded by unless others are given)."""
    config = run.read_config() if run.config.is_file() else {}
    if config.get("objective") != "grpo":
        return ()
    return tuple((config.get("reinforcement") or {}).get("graders") or ())


def _earlier_stages(run: RunFolder, held_out: HeldOut, metrics: list[str], options: EvalOptions) -> list[ModelResult]:
    """A staged run's model after each stage before the last, evaluated as the tuned model is."""
    results = []
    for folder in stages_of(run)[:-1]:
        result = _run_model(str(folder), False, held_out, metrics, options, None)
        result.name = f"after {folder.name.partition('-')[2]}"
        results.append(result)
    return results
