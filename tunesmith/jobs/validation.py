"""validating_files: a job's files are checked with `data check` under its model's tokenizer, and its OpenAI
hyperparameters become tunesmith settings, before any compute. A bad file fails the job naming its line and code."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith import paths
from tunesmith.auto import auto_batch_tokens, auto_learning_rate
from tunesmith.check import DataOptions, check_data
from tunesmith.config import build_config
from tunesmith.data.formats import auto_objective
from tunesmith.errors import DataError, TunesmithError
from tunesmith.jobs.records import JobRecord
from tunesmith.jobs.store import ACTIVE, Store
from tunesmith.models.load import load_tokenizer, model_width
from tunesmith.training.objectives.grpo import read_prompt_items

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 3
"""A job saves a checkpoint an epoch and keeps the last three, as OpenAI's do."""


def validate_job(store: Store, job_id: str) -> None:
    """Move a job from validating_files to queued, or to failed with OpenAI's error object."""
    job = store.job(job_id)
    if job is None or job.status != "validating_files":
        return
    store.add_event(job_id, "validating", f"Validating training file: {job.training_file}")
    try:
        settings = job_settings(store, job)
    except TunesmithError as exc:
        fail(store, job_id, exc.code or "invalid_training_file", exc.message, "training_file")
        return
    except Exception as exc:  # a model that cannot load, a file that vanished: the job fails, the server goes on
        log.exception("validating %s failed", job_id)
        fail(store, job_id, "server_error", f"validation failed: {type(exc).__name__}: {exc}", None)
        return
    store.update_job(job_id, {"settings": settings})
    if store.move(job_id, "queued", only_from=("validating_files",)):
        store.add_event(job_id, "queued", "Files validated, moving job to queued state")


def fail(store: Store, job_id: str, code: str, message: str, param: str | None) -> None:
    """End a job as failed with OpenAI's error object, and say so in its events."""
    store.update_job(
        job_id, {"error": {"code": code, "message": message, "param": param}, "finished_at": int(time.time())}
    )
    store.move(job_id, "failed", only_from=ACTIVE)
    store.add_event(job_id, "failed", f"Fine-tuning job failed: {message}")


def _path(store: Store, file_id: str) -> str:
    record = store.file(file_id)
    if record is None:
        raise DataError(f"file {file_id} was deleted before the job started", code="invalid_file")
    return record.path


def _first_problem(report: Any, file_ids: dict[str, str]) -> DataError:
    """The first error of a check, naming the file by its id (never by where it is stored) with line and code."""
    problem = report.errors[0]
    where = file_ids.get(problem.file, problem.file)
    more = f" (and {report.error_count - 1:,} more)" if report.error_count > 1 else ""
    line = f":{problem.line}" if problem.line else ""
    return DataError(f"{where}{line}: {problem.message}{more}", code=problem.code)


def _objective(method: str, training_file: str, file_format: str) -> str:
    """dpo for a dpo job on preference pairs, text for plain text, sft otherwise; a file that does not fit its
    method fails the job with what to send instead."""
    objective = auto_objective(file_format)
    if method == "dpo":
        if objective != "dpo":
            message = (
                f"{training_file}: method dpo needs preference pairs (OpenAI's input / preferred_output / "
                f"non_preferred_output), and this file is {file_format}; create a supervised job for it"
            )
            raise DataError(message, code="invalid_training_file")
        return "dpo"
    if objective == "dpo":
        message = f"{training_file}: this file holds preference pairs; create the job with method type dpo"
        raise DataError(message, code="invalid_training_file")
    return objective


@dataclass(frozen=True)
class OpenAIJob:
    """What an OpenAI-style job asks for, with its files on this machine."""

    model: str
    """The base model, as tunesmith loads it."""
    train: str
    """The training file's path."""
    held_out: str | None
    """The validation file's path, or None (10% of the training data is then held out)."""
    hyperparameters: dict[str, Any]
    """OpenAI's hyperparameters (and tunesmith's own), each "auto" or a value; unknown keys are ignored."""
    method: str = "supervised"
    """supervised or dpo."""
    seed: int | None = None
    """The run's seed (None: the training default)."""
    names: dict[str, str] = field(default_factory=dict)
    """How errors name each path (a file id, never where it is stored)."""
    integrations: list[dict[str, Any]] = field(default_factory=list)
    """OpenAI's integrations: [{"type": "wandb", "wandb": {"project", "name", "entity", "tags"}}]."""
    name: str | None = None
    """The run's name at a tracker when the integration gives none (the job id)."""
    grader: str | None = None
    """A reinforcement job's grader file (the grader object as JSON)."""


def job_settings(store: Store, job: JobRecord) -> dict[str, Any]:
    """The RunConfig values of a stored job (its files checked, its hyperparameters translated)."""
    train = _path(store, job.training_file)
    held_out = _path(store, job.validation_file) if job.validation_file else None
    names = {train: job.training_file, held_out or "": job.validation_file or ""}
    method = job.method.get("type", "supervised")
    grader = None
    if method == "reinforcement":  # the grader as a file the run names (a job id is ours: never a user's name)
        grader = str(paths.home() / "graders" / f"{job.id}.json")
        paths.write_text_atomic(Path(grader), json.dumps(job.method["grader"], indent=2))
    asked = OpenAIJob(
        job.model, train, held_out, job.hyperparameters, method, job.seed, names, job.integrations, job.id, grader
    )
    settings = openai_settings(asked, f"job {job.id}")
    return settings | {"keep_checkpoints": KEEP_CHECKPOINTS, "save_every": "epoch"}


def openai_settings(job: OpenAIJob, where: str) -> dict[str, Any]:
    """The RunConfig values of an OpenAI-style job: its data checked under the model's tokenizer, its
    hyperparameters translated as docs/from-openai.md says (the jobs API and `tunesmith migrate` alike)."""
    tokenizer = load_tokenizer(job.model)
    if job.method == "reinforcement":
        return _reinforcement_settings(job, tokenizer, where)
    report = check_data(job.train, tokenizer, DataOptions(), eval_source=job.held_out)
    if report.errors:
        raise _first_problem(report, job.names)
    hyper = job.hyperparameters
    objective = _objective(job.method, job.names.get(job.train, job.train), report.stats["train"]["format"])
    settings = _shared(job, objective)
    if _given(hyper, "beta"):
        settings["preference"] = {"beta": float(hyper["beta"])}
    if _given(hyper, "batch_size"):
        typical = report.stats["train"]["length_p50"]
        batch = int(hyper["batch_size"])
        settings["grad_accum"] = max(1, math.ceil(batch * typical / auto_batch_tokens("cpu", objective)))
    build_config(settings, where)
    return settings


def _shared(job: OpenAIJob, objective: str) -> dict[str, Any]:
    """The settings every method maps alike: files, model, seed, epochs, weights trained, learning rate, tracking."""
    hyper = job.hyperparameters
    settings: dict[str, Any] = {
        "data": job.train,
        "eval_data": job.held_out,
        "model": job.model,
        "objective": objective,
    } | ({"seed": job.seed} if job.seed is not None else {})
    if _given(hyper, "n_epochs"):
        settings["epochs"] = int(hyper["n_epochs"])
    method = hyper.get("finetuning_type", "auto")
    if method != "auto":
        settings["method"] = method
    if _given(hyper, "lora_rank"):
        settings["lora"] = {"rank": int(hyper["lora_rank"])}
    if _given(hyper, "learning_rate_multiplier"):
        rate = auto_learning_rate("lora" if method == "auto" else method, model_width(job.model), objective)
        settings["learning_rate"] = float(hyper["learning_rate_multiplier"]) * rate
    if _given(hyper, "learning_rate"):
        settings["learning_rate"] = float(hyper["learning_rate"])
    return settings | _tracking(job)


GROUP_SIZE = 4
"""Answers per prompt of a reinforcement job at compute_multiplier 1."""
REINFORCEMENT_KEYS = {"batch_size": "prompts_per_step", "eval_samples": "eval_samples",
                      "max_answer_tokens": "max_answer_tokens"}  # fmt: skip
"""Reinforcement hyperparameters that are reinforcement settings as they are."""


def _reinforcement_settings(job: OpenAIJob, tokenizer: Any, where: str) -> dict[str, Any]:
    """A reinforcement job: objective grpo on its prompts, graded by its grader (docs/graders.md, the mapping)."""
    hyper = job.hyperparameters
    reinforcement: dict[str, Any] = {"graders": [job.grader]}
    reinforcement |= {key: int(hyper[name]) for name, key in REINFORCEMENT_KEYS.items() if _given(hyper, name)}
    if _given(hyper, "compute_multiplier"):
        reinforcement["group_size"] = max(2, round(GROUP_SIZE * float(hyper["compute_multiplier"])))
    settings = _shared(job, "grpo") | {"reinforcement": reinforcement}
    if _given(hyper, "eval_interval"):
        settings["eval_every"] = int(hyper["eval_interval"])
    config = build_config(settings, where)
    for path in (job.train, job.held_out):
        if path is None:
            continue
        try:
            read_prompt_items(path, tokenizer, config)
        except DataError as exc:
            name = job.names.get(path, path)
            raise DataError(exc.message.replace(path, name), exc.hint, exc.code or "invalid_training_file") from None
    return settings


def _tracking(job: OpenAIJob) -> dict[str, Any]:
    """A wandb integration as report_to and tracking settings."""
    for integration in job.integrations:
        if integration.get("type") == "wandb":
            wandb = integration.get("wandb") or {}
            tracking = {k: wandb[k] for k in ("project", "entity", "tags") if wandb.get(k)}
            name = wandb.get("name") or job.name
            return {"report_to": ["wandb"], "tracking": tracking | ({"name": name} if name else {})}
    return {}


def _given(hyper: dict[str, Any], name: str) -> bool:
    """A hyperparameter set to a value (OpenAI's finished jobs show the values "auto" became; None is not set)."""
    return hyper.get(name, "auto") not in ("auto", None)
