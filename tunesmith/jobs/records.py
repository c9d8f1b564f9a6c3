"""What the jobs store holds, and each record as the object OpenAI's API returns (every field its reference marks
required is present: the official client does not validate, a missing field would silently become None)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

JSON_FIELDS = ("hyperparameters", "method", "metadata", "error", "settings", "result_files", "integrations")
"""Job fields stored as JSON text."""
ORGANIZATION = "org-tunesmith"
"""OpenAI's objects name an organization; one server is one."""
DEFAULT_PROJECT = "default"
"""The project of what the server's own key (or an open server) makes without naming one, and of everything made
before projects existed."""


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: a prefix and 24 random letters and digits."""
    return prefix + secrets.token_hex(12)


@dataclass(frozen=True)
class FileRecord:
    """An uploaded file, stored under its id."""

    id: str
    """file-..."""
    filename: str
    """The name it was uploaded with (shown, never used as a path)."""
    purpose: str
    """fine-tune, or fine-tune-results for what a job writes."""
    bytes: int
    """Size."""
    created_at: int
    """Unix time of the upload."""
    path: str
    """Where its bytes are: TUNESMITH_HOME/files/<id><suffix>."""
    project: str = DEFAULT_PROJECT
    """The project it belongs to: only that project's keys see it."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FileRecord:
        return cls(*(row[f.name] for f in fields(cls)))

    def as_object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass(frozen=True)
class JobRecord:
    """A fine-tuning job as stored."""

    id: str
    """ftjob-..."""
    created_at: int
    """Unix time of creation."""
    model: str
    """The base model, as given."""
    training_file: str
    """File id."""
    validation_file: str | None
    """File id, or None (10% of the training data is held out)."""
    hyperparameters: dict[str, Any]
    """n_epochs, batch_size, learning_rate_multiplier: "auto" or values, as given."""
    method: dict[str, Any]
    """{"type": "supervised"} or {"type": "dpo"}; the job object adds the hyperparameters under the type."""
    suffix: str | None
    """Part of the fine-tuned model's name."""
    seed: int
    """Seed of the run."""
    metadata: dict[str, str] | None
    """Up to 16 key-value pairs of the user's."""
    status: str
    """validating_files, queued, running, pausing, paused, succeeded, failed or cancelled."""
    requested: str | None = None
    """cancel or pause, asked of the worker and not yet done."""
    error: dict[str, Any] | None = None
    """{"code", "message", "param"} when failed."""
    settings: dict[str, Any] = field(default_factory=dict)
    """RunConfig values the job resolved to (data paths, epochs, learning rate...), set when its files validate."""
    fine_tuned_model: str | None = None
    """ft:<base>:<suffix>:<job id> once it succeeded."""
    finished_at: int | None = None
    """Unix time it ended."""
    trained_tokens: int | None = None
    """Tokens trained so far (padding excluded)."""
    estimated_finish: int | None = None
    """Unix time it should end, from the measured speed."""
    result_files: list[str] = field(default_factory=list)
    """File ids of what it wrote: the metrics CSV."""
    model_deleted: bool = False
    """Its fine-tuned model was deleted (DELETE /v1/models/{id}): no longer served."""
    integrations: list[dict[str, Any]] = field(default_factory=list)
    """Its experiment tracking, as given: [{"type": "wandb", "wandb": {"project": ...}}]."""
    project: str = DEFAULT_PROJECT
    """The project it belongs to: only that project's keys see it, its events, checkpoints and model."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRecord:
        values = {f.name: row[f.name] for f in fields(cls)}
        for name in JSON_FIELDS:
            if values[name] is not None:
                values[name] = json.loads(values[name])
        values["model_deleted"] = bool(values["model_deleted"])
        return cls(**values)

    def to_row(self) -> dict[str, Any]:
        return self.encode(asdict(self))

    @staticmethod
    def encode(values: dict[str, Any]) -> dict[str, Any]:
        """Column values: JSON fields as JSON text, flags as 0/1 (the schema's integers, in either database)."""
        return {
            k: json.dumps(v) if k in JSON_FIELDS and v is not None else int(v) if isinstance(v, bool) else v
            for k, v in values.items()
        }

    def tuned_name(self) -> str:
        """ft:<base>:<suffix>:<job id>, the base as given (a local folder by its last part)."""
        base = self.model.rstrip("/").rsplit("/", 1)[-1] if self.model.startswith(("/", ".", "~")) else self.model
        return f"ft:{base}:{self.suffix or ''}:{self.id}"

    def as_object(self) -> dict[str, Any]:
        status = self.status
        hyper = {key: self.hyperparameters.get(key, "auto") for key in HYPERPARAMETERS}
        own = {key: self.hyperparameters.get(key, "auto") for key in OWN_HYPERPARAMETERS}
        hyper |= {key: value for key, value in own.items() if value != "auto"}
        kind = self.method.get("type", "supervised")
        inner = hyper | ({"beta": self.hyperparameters.get("beta", "auto")} if kind == "dpo" else {})
        method: dict[str, Any] = {"type": kind, kind: {"hyperparameters": inner}}
        if kind == "reinforcement":
            inner |= {key: self.hyperparameters.get(key, "auto") for key in REINFORCEMENT_HYPERPARAMETERS}
            if self.hyperparameters.get("max_answer_tokens", "auto") != "auto":
                inner["max_answer_tokens"] = self.hyperparameters["max_answer_tokens"]
            method[kind]["grader"] = self.method.get("grader")
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": self.created_at,
            "error": self.error,
            "fine_tuned_model": self.fine_tuned_model,
            "finished_at": self.finished_at,
            "hyperparameters": hyper,
            "model": self.model,
            "organization_id": ORGANIZATION,
            "result_files": self.result_files,
            "seed": self.seed,
            "status": status,
            "trained_tokens": self.trained_tokens,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "estimated_finish": self.estimated_finish,
            "integrations": self.integrations,
            "metadata": self.metadata,
            "method": method,
            "user_provided_suffix": self.suffix,
            "usage_metrics": None if self.trained_tokens is None else {"trained_tokens": self.trained_tokens},
        }


HYPERPARAMETERS = ("batch_size", "learning_rate_multiplier", "n_epochs")
REINFORCEMENT_HYPERPARAMETERS = ("compute_multiplier", "eval_interval", "eval_samples", "reasoning_effort")
"""What method.reinforcement.hyperparameters shows besides HYPERPARAMETERS."""
OWN_HYPERPARAMETERS = ("finetuning_type", "lora_rank", "learning_rate")
"""tunesmith's own hyperparameters, shown in a job object when they were set."""


@dataclass(frozen=True)
class EventRecord:
    """One event of a job."""

    id: str
    """ftevent-..."""
    job_id: str
    """Its job."""
    created_at: int
    """Unix time."""
    level: str
    """info, warn or error."""
    message: str
    """What happened, in words."""
    type: str
    """message or metrics."""
    data: dict[str, Any] | None
    """For metrics: step, train_loss, valid_loss, tokens_per_second..."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EventRecord:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["data"] = json.loads(values["data"]) if values["data"] else None
        return cls(**values)

    def as_object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "fine_tuning.job.event",
            "created_at": self.created_at,
            "level": self.level,
            "message": self.message,
            "type": self.type,
            "data": self.data or {},
        }


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint of a job, with the metrics at its step."""

    id: str
    """ftckpt-..."""
    job_id: str
    """Its job."""
    created_at: int
    """Unix time."""
    step: int
    """Optimizer steps done."""
    metrics: dict[str, Any]
    """step, train_loss, valid_loss (when evaluated at that step)."""
    path: str
    """The checkpoint folder in the run."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CheckpointRecord:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["metrics"] = json.loads(values["metrics"])
        return cls(**values)

    def as_object(self, fine_tuned_model: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "fine_tuning.job.checkpoint",
            "created_at": self.created_at,
            "fine_tuned_model_checkpoint": f"{fine_tuned_model}:ckpt-step-{self.step}",
            "fine_tuning_job_id": self.job_id,
            "metrics": self.metrics,
            "step_number": self.step,
        }


@dataclass(frozen=True)
class TaskRecord:
    """Heavy work a dashboard page asked for (a data check, an export), done by the worker, its result kept."""

    id: str
    """task-..."""
    kind: str
    """check or export."""
    key: str
    """What it is about (the file and model, the job and format): one task per kind and key."""
    args: dict[str, Any]
    """What its handler needs."""
    status: str
    """queued, running, succeeded or failed."""
    result: dict[str, Any] | None
    """What it made, once succeeded."""
    error: dict[str, Any] | None
    """{"message", "code", "param"} once failed."""
    created_at: int
    """Unix time."""
    project: str = DEFAULT_PROJECT
    """The project of the file or job it is about."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TaskRecord:
        values = {f.name: row[f.name] for f in fields(cls)}
        for name in ("args", "result", "error"):
            values[name] = json.loads(values[name]) if values[name] else None
        values["args"] = values["args"] or {}
        return cls(**values)


WEBHOOK_EVENTS = ("fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled")
"""The events a webhook endpoint can ask for: a job's end, as OpenAI sends them."""


@dataclass(frozen=True)
class EndpointRecord:
    """A webhook endpoint: where a job's end is posted, signed with its secret."""

    id: str
    """we_..."""
    name: str
    """The user's name for it."""
    url: str
    """Where events are posted."""
    event_types: list[str]
    """Which events it receives (of WEBHOOK_EVENTS)."""
    secret: str
    """whsec_<base64 of 32 random bytes>: the Standard Webhooks signing key."""
    created_at: int
    """Unix time."""
    updated_at: int
    """Unix time of the last change of its settings or secret."""
    project: str = DEFAULT_PROJECT
    """The project whose jobs' ends it receives."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EndpointRecord:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["event_types"] = json.loads(values["event_types"])
        return cls(**values)

    def as_object(self, *, with_secret: bool = False) -> dict[str, Any]:
        shown = {"signing_secret": self.secret} if with_secret else {}
        return {
            "id": self.id,
            "object": "webhook_endpoint",
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "name": self.name,
            "url": self.url,
            "event_types": self.event_types,
            "signing_secret_hint": f"whsec_...{self.secret[-4:]}",
        } | shown


@dataclass(frozen=True)
class DeliveryRecord:
    """One event owed to one endpoint, kept until the endpoint answers 2xx (at least once) or retries run out."""

    id: str
    """wd_..."""
    endpoint_id: str
    """Its endpoint."""
    event_id: str
    """evt_...: the webhook-id header, the same on every attempt (receivers drop repeats by it)."""
    body: str
    """The event as JSON text, exactly what is signed and sent."""
    attempts: int
    """Attempts made so far."""
    next_at: float
    """Unix time of the next attempt."""
    status: str
    """pending, delivered or failed (retries ran out)."""
    last_error: str | None
    """What the last attempt got, when it failed."""
    created_at: int
    """Unix time the event happened."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DeliveryRecord:
        return cls(**{f.name: row[f.name] for f in fields(cls)})
