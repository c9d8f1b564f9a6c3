"""`tunesmith migrate`: every succeeded job of a source (or those named) saved, its fine-tuned model's answers to
held-out prompts recorded at temperature 0, its settings mapped to a tunesmith config, and with `run` trained here
and compared with the old model's answers.

DIR/migration.json says where each job stands: `saved` (its files are here), `recorded` (its model's answers are
too), `trained` (a new model was trained here and compared), `failed` (with the reason). A job whose model no
longer answers stays `saved`, with the reason: its files and config are still worth having. The file is rewritten
atomically after every step, and every step skips what is already done, so the same command continues a
migration that was stopped, even with kill -9.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith import paths
from tunesmith.config import build_config, read_config_file
from tunesmith.distill.collect import CollectSettings, CollectSummary, TeacherSettings, collect
from tunesmith.distill.report import ReportSettings, distill_report, held_out_prompts, teacher_answers
from tunesmith.errors import ConfigError, ModelError, TrainingError, TunesmithError
from tunesmith.jobs.validation import OpenAIJob, openai_settings
from tunesmith.migrate.heldout import Split, split
from tunesmith.migrate.source import JobFolder, SourceSettings, named_job, open_client, save_job, succeeded_jobs
from tunesmith.models.sources import DEFAULT_MODEL, model_source
from tunesmith.runs import RunFolder
from tunesmith.training.events import EventSink
from tunesmith.training.runner import resume, train

STATE_FILE = "migration.json"


@dataclass(frozen=True)
class MigrateSettings:
    """What `tunesmith migrate` is asked to do."""

    source: SourceSettings
    """The server the jobs are on."""
    out: Path
    """DIR: one folder per job, and migration.json."""
    jobs: tuple[str, ...] = ()
    """Only these jobs (any status); empty: every succeeded job."""
    prompts: Path | None = None
    """The prompts the old models answer, instead of each job's validation file or held-out share."""
    model: str | None = None
    """The base model trained here; None: the job's own base model when this machine has it, else the default."""
    run: bool = False
    """Train each recorded job here and compare the new model with the old one."""
    max_prompts: int = 100
    """Held-out prompts each old model answers, at most."""
    max_tokens: int = 512
    """The longest recorded answer, in tokens."""
    concurrency: int = 4
    """Requests to the source in flight at once."""
    max_requests_per_minute: float | None = None
    """Requests started per minute at most; None: no limit."""
    seed: int = 0
    """Seed of the held-out share of a training file."""


Stage = Callable[[str], None]


def _load(out: Path) -> dict[str, dict[str, Any]]:
    path = out / STATE_FILE
    if not path.is_file():
        return {}
    return {entry["id"]: entry for entry in json.loads(path.read_text(encoding="utf-8"))["jobs"]}


def _save(settings: MigrateSettings, state: dict[str, dict[str, Any]]) -> None:
    document = {"source": settings.source.url, "updated_at": int(time.time()), "jobs": list(state.values())}
    paths.write_text_atomic(settings.out / STATE_FILE, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def migrate(settings: MigrateSettings, on_stage: Stage | None = None, sink: EventSink | None = None) -> dict[str, Any]:
    """Migrate every job asked for; the contents of migration.json. One job's failure never stops the others."""
    from openai import APIError, NotFoundError

    stage = on_stage or (lambda _: None)
    settings.out.mkdir(parents=True, exist_ok=True)
    state = _load(settings.out)
    client = open_client(settings.source)
    jobs: list[dict[str, Any]] = []
    for job_id in settings.jobs:
        try:
            jobs.append(named_job(client, job_id))
        except NotFoundError:
            state[job_id] = {"id": job_id, "status": "failed", "reason": "the source has no such job"}
    if not settings.jobs:
        stage(f"listing the succeeded jobs at {settings.source.url}")
        jobs = list(succeeded_jobs(client, settings.source.page_size))
    _save(settings, state)
    for job in jobs:
        entry = state.setdefault(job["id"], {"id": job["id"]})
        try:
            _migrate_job(client, job, entry, settings, stage, sink, lambda: _save(settings, state))
        except (TunesmithError, APIError, OSError) as exc:
            message = exc.message if isinstance(exc, TunesmithError) else f"{type(exc).__name__}: {exc}"
            entry |= {"status": "failed", "reason": " ".join(message.split())[:500]}
        _save(settings, state)
    return {"source": settings.source.url, "jobs": list(state.values())}


def _base_model(job: dict[str, Any], asked: str | None) -> str:
    """--model, else the job's base model when this machine can load it, else the default model."""
    if asked:
        return asked
    try:
        source = model_source(str(job.get("model") or ""))
    except ModelError:
        return DEFAULT_MODEL
    return source.name if source.kind != "hub" else DEFAULT_MODEL


def _hyperparameters(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(method type, its hyperparameters) of a job object: current jobs keep them under method, older ones at the
    top."""
    method = job.get("method") or {}
    kind = str(method.get("type") or "supervised")
    inner = (method.get(kind) or {}).get("hyperparameters")
    return kind, dict(inner or job.get("hyperparameters") or {})


def _migrate_job(
    client: Any,
    job: dict[str, Any],
    entry: dict[str, Any],
    settings: MigrateSettings,
    stage: Stage,
    sink: EventSink | None,
    checkpoint: Callable[[], None],
) -> None:
    folder = JobFolder(settings.out / job["id"])
    stage(f"{job['id']}: saving its files, events and checkpoints")
    missing = save_job(client, job, folder, settings.source.page_size)
    if entry.get("status") in (None, "failed"):
        entry["status"] = "saved"
    entry |= {
        "fine_tuned_model": job.get("fine_tuned_model"),
        "source_model": job.get("model"),
        "method": _hyperparameters(job)[0],
        "folder": str(folder.root),
        "missing": missing,
    }
    entry.pop("reason", None)
    checkpoint()
    data = split(folder, settings.prompts, settings.seed, settings.max_prompts)
    model = _base_model(job, settings.model)
    entry |= {"base_model": model, "config": str(folder.config)}
    _write_config(folder, job, data, model)
    checkpoint()
    if not _record(client, job, folder, data, entry, settings, stage):
        return
    checkpoint()
    if settings.run:
        _train_and_compare(folder, job, data, entry, settings, stage, sink)


def _write_config(folder: JobFolder, job: dict[str, Any], data: Split, model: str) -> None:
    """The job's method and hyperparameters as tunesmith settings (the jobs API's mapping), in config.yaml."""
    kind, hyper = _hyperparameters(job)
    if kind not in ("supervised", "dpo"):
        raise ConfigError(f"method {kind!r} is not migrated: supervised and dpo jobs are", code="unsupported_method")
    held_out = str(data.held_out) if data.held_out else None
    integrations = list(job.get("integrations") or [])
    asked = OpenAIJob(model, str(data.train), held_out, hyper, kind, job.get("seed"), {}, integrations, job["id"])
    settings = openai_settings(asked, f"job {job['id']}")
    paths.write_text_atomic(folder.config, yaml.safe_dump(settings, sort_keys=False))


def teacher_settings(settings: MigrateSettings, model: str) -> TeacherSettings:
    """The old model asked at temperature 0: the same settings key its recorded answers and a later report."""
    return TeacherSettings(settings.source.url, model, temperature=0.0, max_tokens=settings.max_tokens)


def _record(
    client: Any,
    job: dict[str, Any],
    folder: JobFolder,
    data: Split,
    entry: dict[str, Any],
    settings: MigrateSettings,
    stage: Stage,
) -> bool:
    """The old model's answers to the held-out prompts, kept in compare/teacher.jsonl; True when all are there."""
    model = job.get("fine_tuned_model")
    if not model:
        entry["reason"] = "the job has no fine-tuned model to record"
        return False
    _, prompts = held_out_prompts(str(data.prompts), settings.max_prompts, folder.compare)
    stage(f"{job['id']}: {model} answers the held-out prompts")
    asked = CollectSettings(
        teacher_settings(settings, model),
        settings.source.api_key,
        concurrency=settings.concurrency,
        max_requests_per_minute=settings.max_requests_per_minute,
        retries=settings.source.retries,
        timeout=settings.source.timeout,
    )
    summary = collect(str(prompts), teacher_answers(folder.compare), asked)
    entry |= _recorded(summary)
    if summary.failed:
        entry["reason"] = _record_failure(model, summary)
        return False
    if entry["status"] == "saved":
        entry["status"] = "recorded"
    return True


def _recorded(summary: CollectSummary) -> dict[str, Any]:
    return {
        "answers": summary.answers,
        "prompts": summary.total,
        "answered": summary.already + summary.answered,
        "tokens_in": summary.tokens_in,
        "tokens_out": summary.tokens_out,
    }


def _record_failure(model: str, summary: CollectSummary) -> str:
    first = summary.failed[0]["error"]
    if all("NotFoundError" in f["error"] for f in summary.failed):
        return f"the fine-tuned model {model} no longer answers (404): {first}"
    return f"{len(summary.failed)} of {summary.total} prompts failed (first: {first}); run the same command again"


def _train_and_compare(
    folder: JobFolder,
    job: dict[str, Any],
    data: Split,
    entry: dict[str, Any],
    settings: MigrateSettings,
    stage: Stage,
    sink: EventSink | None,
) -> None:
    """Train the mapped config in DIR/<job>/run (resumed when a run was stopped), then compare it with the old
    model's recorded answers and the references."""
    run = RunFolder(folder.run)
    if not (run.final.is_dir() and run.config.is_file()):
        stage(f"{job['id']}: training here on {entry['base_model']}")
        if run.config.is_file():
            result = resume(folder.run, sink=sink)
        else:
            shutil.rmtree(folder.run, ignore_errors=True)  # stopped before its config was written: nothing kept
            config = build_config(read_config_file(folder.config), str(folder.config))
            result = train(config, folder.run, sink=sink)
        if result.final is None:
            raise TrainingError(
                f"training stopped by {result.reason}", hint="run the same command again", code="stopped"
            )
    entry["run"] = str(folder.run)
    report_file = folder.compare / "report.json"
    if entry["status"] != "trained" or not report_file.is_file():
        stage(f"{job['id']}: the new model answers the same prompts")
        report = distill_report(
            ReportSettings(
                run=str(folder.run),
                data=str(data.prompts),
                teacher=teacher_settings(settings, str(job["fine_tuned_model"])),
                api_key=settings.source.api_key,
                out=folder.compare,
                limit=settings.max_prompts,
            ),
            stage,
        )
    else:
        report = json.loads(report_file.read_text(encoding="utf-8"))
    quality = report["quality"]
    entry |= {
        "status": "trained",
        "agreement_rougeL": quality["vs_teacher"]["tuned"]["rougeL"],
        "agreement": quality["vs_teacher"]["tuned"],
        "base_agreement_rougeL": quality["vs_teacher"]["base"]["rougeL"],
        "wins": quality.get("wins"),
        "report": str(folder.compare / "report.html"),
    }
