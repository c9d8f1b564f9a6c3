"""What every objective is made of: the step it learns (`Objective`), its numbers (`StepResult`), and its unit in the
registry (`Kind`: the data it reads and the step it builds)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.config import PreferenceSettings, ReinforcementSettings, RunConfig
from tunesmith.runs import RunFolder
from tunesmith.training.data import RunData

Autocast = Callable[[], AbstractContextManager[object]]
Backward = Callable[[torch.Tensor], None]


@dataclass
class StepResult:
    """One optimizer step's numbers."""

    loss: float
    """Mean loss of the step (per supervised token, or per pair)."""
    tokens: int
    """Real tokens that went through the model."""
    supervised: int
    """Tokens learned (sft) or pairs (dpo): what the loss is averaged over."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Objective-specific numbers for metrics.jsonl (rewards of preference pairs)."""


class Objective(Protocol):
    """What a step learns; the loop does the rest (clip, step, report, evaluate, save) the same way for every one."""

    def backward(self, model: torch.nn.Module, items: list[list[int]]) -> StepResult:
        """Forward and backward of one step's micro-batches (indexes into the training items)."""
        ...

    def evaluate(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        """eval_loss (and more) on the held-out items, in eval mode without gradients; None without any."""
        ...

    def evaluate_start(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        """`evaluate` before the first step."""
        ...


@dataclass(frozen=True)
class Setup:
    """What an objective's step is built from: the run's data and model, and the settings objectives use."""

    data: RunData
    """The tokenised training and held-out items."""
    model: torch.nn.Module
    """The model before its first step (or before a checkpoint is restored into it)."""
    autocast: Autocast
    """The run's precision context."""
    backward: Backward
    """Backpropagates a loss (scaled under fp16)."""
    eval_batches: list[list[int]]
    """The held-out batches every evaluation uses."""
    batch_tokens: int
    """The run's micro-batch token budget."""
    max_length: int
    """The longest row."""
    compiled: bool
    """Decoder layers are compiled (the loss takes the matching path)."""
    preference: PreferenceSettings
    """The settings of preference objectives."""
    run: RunFolder
    """The run folder (for what an objective computes once and keeps)."""
    reinforcement: ReinforcementSettings = field(default_factory=ReinforcementSettings)
    """The settings of objective grpo."""
    full_weights: bool = False
    """Every weight trains (method full): no adapter to switch off for a reference."""


@dataclass(frozen=True)
class Kind:
    """One objective's unit in the registry: the value of RunConfig.objective, the data it reads, the step it
    builds."""

    name: str
    """RunConfig.objective."""
    load: Callable[[RunConfig, PreTrainedTokenizerBase], RunData]
    """Read, check and tokenise the run's data as this objective learns it (its data kind)."""
    build: Callable[[Setup], Objective]
    """The step: loss, metrics and held-out evaluation."""
    mixes: bool = False
    """A mix of sources may train with it (they share batches: cross-entropy on tokens)."""
