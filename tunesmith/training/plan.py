"""Fill in the "auto" settings from the data, and lay out the micro-batches of every optimizer step."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from tunesmith.auto import (
    AUTO_COMPILE_MIN_TOKENS,
    AUTO_EVAL_SHARE,
    AUTO_EVALS_PER_RUN,
    AUTO_WARMUP_FRACTION,
    auto_batch_tokens,
    auto_epochs,
    auto_learning_rate,
)
from tunesmith.config import RunConfig
from tunesmith.models.hardware import free_memory
from tunesmith.models.load import model_config
from tunesmith.tokenize.batches import epoch_batches, ordered_batches
from tunesmith.tokenize.mix import Mix
from tunesmith.training.fit import Fit, Shape, choose_fit
from tunesmith.training.precision import choose_precision
from tunesmith.training.setup import compiler_available

Window = tuple[int, list[list[int]]]


@dataclass(frozen=True)
class PlanFacts:
    """What "auto" depends on besides the settings and the data: this machine and the model, measured once."""

    device: str
    """Where the run computes (cpu, cuda)."""
    precision: str
    """fp32, or bf16 / fp16 under autocast."""
    width: int | None
    """The model's hidden size (for the automatic learning rate)."""
    compiler: bool
    """torch.compile can run here (a C++ compiler or CUDA)."""
    shape: Shape | None = None
    """The model's sizes, for the memory plan (None: plan no memory)."""
    available: int | None = None
    """Bytes free on the device for the run (None: unknown)."""

    @classmethod
    def measure(cls, config: RunConfig) -> PlanFacts:
        precision = choose_precision(config.device, config.precision)
        model = model_config(config.model, trust_remote_code=config.trust_remote_code)
        width = getattr(model, "hidden_size", None)
        try:
            shape: Shape | None = Shape.of(model)
        except (AttributeError, TypeError):  # a config without the usual decoder sizes: no memory plan
            shape = None
        device = str(precision.device)
        return cls(device, precision.name, width, compiler_available(), shape, free_memory(precision.device))

    def fit(self, config: RunConfig) -> Fit | None:
        """The memory plan of the run's settings here (batch tokens and checkpointing as given, or chosen)."""
        if self.shape is None:
            return None
        kind = torch.device(self.device).type
        return choose_fit(
            self.shape,
            method=config.method,
            precision=self.precision,
            available=self.available,
            device=kind,
            quantize=config.quantize,
            largest=auto_batch_tokens(kind, config.objective),
            batch_tokens=None if config.batch_tokens == "auto" else int(config.batch_tokens),
            checkpointing=None if config.activation_checkpointing == "auto" else bool(config.activation_checkpointing),
            rank=config.lora.rank,
            optimizer=config.optimizer,
        )


@dataclass(frozen=True)
class Plan:
    """Every optimizer step's micro-batches, fixed before training starts: a pure function of the settings, the
    examples' lengths and the machine's facts."""

    windows: list[Window]
    """(epoch, micro-batches as example indices) for each optimizer step."""
    eval_batches: list[list[int]]
    """Held-out example indices per evaluation batch."""
    total_steps: int
    """Optimizer steps in the run."""
    warmup_steps: int
    """Steps of linear warm-up."""
    learning_rate: float
    """Peak learning rate."""
    eval_every: int
    """Steps between evaluations."""
    save_every: int
    """Steps between checkpoints."""

    def evaluates_after(self, step: int) -> bool:
        """Whether a held-out evaluation follows optimizer step `step` (counted from 1): every eval_every steps and
        after the last, whose evaluation stands in for a periodic one due less than half an interval before it in the
        same epoch (epochs of 59, 58 and 59 steps, evaluated every 58: steps 58, 116 and 176, not 174 as well)."""
        if step == self.total_steps:
            return True
        if step % self.eval_every:
            return False
        near_end = 2 * (self.total_steps - step) < self.eval_every
        return not (near_end and self.windows[step - 1][0] == self.windows[-1][0])


def resolve_plan(
    config: RunConfig,
    train_lengths: np.ndarray,
    eval_lengths: np.ndarray,
    mix: Mix | None = None,
    facts: PlanFacts | None = None,
) -> tuple[RunConfig, Plan]:
    """The config with every auto value filled in, and the plan it implies (each epoch drawn from `mix`, when the
    training examples come from a weighted mix of sources); `facts` measured here when not given."""
    facts = facts or PlanFacts.measure(config)
    mix = mix or Mix((len(train_lengths),), (len(train_lengths),))
    epochs = config.epochs if config.epochs != "auto" else auto_epochs(sum(mix.per_epoch))
    budget, checkpointing = _memory_settings(config, facts)
    per_batch = config.reinforcement.prompts_per_step if config.objective == "grpo" else int(budget)
    windows: list[Window] = []
    for epoch in range(epochs):
        batches = _epoch(train_lengths, mix, per_batch, config.seed, epoch)
        windows += [(epoch, batches[i : i + config.grad_accum]) for i in range(0, len(batches), config.grad_accum)]
    total = min(len(windows), config.max_steps or len(windows))
    warmup = config.warmup_steps
    if warmup == "auto":
        warmup = max(1, round(total * AUTO_WARMUP_FRACTION))
    trained = sum(int(train_lengths[indices].sum()) for _, window in windows[:total] for indices in window)
    every = config.eval_every
    if every == "auto":
        every = _auto_eval_every(windows[:total], trained, int(eval_lengths.sum()))
    named = {"auto": every, "epoch": max(1, round(len(windows) / epochs))}
    save_every = named.get(str(config.save_every), config.save_every)
    lr = config.learning_rate
    if lr == "auto":
        lr = auto_learning_rate(config.method, facts.width, config.objective)
    threads = config.threads if config.threads != "auto" else torch.get_num_threads()
    resolved = config.model_copy(
        update={
            "epochs": epochs,
            "batch_tokens": budget,
            "warmup_steps": warmup,
            "eval_every": every,
            "save_every": save_every,
            "learning_rate": lr,
            "threads": threads,
            "device": facts.device,
            "precision": facts.precision,
            "activation_checkpointing": checkpointing,
            "compile": _compile(config, trained, facts.compiler, checkpointing),
        }
    )
    plan = Plan(windows[:total], ordered_batches(eval_lengths, per_batch), total, warmup, lr, every, save_every)
    return resolved, plan


def _auto_eval_every(windows: list[Window], trained_tokens: int, eval_tokens: int) -> int:
    """Steps between held-out evaluations: as many as AUTO_EVAL_SHARE of the training tokens pays for, at least one
    an epoch, at most AUTO_EVALS_PER_RUN. With at most that many epochs the interval is also at most the shortest
    finished epoch, which puts an evaluation in every epoch however unequal their step counts: any run of that many
    consecutive steps holds a multiple of it, and the last epoch ends with the run's own evaluation. (With more
    epochs than evaluations no epoch can be promised one.)"""
    total = len(windows)
    affordable = int(AUTO_EVAL_SHARE * trained_tokens / max(1, eval_tokens))
    steps_per_epoch = Counter(epoch for epoch, _ in windows)
    every = math.ceil(total / min(AUTO_EVALS_PER_RUN, max(1, len(steps_per_epoch), affordable)))
    if len(steps_per_epoch) > AUTO_EVALS_PER_RUN:
        return every
    last = windows[-1][0] if windows else 0
    finished = [count for epoch, count in steps_per_epoch.items() if epoch != last]
    return min([every, *finished])


def _epoch(lengths: np.ndarray, mix: Mix, budget: int, seed: int, epoch: int) -> list[list[int]]:
    """An epoch's micro-batches as pool indices: the whole pool, or the examples the mix draws for it."""
    if mix.whole:
        return epoch_batches(lengths, budget, seed, epoch)
    picked = mix.epoch(seed, epoch)
    return [[int(picked[j]) for j in batch] for batch in epoch_batches(lengths[picked], budget, seed, epoch)]


def _memory_settings(config: RunConfig, facts: PlanFacts) -> tuple[int, bool]:
    """(batch tokens, activation checkpointing): as given, else the largest batch up to the device's default that
    the memory plan fits, without checkpointing where one does (the default batch on a machine with room)."""
    fit = facts.fit(config)
    if fit is not None:
        return fit.batch_tokens, fit.checkpointing
    budget = config.batch_tokens
    if budget == "auto":
        budget = auto_batch_tokens(torch.device(facts.device).type, config.objective)
    return int(budget), config.activation_checkpointing is True


def _compile(config: RunConfig, trained_tokens: int, compiler: bool, checkpointing: bool) -> str:
    """on or off: auto compiles when the run is long enough to pay for compiling and a C++ compiler is there."""
    if config.compile != "auto":
        return config.compile
    if checkpointing or config.objective == "grpo":  # grpo generates too: compiled layers would recompile per shape
        return "off"
    return "on" if trained_tokens >= AUTO_COMPILE_MIN_TOKENS and compiler else "off"


def held_out_split(count: int, seed: int) -> np.ndarray:
    """Indexes of the examples to hold out when no eval data is given: 10%, at most 200, none below 20."""
    if count < 20:
        return np.array([], dtype=np.int64)
    size = min(200, round(count * 0.1))
    return np.sort(np.random.default_rng([seed, 7]).permutation(count)[:size])
