"""The examples a run trains and evaluates on: checked, tokenised, and split when no eval data is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from tunesmith.check import DataOptions, Prepared, prepare_data
from tunesmith.config import SOURCE_OBJECTIVES, DataSource, RunConfig
from tunesmith.data.schema import PreferencePair
from tunesmith.data.validate import RecordReader, data_error
from tunesmith.errors import ConfigError
from tunesmith.runs import HELD_OUT_TEXTS
from tunesmith.tokenize.encode import Example
from tunesmith.tokenize.mix import Mix, shares
from tunesmith.tokenize.pairs import PairExample, encode_pairs
from tunesmith.tokenize.teacher import soften_all, teacher_logprobs
from tunesmith.training.plan import held_out_split

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
    """Examples (pairs for objective dpo) to train on; of a mix, every source's, source after source."""
    held_out: list[Item]
    """Examples (pairs) for the held-out loss (from the eval data, or split from each training source)."""
    report: dict[str, Any]
    """The data check report, plus where the held-out examples came from (and a mix's shares in tokens)."""
    held_out_texts: list[str] | None = None
    """The held-out windows as text, when they were split from plain text (written to HELD_OUT_TEXTS)."""
    mix: Mix | None = None
    """How each epoch draws from the sources (a mix's); None: every training example once."""

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def _objective_of(config: RunConfig, source: DataSource) -> str:
    return source.objective or config.objective


def _check_sources(config: RunConfig) -> None:
    """A mix learns by cross-entropy (sft and text sources); dpo and distill read one source of their own kind."""
    if config.objective in SOURCE_OBJECTIVES:
        return
    if len(config.data) > 1 or config.data[0].objective not in (None, config.objective):
        raise ConfigError(
            f"objective {config.objective} trains on one source of its own kind; a mix of sources or a source's "
            "own objective needs objective sft or text",
            hint="give one --data, or run the mix and the preference tuning as stages (see docs/guide.md)",
        )


def _prepare(
    config: RunConfig, tokenizer: PreTrainedTokenizerBase, source: DataSource, eval_source: str | None
) -> Prepared:
    """One source read and tokenised as its objective learns it; data errors stop the run here."""
    objective = _objective_of(config, source)
    options = DataOptions.of_source(
        source, objective, format=config.format, max_length=config.max_length, supervise=config.supervise
    )
    prepared = prepare_data(source.path, tokenizer, options, eval_source=eval_source)
    if prepared.report.errors:
        raise data_error(prepared.report.errors, prepared.report.error_count, source.path)
    if objective in ("sft", "distill") and prepared.report.stats["train"]["format"] == "text":
        raise ConfigError(
            f"{source.path}: plain text has no answers to learn with objective {objective}",
            hint="use --objective text (or path@text in a mix) for continued pre-training, or give conversations",
        )
    return prepared


def load_run_data(config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> RunData:
    """Read and tokenise every source; any data error stops the run before the model is loaded."""
    _check_sources(config)
    first = _prepare(config, tokenizer, config.data[0], config.eval_data)
    report = first.report.as_dict()
    if config.objective == "dpo":
        return _pair_data(config, tokenizer, report)
    parts = [list(first.train)] + [list(_prepare(config, tokenizer, s, None).train) for s in config.data[1:]]
    given = first.eval
    if config.objective == "distill":
        parts[0], given = _teacher_targets(config, tokenizer, parts[0], given, report)
    texts = None
    if given is None:
        parts, given, texts = _hold_out(config, tokenizer, parts, first, report)
    mix = None
    if len(parts) > 1:
        sizes = tuple(len(part) for part in parts)
        weights = [float(s.weight) for s in config.data if s.weight is not None] or None
        mix = Mix(sizes, shares(sizes, weights))
        report["mix"] = mix_report(config, parts, mix)
    pool = [e for part in parts for e in part]
    return RunData(tokenizer, pool, list(given), report, texts, mix)


def _hold_out(
    config: RunConfig,
    tokenizer: PreTrainedTokenizerBase,
    parts: list[list[Example]],
    first: Prepared,
    report: dict[str, Any],
) -> tuple[list[list[Example]], list[Example], list[str] | None]:
    """Each source's held-out share (10%, see held_out_split) and what is left to train on; where they came from
    goes into the report (the first source's as before mixes existed, the others' under "sources")."""
    kept, held = [], []
    for part in parts:
        chosen = set(held_out_split(len(part), config.seed).tolist())
        kept.append([e for i, e in enumerate(part) if i not in chosen])
        held.append([e for i, e in enumerate(part) if i in chosen])
    texts = None
    if held[0] and first.report.stats["train"]["format"] == "text":
        texts = [tokenizer.decode(e.input_ids, skip_special_tokens=True) for e in held[0]]
        report["held_out"] = {"source": HELD_OUT_TEXTS, "windows": len(held[0])}
    else:
        report["held_out"] = {"source": config.source, "lines": [e.line for e in held[0]]}
    if len(parts) > 1:
        report["held_out"]["sources"] = [
            {"source": s.path, "examples": len(h), "lines": [e.line for e in h]} for s, h in zip(config.data, held)
        ]
    return kept, [e for h in held for e in h], texts


def mix_report(config: RunConfig, parts: list[list[Example]], mix: Mix) -> list[dict[str, Any]]:
    """Each source's part of an epoch, in examples and in tokens (those the first epoch draws)."""
    lengths = [len(e.input_ids) for part in parts for e in part]
    picked = mix.epoch(config.seed, 0)
    tokens = [0] * len(parts)
    owner = [i for i, size in enumerate(mix.sizes) for _ in range(size)]
    for index in picked.tolist():
        tokens[owner[index]] += lengths[index]
    total = max(1, sum(tokens))
    return [
        {
            "source": s.path,
            "objective": _objective_of(config, s),
            "weight": s.weight,
            "examples": size,
            "examples_per_epoch": take,
            "tokens_per_epoch": t,
            "token_share": round(100 * t / total, 1),
        }
        for s, size, take, t in zip(config.data, mix.sizes, mix.per_epoch, tokens, strict=True)
    ]


def _teacher_targets(
    config: RunConfig,
    tokenizer: PreTrainedTokenizerBase,
    train: list[Example],
    held_out: list[Example] | None,
    report: dict[str, Any],
) -> tuple[list[Example], list[Example] | None]:
    """Training (and eval) examples with the teacher's top-k targets; an error when no answer lines up."""
    train, tally = soften_all(train, teacher_logprobs(config.source), tokenizer)
    report["distill"] = tally.as_dict()
    if tally.aligned == 0:
        why = "has no teacher log-probs" if tally.answers == 0 else "has log-probs of another tokenizer"
        raise ConfigError(
            f"{config.source}: objective distill needs the teacher's top-k log-probs of the student's tokens, and the "
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
    pairs = _read_pairs(config.source, config, tokenizer)
    if config.eval_data:
        return RunData(tokenizer, list(pairs), list(_read_pairs(config.eval_data, config, tokenizer)), report)
    chosen = set(held_out_split(len(pairs), config.seed).tolist())
    report["held_out"] = {"source": config.source, "lines": [p.line for i, p in enumerate(pairs) if i in chosen]}
    held_out: list[Item] = [p for i, p in enumerate(pairs) if i in chosen]
    return RunData(tokenizer, [p for i, p in enumerate(pairs) if i not in chosen], held_out, report)
