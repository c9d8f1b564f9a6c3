"""The heavy work the server is asked for, done by the jobs worker instead of the server's threads: a new job's files
validated (validating_files), a file's data check under a model's tokenizer (with this machine's measured training
speed) and a finished job's export as a zip. The server writes the job or the task into the store and answers at
once; a client polls it."""

from __future__ import annotations

import logging
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith import paths
from tunesmith.check import DataOptions, check_data
from tunesmith.errors import TunesmithError
from tunesmith.export.writer import ExportRequest, export
from tunesmith.jobs.records import TaskRecord
from tunesmith.jobs.store import Store
from tunesmith.jobs.validation import validate_job
from tunesmith.models.load import load_tokenizer, model_width
from tunesmith.runs import job_run
from tunesmith.training.throughput import training_tokens_per_second

log = logging.getLogger(__name__)

IDLE_SECONDS = 0.5
"""How often an idle poller of the worker looks for work (a queued task, a webhook due)."""


def check_file(args: dict[str, Any]) -> dict[str, Any]:
    """The data check of a stored file under a model's tokenizer, with the estimated training time here."""
    model = str(args["model"])
    speed, width = training_tokens_per_second(model), model_width(model)
    options = DataOptions()
    return check_data(str(args["path"]), load_tokenizer(model), options, tokens_per_second=speed, width=width).as_dict()


def _zip(folder: Path, target: Path) -> None:
    """An export folder as one zip (stored: weights do not compress), written atomically."""
    with paths.atomic_file(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())


def export_job(args: dict[str, Any]) -> dict[str, Any]:
    """A succeeded job's model exported in a format (once), zipped for download."""
    run = job_run(str(args["job_id"]))
    target = run.export_zip(str(args["format"]))
    if not target.is_file():
        _zip(export(ExportRequest(str(run.root), args["format"])), target)
    return {"bytes": target.stat().st_size}


HANDLERS: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "check": (check_file, "model"),
    "export": (export_job, "format"),
}
"""Each kind of task: what does it, and the request parameter a user's mistake in it is about."""


def run_task(store: Store, task: TaskRecord) -> None:
    """Do one claimed task and record how it ended; a user's mistake is its error, anything else is logged."""
    handler, param = HANDLERS[task.kind]
    try:
        result = handler(task.args)
    except TunesmithError as exc:
        store.end_task(task.id, None, {"message": exc.message, "code": exc.code or "invalid_request", "param": param})
    except Exception as exc:
        log.exception("task %s (%s) failed", task.id, task.kind)
        store.end_task(
            task.id, None, {"message": f"{type(exc).__name__}: {exc}", "code": "server_error", "param": None}
        )
    else:
        store.end_task(task.id, result, None)


def run_waiting_tasks(store: Store) -> int:
    """Validate every job waiting for it and do every queued task now, in this thread; how many were done."""
    done = 0
    for job in store.jobs_with_status("validating_files"):
        validate_job(store, job.id)
        done += 1
    while (task := store.claim_task()) is not None:
        run_task(store, task)
        done += 1
    return done


class Poller:
    """A daemon thread of the worker process that calls `work` until stopped, resting `idle` seconds whenever it
    found nothing to do (the jobs worker runs one for tasks, one for webhooks). An error is logged and the thread goes
    on: a busy store or a bug in one round must not end the thread for the worker's lifetime."""

    def __init__(self, name: str, work: Callable[[], int], idle: float = IDLE_SECONDS) -> None:
        self.work, self.idle = work, idle
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                done = self.work()
            except Exception:
                log.exception("%s failed", self.thread.name)
                done = 0
            if done == 0:
                self.stopped.wait(self.idle)
