"""The training loop. Reads top to bottom: batches in, loss, backward, clip, step, report, evaluate, save."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tunesmith.config import RunConfig
from tunesmith.errors import TrainingError
from tunesmith.tokenize.batches import collate
from tunesmith.tokenize.encode import Example
from tunesmith.train import faults
from tunesmith.train.checkpoint import TrainState, save_best, save_checkpoint
from tunesmith.train.events import Event, EventSink, StopFlag
from tunesmith.train.loss import mean_loss, supervised_loss
from tunesmith.train.memory import HeapTrimmer
from tunesmith.train.plan import Plan
from tunesmith.train.setup import Precision, learning_rate_at, set_learning_rate, trainable


@dataclass(frozen=True)
class LoopInputs:
    """What one run's loop works with; `config` and `plan` have every auto value filled in."""

    model: torch.nn.Module
    """The model (PEFT-wrapped for adapter runs), in train mode."""
    optimizer: torch.optim.Optimizer
    """AdamW over the trainable parameters."""
    config: RunConfig
    """The resolved settings."""
    plan: Plan
    """Micro-batches of every optimizer step, and the step counts."""
    train: Sequence[Example]
    """Training examples, indexed by the plan."""
    held_out: Sequence[Example]
    """Evaluation examples (may be empty)."""
    pad_id: int
    """Token id used for padding."""
    precision: Precision
    """Device and compute dtype."""
    sink: EventSink
    """Where progress goes."""
    stop: StopFlag
    """Set by a signal: save and stop after the current step."""
    run_dir: Path
    """The run folder."""


def held_out_loss(run: LoopInputs) -> float | None:
    """Mean loss per supervised token on the held-out examples."""
    return mean_loss(run.model, run.held_out, run.plan.eval_batches, run.pad_id, run.precision.autocast)


def _evaluate(run: LoopInputs, state: TrainState) -> bool:
    """Log the held-out loss; True when early stopping says to stop."""
    loss = held_out_loss(run)
    if loss is None:
        return False
    if state.best_eval_loss is None or loss < state.best_eval_loss:
        state.best_eval_loss, state.best_step, state.evals_without_improvement = loss, state.step, 0
        if run.config.final == "best":
            save_best(run.run_dir, run.model)
    else:
        state.evals_without_improvement += 1
    run.sink.emit(Event("eval", state.step, {"eval_loss": loss, "best_eval_loss": state.best_eval_loss}))
    patience = run.config.early_stopping
    return patience is not None and state.evals_without_improvement >= patience


def _evaluate_base(run: LoopInputs) -> None:
    """The held-out loss before the first step: where the loss curve starts, and the base model's loss in reports
    (a new adapter changes nothing until it is trained)."""
    loss = held_out_loss(run)
    if loss is not None:
        run.sink.emit(Event("eval", 0, {"eval_loss": loss}))


def _save(run: LoopInputs, state: TrainState) -> None:
    path = save_checkpoint(run.run_dir, run.model, run.optimizer, state, run.config.keep_checkpoints)
    run.sink.emit(Event("checkpoint", state.step, {"path": str(path)}))


def train_steps(run: LoopInputs, state: TrainState) -> str:
    """Run from state.step to the end of the plan; return why it stopped: finished, early_stopping or a signal."""
    plan, config = run.plan, run.config
    params = list(trainable(run.model).values())
    trimmer = HeapTrimmer()
    if state.step == 0:
        _evaluate_base(run)
    for step in range(state.step, plan.total_steps):
        started = time.perf_counter()
        epoch, window = plan.windows[step]
        lr = learning_rate_at(step, plan.total_steps, plan.warmup_steps, plan.learning_rate, config.schedule)
        set_learning_rate(run.optimizer, lr)
        batches = [collate([run.train[i] for i in indices], run.pad_id, config.max_length) for indices in window]
        supervised = max(1, sum(b.supervised for b in batches))
        loss_sum = 0.0
        for batch in batches:
            with run.precision.autocast():
                loss, _ = supervised_loss(run.model, batch, compiled=config.compile == "on")
            (loss / supervised).backward()
            loss_sum += loss.item()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
        if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
            raise TrainingError(
                f"step {step + 1}: the loss ({loss_sum / supervised}) or gradient norm ({grad_norm}) is not finite; "
                f"stopped before updating the weights",
                hint="lower the learning rate or check the data; the last checkpoint is kept",
            )
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        faults.reached("step", step + 1)
        trimmer.after_step()
        seconds = time.perf_counter() - started
        tokens = sum(b.real_tokens for b in batches)
        state.step, state.elapsed = step + 1, state.elapsed + seconds
        state.tokens, state.supervised_tokens = state.tokens + tokens, state.supervised_tokens + supervised
        values = {"epoch": epoch + 1, "loss": loss_sum / supervised, "lr": lr, "grad_norm": grad_norm}
        values |= {"tokens": state.tokens, "tokens_per_second": tokens / seconds, "elapsed": state.elapsed}
        run.sink.emit(Event("step", state.step, values))
        faults.reached("logged", state.step)
        last = state.step == plan.total_steps
        early = (state.step % plan.eval_every == 0 or last) and _evaluate(run, state)
        if state.step % plan.save_every == 0 or last or early or run.stop:
            _save(run, state)
        if early:
            return "early_stopping"
        if run.stop:
            return run.stop.reason or "stopped"
    return "finished"
