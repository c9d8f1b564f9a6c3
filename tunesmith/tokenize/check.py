"""`check_data`: everything wrong with a data set, and what training on it would cost, before any compute."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from tunesmith.config import auto_epochs
from tunesmith.data.validate import Dataset, Problem, overlap_warnings, read_dataset
from tunesmith.tokenize.encode import Encoded, encode
from tunesmith.tokenize.render import Supervise

MIN_TRAINING_ROWS = 10
"""Fewer rows to train on than this is an error (OpenAI's minimum of 10 examples). It counts what is trained on:
conversations, or for plain text the windows of max_length tokens it is cut into, not files or lines."""


@dataclass
class CheckReport:
    """Errors (the data cannot be used as it is), warnings (it can, but look) and statistics."""

    errors: list[Problem] = field(default_factory=list)
    """Lines that cannot be used, and file-level errors."""
    warnings: list[Problem] = field(default_factory=list)
    """Duplicates, overlap, examples too long for max_length."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Per data set: format, examples, token statistics; for training: epochs and the estimated time."""

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "errors": [p.as_dict() for p in self.errors],
            "warnings": [p.as_dict() for p in self.warnings],
            "stats": self.stats,
        }


def _length_warnings(source: str, encoded: Encoded, max_length: int) -> list[Problem]:
    problems = [
        Problem(
            source,
            line,
            "supervised_cut",
            f"{length} tokens under the model's template, over max_length {max_length}: "
            "trained up to the last whole answer that fits, later turns are cut",
        )
        for line, length in encoded.truncated
    ]
    for line, length in encoded.dropped:
        if length > max_length:
            problems.append(
                Problem(
                    source,
                    line,
                    "too_long",
                    f"{length} tokens under the model's template, over max_length {max_length}, "
                    "and no whole answer fits: left out (raise --max-length or shorten it)",
                )
            )
        else:
            problems.append(
                Problem(source, line, "nothing_trained", "no turn to learn from (all weights 0?): left out")
            )
    return problems


def _too_few_rows(dataset: Dataset, encoded: Encoded, max_length: int) -> list[Problem]:
    rows = len(encoded.examples)
    if rows >= MIN_TRAINING_ROWS or not dataset.records:
        return []
    if dataset.format == "text":
        message = (
            f"{rows} training windows of up to {max_length} tokens in {len(dataset.records)} texts; "
            f"at least {MIN_TRAINING_ROWS} are needed (add text, or lower --max-length)"
        )
    else:
        message = f"{rows} usable examples; at least {MIN_TRAINING_ROWS} are needed"
    return [Problem(dataset.source, 0, "too_few_examples", message)]


def _token_stats(dataset: Dataset, encoded: Encoded) -> dict[str, Any]:
    lengths = np.array(list(encoded.full_lengths.values()) or [0])
    p10, p50, p90 = (int(v) for v in np.percentile(lengths, [10, 50, 90]))
    return {
        "file": dataset.source,
        "format": dataset.format,
        "examples": len(dataset.records),
        "rows": len(encoded.examples),
        "tokens": int(sum(len(e.input_ids) for e in encoded.examples)),
        "supervised_tokens": int(sum(e.supervised for e in encoded.examples)),
        "length_p10": p10,
        "length_p50": p50,
        "length_p90": p90,
        "length_max": int(lengths.max()),
        "truncated": len(encoded.truncated),
        "left_out": len(encoded.dropped),
    }


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """How both data sets of a check are read and tokenised."""

    format: str = "auto"
    """Input format name, or auto."""
    columns: Mapping[str, str] | None = None
    """field -> column for CSV and tables."""
    max_length: int = 2048
    """Longest example in tokens."""
    supervise: Supervise = "assistant"
    """Which turns are learned."""

    def read(self, source: str, tokenizer: PreTrainedTokenizerBase) -> tuple[Dataset, Encoded]:
        dataset = read_dataset(source, format=self.format, columns=self.columns)
        return dataset, encode(dataset.records, tokenizer, max_length=self.max_length, supervise=self.supervise)


@dataclass(frozen=True)
class Prepared:
    """Data ready to train on: the check report and the tokenised examples of both sets."""

    report: CheckReport
    """Errors, warnings and statistics."""
    train: Encoded
    """The training examples."""
    eval: Encoded | None
    """The held-out examples, when an eval source was given."""


def prepare_data(
    train: str,
    tokenizer: PreTrainedTokenizerBase,
    options: DataOptions,
    *,
    eval_source: str | None = None,
    tokens_per_second: float | None = None,
) -> Prepared:
    """Read, parse and tokenise the training (and eval) data under the model's real tokenizer and template."""
    max_length = options.max_length
    report = CheckReport()
    sets: list[tuple[str, Dataset, Encoded]] = [("train", *options.read(train, tokenizer))]
    if eval_source:
        sets.append(("eval", *options.read(eval_source, tokenizer)))
    for name, dataset, encoded in sets:
        report.errors += dataset.errors
        report.warnings += dataset.warnings + _length_warnings(dataset.source, encoded, max_length)
        report.stats[name] = _token_stats(dataset, encoded)
    report.errors += _too_few_rows(sets[0][1], sets[0][2], max_length)
    if eval_source:
        report.warnings += overlap_warnings(sets[0][1], sets[1][1])
    train_stats = report.stats["train"]
    epochs = auto_epochs(train_stats["rows"])
    report.stats["training"] = {"epochs": epochs, "max_length": max_length, "tokens": train_stats["tokens"] * epochs}
    if tokens_per_second:
        report.stats["training"]["tokens_per_second"] = round(tokens_per_second, 1)
        report.stats["training"]["estimated_seconds"] = round(train_stats["tokens"] * epochs / tokens_per_second, 1)
    return Prepared(report, sets[0][2], sets[1][2] if eval_source else None)


def check_data(
    train: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    eval_source: str | None = None,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    max_length: int = 2048,
    supervise: Supervise = "assistant",
    tokens_per_second: float | None = None,
) -> CheckReport:
    """Everything wrong with a data set and what training on it would cost (see `prepare_data`)."""
    options = DataOptions(format=format, columns=columns, max_length=max_length, supervise=supervise)
    return prepare_data(train, tokenizer, options, eval_source=eval_source, tokens_per_second=tokens_per_second).report
