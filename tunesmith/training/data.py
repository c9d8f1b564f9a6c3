"""The examples a run trains and evaluates on: checked, tokenised, and split when no eval data is given.

The conversations and texts that token-learning objectives read (sft, text, distill), mixes of sources included;
an objective with another data kind reads it in its own unit (objectives/preference.py reads pairs), with the
helpers here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from tunesmith.check import DataOptions, Prepared, prepare_data
from tunesmith.config import DataSource, RunConfig
from tunesmith.data.validate import data_error
from tunesmith.errors import ConfigError
from tunesmith.runs import HELD_OUT_TEXTS
from tunesmith.tokenize.encode import Example
from tunesmith.tokenize.mix import Mix, shares
from tunesmith.tokenize.pairs import PairExample
from tunesmith.training.plan import held_out_split


@dataclass(frozen=True)
class PromptItem:
    """A prompt that objective grpo answers and grades: its tokens and its data line."""

    line: int
    """Its line in the data file."""
    prompt_ids: list[int]
    """The prompt as the chat template renders it, up to where the answer starts."""
    item: dict[str, Any]
    """The whole data line: the graders' {{item.*}} namespace."""


Item = Example | PairExample | PromptItem
"""What a run trains on: an example, a preference pair (objective dpo), or a prompt (objective grpo)."""
Targets = Callable[[list[Example], list[Example] | None, dict[str, Any]], tuple[list[Example], list[Example] | None]]
"""An objective's change to the first source's training and given held-out examples before anything is held out
(distill: the teacher's top-k targets), noting what it did in the report."""


def item_length(item: Item) -> int:
    """Tokens an item puts into a batch, for the token budget: a pair is its prompt once and both answers."""
    if isinstance(item, PairExample):
        return item.length
    if isinstance(item, PromptItem):
        return 1  # grpo batches count prompts (reinforcement.prompts_per_step), not tokens
    return len(item.input_ids)


def item_lengths(items: Sequence[Item]) -> np.ndarray:
    """`item_length` of every item, for the batch layout."""
    return np.array([item_length(item) for item in items], dtype=np.int64)


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


def check_sources(config: RunConfig, mixes: bool) -> None:
    """A mix learns by cross-entropy (sft and text sources); other objectives read one source of their own kind."""
    if mixes:
        return
    if len(config.data) > 1 or config.data[0].objective not in (None, config.objective):
        raise ConfigError(
            f"objective {config.objective} trains on one source of its own kind; a mix of sources or a source's "
            "own objective needs objective sft or text",
            hint="give one --data, or run the mix and the preference tuning as stages (see docs/guide.md)",
        )


def prepare_source(
    config: RunConfig, tokenizer: PreTrainedTokenizerBase, source: DataSource, eval_source: str | None, answers: bool
) -> Prepared:
    """One source read and tokenised as its objective learns it; data errors stop the run here, and plain text where
    the objective learns `answers`."""
    objective = _objective_of(config, source)
    options = DataOptions.of_source(
        source, objective, format=config.format, max_length=config.max_length, supervise=config.supervise
    )
    prepared = prepare_data(source.path, tokenizer, options, eval_source=eval_source)
    if prepared.report.errors:
        raise data_error(prepared.report.errors, prepared.report.error_count, source.path)
    learns_answers = answers if source.objective is None else source.objective != "text"
    if learns_answers and prepared.report.stats["train"]["format"] == "text":
        raise ConfigError(
            f"{source.path}: plain text has no answers to learn with objective {objective}",
            hint="use --objective text (or path@text in a mix) for continued pre-training, or give conversations",
        )
    return prepared


def load_examples(
    config: RunConfig, tokenizer: PreTrainedTokenizerBase, *, mixes: bool, answers: bool, targets: Targets | None = None
) -> RunData:
    """Read and tokenise every source (`answers`: the objective learns answers, so plain text is refused unless a
    source says @text); any data error stops the run before the model is loaded."""
    check_sources(config, mixes)
    first = prepare_source(config, tokenizer, config.data[0], config.eval_data, answers)
    report = first.report.as_dict()
    rest = [list(prepare_source(config, tokenizer, s, None, answers).train) for s in config.data[1:]]
    parts = [list(first.train), *rest]
    given = first.eval
    if targets is not None:
        parts[0], given = targets(parts[0], None if given is None else list(given), report)
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
    goes into the report (the first source's at the top, where one-source runs have it; the others' under
    "sources")."""
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
