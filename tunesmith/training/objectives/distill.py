"""distill: a teacher's answers with its top-k log-probs (`tunesmith distill collect --logprobs`); the student learns
the teacher's distribution at each answer token (top-k KL, training/top_k_kl.py) where the log-probs line up with
its own tokens, the answer token itself elsewhere."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from tunesmith.config import RunConfig
from tunesmith.errors import ConfigError
from tunesmith.tokenize.encode import Example
from tunesmith.tokenize.teacher import soften_all, teacher_logprobs
from tunesmith.training.data import RunData, load_examples
from tunesmith.training.objectives.base import Kind
from tunesmith.training.objectives.supervised import build_supervised


def teacher_targets(
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


def load_distill(config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> RunData:
    def targets(
        train: list[Example], held_out: list[Example] | None, report: dict[str, Any]
    ) -> tuple[list[Example], list[Example] | None]:
        return teacher_targets(config, tokenizer, train, held_out, report)

    return load_examples(config, tokenizer, mixes=False, answers=True, targets=targets)


DISTILL = Kind("distill", load_distill, build_supervised)
