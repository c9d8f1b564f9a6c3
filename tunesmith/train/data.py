"""The examples a run trains and evaluates on: checked, tokenised, and split when no eval data is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from tunesmith.check import DataOptions, prepare_data
from tunesmith.config import RunConfig
from tunesmith.data.schema import PreferencePair
from tunesmith.data.validate import RecordReader, data_error
from tunesmith.errors import ConfigError
from tunesmith.runs import HELD_OUT_TEXTS
from tunesmith.tokenize.encode import Example
from tunesmith.tokenize.pairs import PairExample, encode_pairs
from tunesmith.tokenize.teacher import soften_all, teacher_logprobs
from tunesmith.train.plan import held_out_split

Item = Example | PairExample
"""What a run trains on: an example, or a preference pair (objective dpo)."""


def item_length(item: Item) -> int:
    """Tokens an item puts into a batch, for the token budget: a pair is its prompt once and both answers."""
    if isinstance(item, PairExample):
        return item.length
    return len(item.input_ids)


@dataclass(frozen=True)
class RunData:
    """Tokenised examples and the data report of a run."""

    tokenizer: PreTrainedTokenizerBase
    """The model's tokenizer, with its chat template."""
    train: list[Item]
    """Examples (pairs for objective dpo) to train on."""
    held_out: list[Item]
    """Examples (pairs) for the held-out loss (from the eval data, or split from the training data)."""
    report: dict[str, Any]
    """The data check report, plus where the held-out examples came from."""
    held_out_texts: list[str] | None = None
    """The held-out windows as text, when they were split from plain text (written to HELD_OUT_TEXTS)."""

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def load_run_data(config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> RunData:
    """Read and tokenise; any data error stops the run before the model is loaded."""
    options = DataOptions(
        format=config.format,
        max_length=config.max_length,
        supervise="all" if config.objective == "text" else config.supervise,
    )
    prepared = prepare_data(config.data, tokenizer, options, eval_source=config.eval_data)
    if prepared.report.errors:
        raise data_error(prepared.report.errors, prepared.report.error_count, config.data)
    if config.objective in ("sft", "distill") and prepared.report.stats["train"]["format"] == "text":
        raise ConfigError(
            f"{config.data}: plain text has no answers to learn with objective {config.objective}",
            hint="use --objective text for continued pre-training, or give conversations",
        )
    report = prepared.report.as_dict()
    if config.objective == "dpo":
        return _pair_data(config, tokenizer, report)
    train, given = prepared.train, prepared.eval
    if config.objective == "distill":
        train, given = _teacher_targets(config, tokenizer, train, given, report)
    if given is not None:
        return RunData(tokenizer, list(train), list(given), report)
    chosen = set(held_out_split(len(train), config.seed).tolist())
    held_out = [e for i, e in enumerate(train) if i in chosen]
    texts = None
    if held_out and prepared.report.stats["train"]["format"] == "text":
        texts = [tokenizer.decode(e.input_ids, skip_special_tokens=True) for e in held_out]
        report["held_out"] = {"source": HELD_OUT_TEXTS, "windows": len(held_out)}
    else:
        report["held_out"] = {"source": config.data, "lines": [e.line for e in held_out]}
    return RunData(tokenizer, [e for i, e in enumerate(train) if i not in chosen], held_out, report, texts)


def _teacher_targets(
    config: RunConfig,
    tokenizer: PreTrainedTokenizerBase,
    train: list[Example],
    held_out: list[Example] | None,
    report: dict[str, Any],
) -> tuple[list[Example], list[Example] | None]:
    """Training (and eval) examples with the teacher's top-k targets; an error when no answer lines up."""
    train, tally = soften_all(train, teacher_logprobs(config.data), tokenizer)
    report["distill"] = tally.as_dict()
    if tally.aligned == 0:
        why = "has no teacher log-probs" if tally.answers == 0 else "has log-probs of another tokenizer"
        raise ConfigError(
            f"{config.data}: objective distill needs the teacher's top-k log-probs of the student's tokens, and the "
            f"file {why}",
            hint="collect with `tunesmith distill collect --logprobs 20` from a teacher that shares the student's "
            "tokenizer, or train on the answers with --objective sft",
        )
    if held_out is None:
        return list(train), None
    return list(train), list(soften_all(held_out, teacher_logprobs(str(config.eval_data)), tokenizer)[0])


def _read_pairs(source: str, config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> list[PairExample]:
    records = [r for chunk in RecordReader(source, format=config.format).chunks() for r in chunk]
    if not all(isinstance(r, PreferencePair) for _, r in records):
        raise ConfigError(
            f"{source}: objective dpo needs preference pairs ({{prompt, chosen, rejected}} or OpenAI's "
            f"{{input, preferred_output, non_preferred_output}})",
            hint="give a preference file, or train on the answers with --objective sft",
        )
    return encode_pairs(records, tokenizer, max_length=config.max_length).pairs  # type: ignore[arg-type]


def _pair_data(config: RunConfig, tokenizer: PreTrainedTokenizerBase, report: dict[str, Any]) -> RunData:
    """Preference pairs, and the held-out ones (the eval data, or 10% of the training pairs)."""
    pairs = _read_pairs(config.data, config, tokenizer)
    if config.eval_data:
        return RunData(tokenizer, list(pairs), list(_read_pairs(config.eval_data, config, tokenizer)), report)
    chosen = set(held_out_split(len(pairs), config.seed).tolist())
    report["held_out"] = {"source": config.data, "lines": [p.line for i, p in enumerate(pairs) if i in chosen]}
    held_out: list[Item] = [p for i, p in enumerate(pairs) if i in chosen]
    return RunData(tokenizer, [p for i, p in enumerate(pairs) if i not in chosen], held_out, report)
