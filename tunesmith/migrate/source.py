"""The source: any server with OpenAI's fine-tuning API (OpenAI, another tunesmith), read with the official client.

A job is saved under DIR/<job id>/: its object, its training and validation files, its result files, events and
checkpoints. Each is written atomically and skipped when already there, so a migration that was killed goes on
where it stopped and nothing is downloaded twice. Uploaded names never become paths: files are stored by role
(training.jsonl, validation.jsonl) or by id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import paths

RESULT_SUFFIXES = (".csv", ".html", ".json", ".jsonl", ".txt")
"""Suffixes a result file keeps (from its name at the source); any other is saved without one."""


@dataclass(frozen=True)
class SourceSettings:
    """How the source is reached."""

    url: str
    """Its OpenAI base URL: https://api.openai.com/v1, http://host:8000/v1, ..."""
    api_key: str
    """Its API key."""
    retries: int = 5
    """Retries of one request (the openai client's backoff, Retry-After honoured)."""
    timeout: float = 120.0
    """Seconds one request may take."""
    page_size: int = 100
    """Jobs and events asked per page of a list."""


FILES = {
    "job": "job.json",
    "training": "training.jsonl",
    "validation": "validation.jsonl",
    "results": "results",
    "events": "events.jsonl",
    "checkpoints": "checkpoints.json",
    "train_split": "train-split.jsonl",
    "held_out": "held-out.jsonl",
    "config": "config.yaml",
    "run": "run",
    "compare": "compare",
}
"""What a job's folder holds (a migration's layout, not a run folder's: `run` is the run folder inside it)."""


@dataclass(frozen=True)
class JobFolder:
    """Where one job's copy lives: every path inside DIR/<job id>/ (docs/from-openai.md lists them)."""

    root: Path
    """DIR/<job id>."""

    @property
    def job(self) -> Path:
        """The job object."""
        return self.root / FILES["job"]

    @property
    def training(self) -> Path:
        """Its training file."""
        return self.root / FILES["training"]

    @property
    def validation(self) -> Path:
        """Its validation file."""
        return self.root / FILES["validation"]

    @property
    def results(self) -> Path:
        """Its result files, by id."""
        return self.root / FILES["results"]

    @property
    def events(self) -> Path:
        """Its events, oldest first."""
        return self.root / FILES["events"]

    @property
    def checkpoints(self) -> Path:
        """Its checkpoints."""
        return self.root / FILES["checkpoints"]

    @property
    def train_split(self) -> Path:
        """The training file less the held-out share (when the job had no validation file)."""
        return self.root / FILES["train_split"]

    @property
    def held_out(self) -> Path:
        """The held-out share of the training file."""
        return self.root / FILES["held_out"]

    @property
    def config(self) -> Path:
        """Its method and hyperparameters as tunesmith settings."""
        return self.root / FILES["config"]

    @property
    def run(self) -> Path:
        """The run folder of --run."""
        return self.root / FILES["run"]

    @property
    def compare(self) -> Path:
        """The old model's recorded answers and, after --run, the report comparing the new model with it."""
        return self.root / FILES["compare"]


def open_client(settings: SourceSettings) -> Any:
    from openai import OpenAI

    return OpenAI(
        base_url=settings.url, api_key=settings.api_key, max_retries=settings.retries, timeout=settings.timeout
    )


def succeeded_jobs(client: Any, page_size: int) -> Iterator[dict[str, Any]]:
    """Every succeeded job of the source, newest first, page after page."""
    for job in client.fine_tuning.jobs.list(limit=page_size):
        if job.status == "succeeded":
            yield job.to_dict()


def named_job(client: Any, job_id: str) -> dict[str, Any]:
    """One job by id; raises the client's NotFoundError when the source has none."""
    return client.fine_tuning.jobs.retrieve(job_id).to_dict()  # type: ignore[no-any-return]


def _write_json(path: Path, value: Any) -> None:
    paths.write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _download(client: Any, file_id: str, target: Path) -> None:
    """A file's bytes into target, atomically; nothing when target is already there."""
    if target.is_file():
        return
    data = client.files.content(file_id).content
    with paths.atomic_file(target) as out:
        out.write(data)


def _result_name(client: Any, file_id: str) -> str:
    filename = str(getattr(client.files.retrieve(file_id), "filename", "") or "")
    suffix = Path(filename).suffix.lower()
    return file_id + (suffix if suffix in RESULT_SUFFIXES else "")


def save_job(client: Any, job: dict[str, Any], folder: JobFolder, page_size: int) -> list[str]:
    """Everything of a job that can still be read, saved once; the names of the files the source no longer has."""
    from openai import NotFoundError

    folder.root.mkdir(parents=True, exist_ok=True)
    if not folder.job.is_file():
        _write_json(folder.job, job)
    missing = []
    for key, target in (("training_file", folder.training), ("validation_file", folder.validation)):
        if job.get(key):
            try:
                _download(client, job[key], target)
            except NotFoundError:
                missing.append(key)
    for file_id in job.get("result_files") or []:
        done = list(folder.results.glob(f"{file_id}*")) if folder.results.is_dir() else []
        if not done:
            try:
                _download(client, file_id, folder.results / _result_name(client, file_id))
            except NotFoundError:
                missing.append(file_id)
    if not folder.events.is_file():
        events = [e.to_dict() for e in client.fine_tuning.jobs.list_events(job["id"], limit=page_size)]
        paths.write_text_atomic(folder.events, "".join(json.dumps(e) + "\n" for e in reversed(events)))
    if not folder.checkpoints.is_file():
        try:
            checkpoints = [c.to_dict() for c in client.fine_tuning.jobs.checkpoints.list(job["id"], limit=page_size)]
        except NotFoundError:  # a source without the checkpoints route
            checkpoints = []
        _write_json(folder.checkpoints, checkpoints)
    return missing
