"""The examples a run trains and evaluates on: checked, tokenised, and split when no eval data is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from tunesmith.check import DataOptions, prepare_data
from tunesmith.config import RunConfig
from tunesmith.data.validate import data_error
from tunesmith.errors import ConfigError
from tunesmith.runs import HELD_OUT_TEXTS
from tunesmith.tokenize.encode import Example
from tunesmith.train.plan import held_out_split


@dataclass(frozen=True)
class RunData:
    """Tokenised examples and the data report of a run."""

    tokenizer: PreTrainedTokenizerBase
    """The model's tokenizer, with its chat template."""
    train: list[Example]
    """Examples to train on."""
    held_out: list[Example]
    """Examples for the held-out loss (from the eval data, or split from the training data)."""
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
    if config.objective == "sft" and prepared.report.stats["train"]["format"] == "text":
        raise ConfigError(
            f"{config.data}: plain text has no answers to learn with objective sft",
            hint="use --objective text for continued pre-training, or give conversations",
        )
    report = prepared.report.as_dict()
    train = prepared.train
    if prepared.eval is not None:
        return RunData(tokenizer, train, prepared.eval, report)
    chosen = set(held_out_split(len(train), config.seed).tolist())
    held_out = [e for i, e in enumerate(train) if i in chosen]
    texts = None
    if held_out and prepared.report.stats["train"]["format"] == "text":
        texts = [tokenizer.decode(e.input_ids, skip_special_tokens=True) for e in held_out]
        report["held_out"] = {"source": HELD_OUT_TEXTS, "windows": len(held_out)}
    else:
        report["held_out"] = {"source": config.data, "lines": [e.line for e in held_out]}
    return RunData(tokenizer, [e for i, e in enumerate(train) if i not in chosen], held_out, report, texts)
