"""The training loop. Reads top to bottom: batches in, loss, backward, clip, step, report, evaluate, save."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tunesmith.config import RunConfig
from tunesmith.errors import TrainingError
from tunesmith.training import distributed, faults, sharding
from tunesmith.training.checkpoint import TrainState, rng_state, save_best, save_checkpoint, snapshot
from tunesmith.training.events import Event, EventSink, StopFlag
from tunesmith.training.memory import HeapTrimmer
from tunesmith.training.objectives import Objective, StepResult
from tunesmith.training.plan import Plan
from tunesmith.training.setup import learning_rate_at, set_learning_rate, trainable


@dataclass(frozen=True)
class LoopInputs:
    """What one run's loop works with; `config` and `plan` have every auto value filled in."""

    model: torch.nn.Module
    """The model (PEFT-wrapped for adapter runs), in train mode."""
    optimizer: torch.optim.Optimizer
    """AdamW (or bitsandbytes' 8-bit AdamW) over the trainable parameters."""
    config: RunConfig
    """The resolved settings."""
    plan: Plan
    """Micro-batches of every optimizer step (indexes into the objective's items), and the step counts."""
    objective: Objective
    """What a step learns and how the held-out set is measured (supervised, or preference pairs)."""
    sink: EventSink
    """Where progress goes."""
    stop: StopFlag
    """Set by a signal: save and stop after the current step."""
    run_dir: Path
    """The run folder."""
    scaler: torch.amp.GradScaler | None = None
    """fp16's gradient scaler (None in fp32 and bf16)."""


def _evaluate(run: LoopInputs, state: TrainState) -> bool:
    """Log the held-out loss; True when early stopping says to stop. Rank 0 evaluates while the others wait for
    its answer; a sharded model's weights are on every rank, so there every rank evaluates (rank 0 reports)."""
    here = distributed.is_main() or sharding.sharded(run.model)
    return distributed.broadcast(_evaluate_here(run, state) if here else False)


def _evaluate_here(run: LoopInputs, state: TrainState) -> bool:
    measured = run.objective.evaluate(run.model, run.plan.eval_batches)
    if measured is None:
        return False
    loss = measured["eval_loss"]
    if state.best_eval_loss is None or loss < state.best_eval_loss:
        state.best_eval_loss, state.best_step, state.evals_without_improvement = loss, state.step, 0
        if run.config.final == "best":
            save_best(run.run_dir, run.model)
    else:
        state.evals_without_improvement += 1
    run.sink.emit(Event("eval", state.step, {**measured, "best_eval_loss": state.best_eval_loss}))
    patience = run.config.early_stopping
    return patience is not None and state.evals_without_improvement >= patience


def _evaluate_base(run: LoopInputs) -> None:
    """The held-out loss before the first step: where the loss curve starts, and the base model's loss in reports
    (a new adapter changes nothing until it is trained)."""
    if not (distributed.is_main() or sharding.sharded(run.model)):
        return
    measured = run.objective.evaluate_start(run.model, run.plan.eval_batches)
    if measured is not None:
        run.sink.emit(Event("eval", 0, measured))


def _save(run: LoopInputs, state: TrainState) -> None:
    """Rank 0 writes the checkpoint, with every rank's RNG state; the others go on when it is in place."""
    state.scaler = run.scaler.state_dict() if run.scaler is not None else None
    rngs = distributed.gather(rng_state())
    taken = snapshot(run.model, run.optimizer)
    if taken is not None:
        path = save_checkpoint(run.run_dir, run.model, taken, state, run.config.keep_checkpoints, rngs)
        run.sink.emit(Event("checkpoint", state.step, {"path": str(path)}))
    distributed.barrier()


def _update(run: LoopInputs, params: list[torch.nn.Parameter], step: int, loss: float) -> tuple[float, bool]:
    """Clip and step: (the gradient norm, whether fp16's scaler skipped the step for an overflow). Under fp16 an
    overflowing step is skipped and the scale halved, as GradScaler does; anywhere else a loss or gradient that is
    not finite stops the run before the weights change."""
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, run.config.max_grad_norm))
    if run.scaler is not None and math.isfinite(loss):
        scale = run.scaler.get_scale()
        run.scaler.step(run.optimizer)  # skipped when the unscaled gradients hold inf or nan
        run.scaler.update()
        return grad_norm, run.scaler.get_scale() < scale
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise TrainingError(
            f"step {step + 1}: the loss ({loss}) or gradient norm ({grad_norm}) is not finite; "
            f"stopped before updating the weights",
            hint="lower the learning rate or check the data; the last checkpoint is kept",
        )
    run.optimizer.step()
    return grad_norm, False


def _backward(run: LoopInputs, window: list[list[int]]) -> StepResult:
    """Forward, loss and backward of this rank's share of the step's micro-batches (the whole step on one
    process); gradients and the step's numbers come out summed over the ranks."""
    try:
        return run.objective.backward(run.model, distributed.share(window))
    except (RuntimeError, torch.distributed.DistError) as exc:
        if distributed.started() and distributed.lost_peer(exc):
            raise distributed.peer_lost(exc) from None
        raise


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
        result = _backward(run, window)
        grad_norm, skipped = _update(run, params, step, result.loss)
        run.optimizer.zero_grad(set_to_none=True)
        faults.reached("step", step + 1)
        trimmer.after_step()
        seconds = time.perf_counter() - started
        state.step, state.elapsed = step + 1, state.elapsed + seconds
        state.tokens, state.supervised_tokens = (
            state.tokens + result.tokens,
            state.supervised_tokens + result.supervised,
        )
        norm = grad_norm if math.isfinite(grad_norm) else None  # a skipped fp16 step: JSON has no inf
        values = {"epoch": epoch + 1, "loss": result.loss, "lr": lr, "grad_norm": norm, **result.metrics}
        if run.scaler is not None:
            values |= {"loss_scale": run.scaler.get_scale(), "skipped": skipped}
        values |= {"tokens": state.tokens, "tokens_per_second": result.tokens / seconds, "elapsed": state.elapsed}
        run.sink.emit(Event("step", state.step, values))
        faults.reached("logged", state.step)
        last = state.step == plan.total_steps
        early = plan.evaluates_after(state.step) and _evaluate(run, state)
        stop = distributed.any_rank(bool(run.stop))
        if state.step % plan.save_every == 0 or last or early or stop:
            _save(run, state)
        if early:
            return "early_stopping"
        if stop:
            return run.stop.reason or "stopped"
    return "finished"
