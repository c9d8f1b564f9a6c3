"""What a run learns: one unit per objective, each owning its data kind, batches, loss, metrics and held-out
evaluation (`base.Kind`). `OBJECTIVES` maps RunConfig.objective to its unit; a new objective is one file here and
its entry below (its name in RunConfig.objective, and in auto.OBJECTIVE_RULES if "auto" treats it differently)."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from tunesmith.config import RunConfig
from tunesmith.training.data import RunData
from tunesmith.training.objectives.base import Kind, Objective, Setup, StepResult
from tunesmith.training.objectives.distill import DISTILL
from tunesmith.training.objectives.grpo import GRPO_KIND
from tunesmith.training.objectives.preference import DPO
from tunesmith.training.objectives.supervised import SFT, TEXT

OBJECTIVES: dict[str, Kind] = {kind.name: kind for kind in (SFT, TEXT, DPO, DISTILL, GRPO_KIND)}
"""Every objective by name."""

__all__ = ["OBJECTIVES", "Kind", "Objective", "Setup", "StepResult", "load_run_data"]


def load_run_data(config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> RunData:
    """The run's data, read as its objective learns it."""
    return OBJECTIVES[config.objective].load(config, tokenizer)
