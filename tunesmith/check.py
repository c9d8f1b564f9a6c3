"""`check_data`: everything wrong with a data set, and what training on it would cost, before any compute."""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from tunesmith.auto import auto_epochs, auto_learning_rate, auto_plan
from tunesmith.config import DataSource, RunConfig
from tunesmith.data.advice import advise
from tunesmith.data.formats import auto_objective
from tunesmith.data.validate import Problem, RecordReader, overlap_warnings
from tunesmith.tokenize.encode import Encoded, Example, conversation_of, encode
from tunesmith.tokenize.mix import shares
from tunesmith.tokenize.render import ChatRenderer, Supervise

HISTOGRAM_BINS = 20
"""Bars of the token-length histogram in a check's statistics."""

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
    error_count: int = 0
    """Every error, also those past the PROBLEM_LIMIT listed per data set."""

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "errors": [p.as_dict() for p in self.errors],
            "warnings": [p.as_dict() for p in self.warnings],
            "stats": self.stats,
            "error_count": self.error_count,
        }


def _length_warnings(source: str, encoded: Encoded, max_length: int) -> Iterator[Problem]:
    for line, length in encoded.truncated:
        yield Problem(
            source,
            line,
            "supervised_cut",
            f"{length} tokens under the model's template, over max_length {max_length}: "
            "trained up to the last whole answer that fits, later turns are cut",
        )
    for line, length in encoded.dropped:
        if length > max_length:
            yield Problem(
                source,
                line,
                "too_long",
                f"{length} tokens under the model's template, over max_length {max_length}, "
                "and no whole answer fits: left out (raise --max-length or shorten it)",
            )
        else:
            yield Problem(source, line, "nothing_trained", "no turn to learn from (all weights 0?): left out")
    for line, special in encoded.literal:
        yield Problem(
            source,
            line,
            "special_token_in_content",
            f"a message holds {special!r}, a special token of this model: it is trained as plain text, not as the "
            "control token (remove it if it was meant to end or start a turn)",
        )


@dataclass
class Tally:
    """The token statistics of a data set, summed chunk by chunk so that its examples need not be kept."""

    lengths: array[int] = field(default_factory=lambda: array("q"))
    """Token length of every record before truncation (texts: per document)."""
    rows: int = 0
    """Rows to train on (plain text: windows)."""
    tokens: int = 0
    """Tokens in those rows."""
    supervised: int = 0
    """Tokens learned."""
    truncated: int = 0
    """Records cut to max_length."""
    left_out: int = 0
    """Records with nothing left to learn within max_length."""

    def add(self, encoded: Encoded) -> None:
        self.lengths.extend(encoded.full_lengths.values())
        self.rows += len(encoded.examples)
        self.tokens += sum(len(e.input_ids) for e in encoded.examples)
        self.supervised += sum(e.supervised for e in encoded.examples)
        self.truncated += len(encoded.truncated)
        self.left_out += len(encoded.dropped)


def _too_few_rows(reader: RecordReader, tally: Tally, max_length: int) -> list[Problem]:
    if tally.rows >= MIN_TRAINING_ROWS or not reader.records:
        return []
    if reader.format == "text":
        message = (
            f"{tally.rows} training windows of up to {max_length} tokens in {reader.records} texts; "
            f"at least {MIN_TRAINING_ROWS} are needed (add text, or lower --max-length)"
        )
    else:
        message = f"{tally.rows} usable examples; at least {MIN_TRAINING_ROWS} are needed"
    return [Problem(reader.source, 0, "too_few_examples", message)]


def _token_stats(reader: RecordReader, tally: Tally) -> dict[str, Any]:
    lengths = np.frombuffer(tally.lengths, dtype=np.int64) if tally.lengths else np.zeros(1, dtype=np.int64)
    p10, p50, p90 = (int(v) for v in np.percentile(lengths, [10, 50, 90]))
    counts, edges = np.histogram(lengths, bins=min(HISTOGRAM_BINS, max(1, int(lengths.max() - lengths.min()))))
    return {
        "file": reader.source,
        "format": reader.format,
        "examples": reader.records,
        "rows": tally.rows,
        "tokens": tally.tokens,
        "supervised_tokens": tally.supervised,
        "length_p10": p10,
        "length_p50": p50,
        "length_p90": p90,
        "length_max": int(lengths.max()),
        "truncated": tally.truncated,
        "left_out": tally.left_out,
        "length_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "errors": reader.errors.total,
        "warnings": reader.warnings.total,
    }


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """How both data sets of a check are read and tokenised."""

    format: str = RunConfig.model_fields["format"].default
    """As the training setting (RunConfig.format): input format name, or auto."""
    columns: Mapping[str, str] | None = None
    """field -> column for CSV and tables."""
    max_length: int = RunConfig.model_fields["max_length"].default
    """As the training setting: longest example in tokens."""
    supervise: Supervise = RunConfig.model_fields["supervise"].default
    """As the training setting: which turns are learned."""
    split: str = "train"
    """The split of a hub data set (DataSource.split)."""

    @classmethod
    def of_source(
        cls,
        source: DataSource,
        objective: str | None,
        *,
        format: str,
        max_length: int,
        supervise: Supervise,
        columns: Mapping[str, str] | None = None,
    ) -> DataOptions:
        """How one source of a run or a mix is read: its own format (else `format`) and split, and every token learned
        when its objective is text."""
        return cls(
            format=source.format or format,
            columns=columns,
            max_length=max_length,
            supervise="all" if objective == "text" else supervise,
            split=source.split,
        )

    def read(
        self, source: str, tokenizer: PreTrainedTokenizerBase, *, keep: bool
    ) -> tuple[RecordReader, Tally, Encoded]:
        """One streaming pass: the reader's problems, the tally, and the examples themselves when `keep`."""
        reader = RecordReader(source, format=self.format, columns=self.columns, split=self.split)
        tally, kept = Tally(), Encoded()
        renderer: ChatRenderer | None = None
        for chunk in reader.chunks():
            if renderer is None and any(conversation_of(r) is not None for _, r in chunk):
                renderer = ChatRenderer(tokenizer, self.supervise)
            encoded = encode(chunk, tokenizer, max_length=self.max_length, renderer=renderer)
            tally.add(encoded)
            for problem in _length_warnings(source, encoded, self.max_length):
                reader.warnings.add(problem)
            if keep:
                kept.examples += encoded.examples
        return reader, tally, kept

    def first(self, source: str, tokenizer: PreTrainedTokenizerBase, n: int) -> list[Example]:
        """The first `n` usable examples of a source as training tokenises them, reading no further than needed."""
        reader = RecordReader(source, format=self.format, columns=self.columns)
        for chunk in reader.chunks():  # the first chunk holds them, or the source has fewer
            return encode(chunk[: n * 2], tokenizer, max_length=self.max_length, supervise=self.supervise).examples[:n]
        return []


@dataclass(frozen=True)
class Prepared:
    """Data ready to train on: the check report and the tokenised examples of both sets."""

    report: CheckReport
    """Errors, warnings and statistics."""
    train: list[Example]
    """The training examples (empty when not kept)."""
    eval: list[Example] | None
    """The held-out examples, when an eval source was given."""


def prepare_data(
    train: str,
    tokenizer: PreTrainedTokenizerBase,
    options: DataOptions,
    *,
    eval_source: str | None = None,
    tokens_per_second: float | None = None,
    keep: bool = True,
) -> Prepared:
    """Read, parse and tokenise the training (and eval) data under the model's real tokenizer and template, in one
    streaming pass each; `keep=False` (a check) keeps statistics and the listed problems, not the examples."""
    report = CheckReport()
    sets = {"train": options.read(train, tokenizer, keep=keep)}
    if eval_source:
        sets["eval"] = options.read(eval_source, tokenizer, keep=keep)
    for name, (reader, tally, _) in sets.items():
        report.errors += reader.errors.listing()
        report.warnings += reader.warnings.listing()
        report.stats[name] = _token_stats(reader, tally)
    reader, tally, kept = sets["train"]
    too_few = _too_few_rows(reader, tally, options.max_length)
    report.errors += too_few
    report.error_count = sum(reader.errors.total for reader, _, _ in sets.values()) + len(too_few)
    if eval_source:
        report.warnings += overlap_warnings(reader, sets["eval"][0])
    epochs = auto_epochs(tally.rows)
    report.stats["training"] = {"epochs": epochs, "max_length": options.max_length, "tokens": tally.tokens * epochs}
    if tokens_per_second:
        report.stats["training"]["tokens_per_second"] = round(tokens_per_second, 1)
        report.stats["training"]["estimated_seconds"] = round(tally.tokens * epochs / tokens_per_second, 1)
    return Prepared(report, kept.examples, sets["eval"][2].examples if eval_source else None)


def check_data(
    train: str,
    tokenizer: PreTrainedTokenizerBase,
    options: DataOptions | None = None,
    *,
    eval_source: str | None = None,
    tokens_per_second: float | None = None,
    width: int | None = None,
) -> CheckReport:
    """Everything wrong with a data set, what training on it would cost (see `prepare_data`) and what "auto" would
    choose for a model of hidden size `width` (each method's learning rate, and the plan for LoRA with reasons)."""
    prepared = prepare_data(
        train,
        tokenizer,
        options or DataOptions(),
        eval_source=eval_source,
        tokens_per_second=tokens_per_second,
        keep=False,
    )
    training = prepared.report.stats["training"]
    train = prepared.report.stats["train"]
    objective = auto_objective(train["format"])
    rates = {method: auto_learning_rate(method, width, objective) for method in ("lora", "dora", "full")}
    training |= {"objective": objective, "learning_rates": rates}
    advice = advise(train["format"], train["rows"], training["tokens"])
    training["advice"] = advice.as_dict()
    training["plan"] = auto_plan(train["rows"], advice.method, width, objective)
    return prepared.report


def mix_estimate(sources: list[DataSource], reports: list[CheckReport]) -> list[dict[str, Any]]:
    """Each checked source's part of an epoch of the mix, in examples and (at its mean length) in tokens; a run's
    data-report.json gives the exact tokens of its first epoch."""
    rows = [max(0, int(r.stats["train"]["rows"])) for r in reports]
    weights = [float(s.weight) for s in sources if s.weight is not None] or None
    taken = shares(rows, weights)
    tokens = [take * r.stats["train"]["tokens"] / max(1, n) for take, r, n in zip(taken, reports, rows, strict=True)]
    total = max(1.0, sum(tokens))
    return [
        {
            "source": str(source),
            "examples": n,
            "examples_per_epoch": take,
            "tokens_per_epoch": round(t),
            "token_share": round(100 * t / total, 1),
        }
        for source, n, take, t in zip(sources, rows, taken, tokens, strict=True)
    ]
