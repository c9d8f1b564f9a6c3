"""`tunesmith jobs`: the worker that runs fine-tuning jobs, and a look at the jobs store from the terminal."""

from __future__ import annotations

import json
import signal
from functools import partial
from types import FrameType
from typing import Annotated

import typer
from rich.table import Table

from tunesmith.cli.common import err, out, user_errors

jobs_app = typer.Typer(
    help="Fine-tuning jobs (the API's): run the worker, list, inspect, cancel.", no_args_is_help=True
)
JobId = Annotated[str, typer.Argument(help="A job id, ftjob-...")]


def _on_signal(worker: object, signum: int, frame: FrameType | None) -> None:
    worker.shutdown(signal.Signals(signum).name)  # type: ignore[attr-defined]


@jobs_app.command("worker")
def worker(
    once: Annotated[bool, typer.Option(help="Do the waiting dashboard tasks and jobs, then exit.")] = False,
    parent: Annotated[int | None, typer.Option(hidden=True, help="Exit when idle and this process is gone.")] = None,
    processes: Annotated[int, typer.Option(min=1, help="Train each job on N processes of this host (torchrun).")] = 1,
    lease: Annotated[
        float, typer.Option(min=1, help="PostgreSQL: seconds without a heartbeat before another worker takes a job.")
    ] = 60.0,
) -> None:
    """Run queued jobs one at a time: one worker per TUNESMITH_HOME on SQLite (`tunesmith serve` starts one), any
    number on any hosts sharing TUNESMITH_DATABASE_URL (PostgreSQL) and TUNESMITH_HOME."""
    from tunesmith.jobs.database import database_url
    from tunesmith.jobs.store import Store
    from tunesmith.jobs.worker import Worker, take_lock

    shared = bool(database_url())
    lock = None
    if not shared:  # SQLite: this worker is the only one, and takes back what was running at once
        lock = take_lock(wait=False)
        if lock is None:
            err.print("[dim]another worker runs for this TUNESMITH_HOME; waiting for it to stop[/]")
            lock = take_lock(wait=True)
    with user_errors():
        running = Worker(Store(), processes, lease if shared else 0.0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, partial(_on_signal, running))
        running.run(once=once, parent=parent)
    if lock is not None:
        lock.close()


Server = Annotated[
    str | None,
    typer.Option(envvar="TUNESMITH_SERVER", help="A tunesmith server's URL: its jobs, not this host's store."),
]
ApiKey = Annotated[str | None, typer.Option(envvar="TUNESMITH_API_KEY", help="The server's API key.")]


@jobs_app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option("-n", help="How many, newest first.")] = 20,
    server: Server = None,
    api_key: ApiKey = None,
) -> None:
    """The jobs, newest first."""
    from tunesmith.cli.job_sources import job_source

    table = Table(title="Fine-tuning jobs", title_justify="left")
    for column in ("id", "status", "model", "fine-tuned model", "created"):
        table.add_column(column, overflow="fold")
    with user_errors():
        jobs = job_source(server, api_key).jobs(limit)
    for job in jobs:
        table.add_row(job["id"], job["status"], job["model"], job.get("fine_tuned_model") or "", str(job["created_at"]))
    out.print(table)


@jobs_app.command("show")
def show(job_id: JobId, server: Server = None, api_key: ApiKey = None) -> None:
    """One job, as the API returns it (JSON)."""
    from tunesmith.cli.job_sources import job_source

    with user_errors():
        job = job_source(server, api_key).job(job_id)
    out.print_json(json.dumps(job))


@jobs_app.command("events")
def events(
    job_id: JobId,
    limit: Annotated[int, typer.Option("-n", help="How many, newest last.")] = 50,
    server: Server = None,
    api_key: ApiKey = None,
) -> None:
    """A job's events, oldest first."""
    from tunesmith.cli.job_sources import job_source

    with user_errors():
        listed = job_source(server, api_key).events(job_id, limit)
    for event in reversed(listed):
        out.print(f"{event['created_at']}  {event['level']:5}  {event['message']}", markup=False, highlight=False)


def _act(action: str, job_id: str, server: str | None, api_key: str | None) -> None:
    from tunesmith.cli.job_sources import job_source

    with user_errors():
        job = job_source(server, api_key).act(job_id, action)
    running = action == "cancel" and job["status"] in ("running", "pausing")
    out.print(f"{job['id']}: {job['status']}" + (" (stopping after the current step)" if running else ""))


@jobs_app.command("cancel")
def cancel(job_id: JobId, server: Server = None, api_key: ApiKey = None) -> None:
    """Cancel a job: at once if it waits, after its current step if it runs (its checkpoint is kept)."""
    _act("cancel", job_id, server, api_key)


@jobs_app.command("pause")
def pause(job_id: JobId, server: Server = None, api_key: ApiKey = None) -> None:
    """Pause a running job: it saves a checkpoint after its current step and waits."""
    _act("pause", job_id, server, api_key)


@jobs_app.command("resume")
def resume(job_id: JobId, server: Server = None, api_key: ApiKey = None) -> None:
    """Queue a paused job again: a worker continues it from its checkpoint."""
    _act("resume", job_id, server, api_key)
