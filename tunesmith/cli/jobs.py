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
) -> None:
    """Run queued jobs one at a time (one worker per TUNESMITH_HOME; `tunesmith serve` starts one)."""
    from tunesmith.jobs.store import Store
    from tunesmith.jobs.worker import Worker, take_lock

    lock = take_lock(wait=False)
    if lock is None:
        err.print("[dim]another worker runs for this TUNESMITH_HOME; waiting for it to stop[/]")
        lock = take_lock(wait=True)
    running = Worker(Store(), processes)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, partial(_on_signal, running))
    with user_errors():
        running.run(once=once, parent=parent)
    lock.close()  # type: ignore[union-attr]


@jobs_app.command("list")
def list_jobs(limit: Annotated[int, typer.Option("-n", help="How many, newest first.")] = 20) -> None:
    """The jobs, newest first."""
    from tunesmith.jobs.store import Store

    table = Table(title="Fine-tuning jobs", title_justify="left")
    for column in ("id", "status", "model", "fine-tuned model", "created"):
        table.add_column(column, overflow="fold")
    for job in Store().jobs(None, limit).items:
        table.add_row(job.id, job.status, job.model, job.fine_tuned_model or "", str(job.created_at))
    out.print(table)


@jobs_app.command("show")
def show(job_id: JobId) -> None:
    """One job, as the API returns it (JSON)."""
    from tunesmith.jobs.control import find_job
    from tunesmith.jobs.store import Store

    with user_errors():
        job = find_job(Store(), job_id)
    out.print_json(json.dumps(job.as_object()))


@jobs_app.command("events")
def events(job_id: JobId, limit: Annotated[int, typer.Option("-n", help="How many, newest last.")] = 50) -> None:
    """A job's events, oldest first."""
    from tunesmith.jobs.control import find_job
    from tunesmith.jobs.store import Store

    store = Store()
    with user_errors():
        find_job(store, job_id)
    for event in reversed(store.events(job_id, None, limit).items):
        out.print(f"{event.created_at}  {event.level:5}  {event.message}", markup=False, highlight=False)


@jobs_app.command("cancel")
def cancel(job_id: JobId) -> None:
    """Cancel a job: at once if it waits, after its current step if it runs (its checkpoint is kept)."""
    from tunesmith.jobs.control import cancel_job
    from tunesmith.jobs.store import Store

    with user_errors():
        job = cancel_job(Store(), job_id)
    out.print(f"{job.id}: {job.status}" + (" (stopping after the current step)" if job.requested else ""))
