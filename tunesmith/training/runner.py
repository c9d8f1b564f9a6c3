"""A training run from its folder: data, resolved config, manifest, the loop, checkpoints and final/.

`train` starts a run in an empty folder; `resume` continues one from its latest checkpoint, exactly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tunesmith import paths
from tunesmith.config import RunConfig, build_config, merge_settings, read_config_file
from tunesmith.errors import ConfigError, TrainingError
from tunesmith.models.load import load_tokenizer
from tunesmith.runs import RunFolder, write_run_file
from tunesmith.training import distributed, faults, sharding
from tunesmith.training.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_best,
    remove_partial_writes,
    restore_training,
    restore_weights,
)
from tunesmith.training.data import RunData, item_lengths
from tunesmith.training.events import Broadcast, Event, EventSink, MetricsFile, StopFlag
from tunesmith.training.loop import LoopInputs, train_steps
from tunesmith.training.loss import causal_lm
from tunesmith.training.manifest import manifest
from tunesmith.training.objectives import OBJECTIVES, Objective, Setup, load_run_data
from tunesmith.training.plan import Plan, PlanFacts, resolve_plan
from tunesmith.training.precision import Precision, backward, check_optimizer, check_quantize, choose_precision
from tunesmith.training.setup import ModelSpec, build_model, build_optimizer, compiler_settings
from tunesmith.training.stages import (
    StageEvents,
    clear_unstarted,
    finish_stages,
    merge_metrics,
    stage_config,
    stage_folders,
    start_stages,
    unfinished,
    write_manifest,
)
from tunesmith.training.tracking import trackers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """How a run ended."""

    run_dir: Path
    """The run folder."""
    reason: str
    """finished, early_stopping, or the signal that stopped it."""
    final: Path | None
    """final/ when the run finished (or stopped early), None when it was interrupted."""
    state: TrainState
    """Steps, tokens, time and the best held-out loss."""
    kept_step: int | None = None
    """The step whose weights final/ holds (config `final`), when there is a final/."""


class _NullSink:
    def emit(self, event: Event) -> None:
        return None


def _save_final(
    run_dir: Path,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: RunConfig,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """final/: a PEFT adapter or full safetensors weights (`weights`: a sharded model's, gathered whole), with the
    tokenizer and chat template."""
    final = RunFolder(run_dir).final
    try:
        with paths.atomic_folder(final) as tmp:
            model.save_pretrained(tmp, state_dict=weights)
            tokenizer.save_pretrained(tmp)
            write_run_file(tmp, config.model, config.method, config.objective, config.quantize)
            faults.reached("final", 0)
    except OSError as exc:
        raise TrainingError(
            f"{final}: could not write the result ({exc.strerror or exc}); the last checkpoint is kept",
            hint=f"free some disk space, then finish with: tunesmith train --resume {run_dir}",
        ) from None
    return final


def _resolve(config: RunConfig, data: RunData) -> tuple[RunConfig, Plan]:
    """The resolved settings and the plan: rank 0's, on every rank (free memory may differ between ranks)."""
    resolved: tuple[RunConfig, Plan] | None = None
    if distributed.is_main():
        facts = PlanFacts.measure(config)  # the machine and the model: the plan itself is a pure function
        resolved = resolve_plan(config, item_lengths(data.train), item_lengths(data.held_out), data.mix, facts)
    resolved = distributed.broadcast(resolved)
    assert resolved is not None
    _check_ranks(resolved[0])
    return resolved


def _check_ranks(config: RunConfig) -> None:
    """What several processes cannot train yet, refused before anything is written."""
    if distributed.size() == 1:
        return
    if config.objective == "grpo":
        raise ConfigError("objective grpo on several processes is not available yet", hint="train grpo on one process")


def _objective(
    config: RunConfig,
    plan: Plan,
    data: RunData,
    model: torch.nn.Module,
    precision: Precision,
    scaler: torch.amp.GradScaler | None,
    run_dir: Path,
) -> Objective:
    """The run's objective unit builds its step from the model as it is before any checkpoint is restored."""
    setup = Setup(
        data=data,
        model=model,
        autocast=precision.autocast,  # type: ignore[arg-type]
        backward=partial(backward, scaler),
        eval_batches=plan.eval_batches,
        batch_tokens=int(config.batch_tokens),
        max_length=config.max_length,
        compiled=config.compile == "on",
        preference=config.preference,
        run=RunFolder(run_dir),
        reinforcement=config.reinforcement,
        full_weights=config.method == "full",
    )
    return OBJECTIVES[config.objective].build(setup)


def _execute(
    resolved: RunConfig, plan: Plan, run_dir: Path, data: RunData, sink: EventSink, stop: StopFlag
) -> TrainResult:
    """Build everything from the resolved config, restore the latest checkpoint if any, and train."""
    torch.set_num_threads(int(resolved.threads))
    torch.manual_seed(resolved.seed)
    precision = choose_precision(resolved.device, resolved.precision)
    model = build_model(ModelSpec.of(resolved), precision)
    if distributed.rank():  # the same weights on every rank, then a generator of its own (dropout, sampling)
        torch.manual_seed(resolved.seed + distributed.rank())
    scaler = precision.scaler()
    checkpoint = _latest(run_dir)
    with compiler_settings():  # an objective may measure this model (dpo's reference) before the checkpoint
        objective = _objective(resolved, plan, data, model, precision, scaler, run_dir)
    if checkpoint:
        restore_weights(checkpoint, model)
    distributed.wrap(causal_lm(model), shard_weights=resolved.method == "full", compute=precision.compute)
    ratio = resolved.lora.b_lr_ratio if resolved.method in ("lora", "dora") else 1.0
    # built over the parameters as they train: FSDP2 replaces each weight with its shard
    optimizer = build_optimizer(model, plan.learning_rate, resolved.weight_decay, ratio, resolved.optimizer)
    state = restore_training(checkpoint, model, optimizer, distributed.rank()) if checkpoint else TrainState()
    if scaler is not None and state.scaler:
        scaler.load_state_dict(state.scaler)
    events = _events(resolved, run_dir, sink, state.step if checkpoint else -1)
    events.emit(
        Event(
            "start",
            state.step,
            {
                "total_steps": plan.total_steps,
                "epochs": int(resolved.epochs),
                "train_examples": len(data.train),
                "eval_examples": len(data.held_out),
                "device": str(precision.device),
                "compute_dtype": str(precision.compute).removeprefix("torch."),
            },
        )
    )
    inputs = LoopInputs(model, optimizer, resolved, plan, objective, events, stop, run_dir, scaler)
    with compiler_settings():
        reason = train_steps(inputs, state)
    if reason not in ("finished", "early_stopping"):
        events.emit(Event("end", state.step, {"reason": reason, "final": None}))
        return TrainResult(run_dir, reason, None, state)
    spread = sharding.sharded(model)  # every rank takes part in loading the best weights and gathering them
    if not (distributed.is_main() or spread):  # rank 0 writes final/; the others are done
        return TrainResult(run_dir, reason, RunFolder(run_dir).final, state)
    kept = _keep(resolved, run_dir, model, state)
    weights = sharding.full_weights(model) if spread else None
    if not distributed.is_main():
        return TrainResult(run_dir, reason, RunFolder(run_dir).final, state)
    final = _save_final(run_dir, model, data.tokenizer, resolved, weights)
    events.emit(Event("end", state.step, {"reason": reason, "final": str(final), "kept_step": kept}))
    return TrainResult(run_dir, reason, final, state, kept)


def _latest(run_dir: Path) -> Path | None:
    """The checkpoint to resume from, rank 0's choice on every rank (after it cleared a crash's partial writes)."""
    checkpoint = None
    if distributed.is_main():
        remove_partial_writes(run_dir)
        checkpoint, damaged = latest_checkpoint(run_dir)
        for warning in damaged:
            log.warning(warning)
    return distributed.broadcast(checkpoint)


def _events(config: RunConfig, run_dir: Path, sink: EventSink, resumed_at: int) -> EventSink:
    """Where rank 0 reports: metrics.jsonl (from `resumed_at` on: -1 from the start, even the step-0 evaluation
    again), the caller's sink, the trackers. The other ranks report nothing."""
    if not distributed.is_main():
        return _NullSink()
    metrics = MetricsFile(RunFolder(run_dir).metrics)
    metrics.truncate_after(resumed_at)
    return Broadcast([metrics, sink, *trackers(config, run_dir)])


def _keep(config: RunConfig, run_dir: Path, model: torch.nn.Module, state: TrainState) -> int:
    """The step final/ is made of: the best evaluation's (its weights loaded back) or the last."""
    best = state.best_step
    if config.final == "last" or best is None or best == state.step:
        return state.step
    if not RunFolder(run_dir).best.is_file():
        log.warning("%s is missing: final/ holds the last step's weights", RunFolder(run_dir).best)
        return state.step
    load_best(run_dir, model)
    return best


def train(
    config: RunConfig, run_dir: Path, *, sink: EventSink | None = None, stop: StopFlag | None = None
) -> TrainResult:
    """Start a run in `run_dir` (new or empty): write config.yaml, manifest.json, data-report.json, then train."""
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"{run_dir} is not empty", hint=f"continue it with --resume {run_dir}, or choose another --out"
        )
    distributed.barrier()  # every rank has looked before rank 0 writes
    sink, stop = sink or _NullSink(), StopFlag() if stop is None else stop
    if config.stages:
        if distributed.is_main():
            start_stages(config, run_dir)
        distributed.barrier()
        return _run_stages(config, run_dir, {}, False, sink, stop)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    data = load_run_data(config, tokenizer)
    resolved, plan = _resolve(config, data)
    check_quantize(resolved.quantize, resolved.method, torch.device(resolved.device))  # before anything is written
    check_optimizer(resolved.optimizer, torch.device(resolved.device))
    if distributed.is_main():
        _write_start(run_dir, resolved, tokenizer, data)
    distributed.barrier()
    return _execute(resolved, plan, run_dir, data, sink, stop)


def _write_start(run_dir: Path, resolved: RunConfig, tokenizer: PreTrainedTokenizerBase, data: RunData) -> None:
    """A new run's folder: data-report.json, the held-out texts, manifest.json and config.yaml."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunFolder(run_dir)
    paths.write_text_atomic(run.data_report, json.dumps(data.report, indent=2))
    if data.held_out_texts is not None:
        rows = "".join(json.dumps({"text": text}) + "\n" for text in data.held_out_texts)
        paths.write_text_atomic(run.held_out_texts, rows)
    paths.write_text_atomic(run.manifest, json.dumps(manifest(resolved, tokenizer, data), indent=2))
    paths.write_text_atomic(run.config, resolved.to_yaml())


def _changed_fields(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    return [key for key in a if a[key] != b[key] and key not in ("device", "threads")]


def resume(
    run_dir: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    force: bool = False,
    sink: EventSink | None = None,
    stop: StopFlag | None = None,
) -> TrainResult:
    """Continue a run from its latest checkpoint; a changed config or data refuses unless `force`."""
    run = RunFolder(run_dir)
    config_file = run.config
    if not config_file.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml, so it is not a run folder", hint="pass the folder of a run")
    stored = build_config(read_config_file(config_file), str(config_file))
    config = build_config(merge_settings(stored.model_dump(mode="json"), overrides or {}), "command line")
    changed = _changed_fields(stored, config)
    if changed and not force:
        raise TrainingError(
            f"{run_dir}: resuming with changed settings ({', '.join(changed)}) would not continue the same run",
            hint="drop those options, or add --force to continue anyway",
        )
    sink, stop = sink or _NullSink(), StopFlag() if stop is None else stop
    if config.stages:
        if changed and distributed.is_main():
            paths.write_text_atomic(config_file, config.to_yaml())
        return _run_stages(config, run_dir, overrides or {}, force, sink, stop)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    data = load_run_data(config, tokenizer)
    before = run.read_manifest()["data"]
    current = manifest(config, tokenizer, data)
    now = current["data"]
    if before != now and not force:
        raise TrainingError(
            f"{run_dir}: the data or tokenizer changed since the run started",
            hint="restore the original files, or add --force to continue on the new data",
        )
    if (changed or before != now) and distributed.is_main():
        paths.write_text_atomic(config_file, config.to_yaml())
        paths.write_text_atomic(run.manifest, json.dumps(current, indent=2))
    resolved, plan = _resolve(config, data)  # config.yaml holds resolved values: this only rebuilds the plan
    return _execute(resolved, plan, run_dir, data, sink, stop)


def _run_stages(
    config: RunConfig, run_dir: Path, overrides: Mapping[str, Any], force: bool, sink: EventSink, stop: StopFlag
) -> TrainResult:
    """Each stage not yet finished, in order, as a run of its own in its folder (see stages.py)."""
    folders = stage_folders(run_dir, config)
    result: TrainResult | None = None
    for index in range(unfinished(folders), len(folders)):
        events = StageEvents(sink, config.stages[index].name, index + 1, len(folders))
        folder = folders[index]
        if distributed.is_main():
            clear_unstarted(folder)
        distributed.barrier()
        if RunFolder(folder).config.is_file():
            result = resume(folder, overrides=overrides, force=force, sink=events, stop=stop)
        else:
            result = train(stage_config(config, index, folders), folder, sink=events, stop=stop)
        if distributed.is_main():
            write_manifest(config, run_dir)
            merge_metrics(config, run_dir)
        distributed.barrier()  # the next stage starts from this one's final/, written by rank 0
        if result.final is None:
            return TrainResult(run_dir, result.reason, None, result.state)
    assert result is not None
    final = finish_stages(run_dir, folders[-1]) if distributed.is_main() else RunFolder(run_dir).final
    return TrainResult(run_dir, result.reason, final, result.state, result.kept_step)
