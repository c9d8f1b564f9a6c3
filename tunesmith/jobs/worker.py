"""The worker: a process of its own that runs jobs from the store one at a time, oldest first.

Each job is an ordinary run folder, TUNESMITH_HOME/runs/<job id>. A worker that dies (kill -9, a reboot) leaves its
job "running"; the next worker to claim it resumes it from its latest checkpoint, which finishes with the same
adapter as an uninterrupted run. On SQLite there is one worker per TUNESMITH_HOME (a second waits for the first's
lock) and it takes back what was running at once; on PostgreSQL any number of workers on any hosts share the
database and a TUNESMITH_HOME on a shared file system, each heartbeating the job it runs, and a job whose worker
stopped heartbeating for `lease` seconds is taken over by another.
"""

from __future__ import annotations

import csv
import fcntl
import io
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import IO

from tunesmith import paths
from tunesmith.config import build_config
from tunesmith.errors import TunesmithError
from tunesmith.jobs.files import store_bytes
from tunesmith.jobs.processes import train_on_processes
from tunesmith.jobs.records import JobRecord
from tunesmith.jobs.sink import JobSink
from tunesmith.jobs.store import Store
from tunesmith.jobs.tasks import Poller, run_waiting_tasks
from tunesmith.jobs.validation import fail
from tunesmith.jobs.webhooks import deliver_due
from tunesmith.runs import REPORT_FILES, RunFolder, job_run
from tunesmith.training.events import StopFlag
from tunesmith.training.runner import TrainResult, resume, train

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How often an idle worker looks for a queued job."""
CSV_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
"""OpenAI's columns of a job's metrics file (accuracies: the share of learned tokens the model ranks first; empty
for a preference or distillation run, which has no single right token)."""


TASK_LEASE = 600.0
"""Seconds after which a task still running is taken to be a dead worker's (workers sharing a store)."""
LEASE_LOST = "lease"
"""Why a worker stopped a job that another worker took over."""


class Heartbeat:
    """A thread renewing a job's lease while its worker runs it (a few times per lease); it stops the run when the
    job turns out to be another worker's."""

    def __init__(self, store: Store, job_id: str, worker: str, stop: StopFlag, lease: float) -> None:
        self.store, self.job_id, self.worker, self.stop_run = store, job_id, worker, stop
        self.every = max(0.5, lease / 4) if lease else 30.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="tunesmith-heartbeat", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.done.wait(self.every):
            try:
                mine = self.store.heartbeat(self.job_id, self.worker)
            except Exception:  # a database that is briefly away: the next beat tries again
                log.warning("job %s: could not renew its lease", self.job_id)
                continue
            if not mine:
                self.stop_run.request(LEASE_LOST)
                return


def lock_path() -> Path:
    return paths.home() / "worker.lock"


def take_lock(wait: bool = True) -> IO[str] | None:
    """The worker lock of this TUNESMITH_HOME, held for as long as the returned file is open; None if taken and
    `wait` is false."""
    lock_path().parent.mkdir(parents=True, exist_ok=True)
    handle = lock_path().open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    return handle


class Worker:
    """Runs jobs until told to stop; a stop (SIGTERM) saves the running job's checkpoint and leaves it running."""

    def __init__(self, store: Store, processes: int = 1, lease: float = 0.0) -> None:
        self.store = store
        self.processes = processes
        """Ranks each job trains on (torchrun on this host); OpenAI's hyperparameters mean the same for any."""
        self.lease = lease
        """Seconds without a heartbeat after which another worker takes a running job over (0: the only worker)."""
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This worker in the store's jobs (the owner of the jobs it runs)."""
        self.stopping = StopFlag()
        self.current: StopFlag | None = None

    def shutdown(self, reason: str) -> None:
        """From a signal handler: stop after the current step of the current job."""
        self.stopping.request(reason)
        if self.current is not None:
            self.current.request(reason)

    def run(self, *, once: bool = False, parent: int | None = None) -> None:
        """Claim and run jobs, and beside them (in a thread) the tasks dashboard pages ask for; with `once`, do what
        is waiting and return; with `parent` (the server that started it), return when idle and that process is
        gone. A job it runs is finished first: a server that crashes does not take its job down, and the next
        server's worker waits for this one's lock."""
        tasks = Poller("tunesmith-tasks", partial(run_waiting_tasks, self.store))
        webhooks = Poller("tunesmith-webhooks", partial(deliver_due, self.store))
        # a worker that stopped mid-task left it running; beside other workers, only what is clearly abandoned
        self.store.requeue_tasks(TASK_LEASE if self.lease else 0.0)
        if once:  # one pass, in this thread: the tasks waiting, then the jobs, then the webhooks due
            run_waiting_tasks(self.store)
        else:
            tasks.start()
            webhooks.start()
        try:
            while not self.stopping:
                job = self.store.claim_next(self.id, self.lease)
                if job is None:
                    if once:
                        deliver_due(self.store)
                        return
                    if parent is not None and os.getppid() != parent:
                        return
                    time.sleep(POLL_SECONDS)
                    continue
                self.run_job(job)
        finally:
            tasks.stop()
            webhooks.stop()

    def run_job(self, job: JobRecord) -> None:
        if job.status == "pausing":  # the worker stopped while pausing it: its checkpoint is there
            self._ended(job, "paused")
            return
        self.current = StopFlag()
        beating = Heartbeat(self.store, job.id, self.id, self.current, self.lease)
        beating.start()
        try:
            result = self._train(job, self.current)
        except TunesmithError as exc:
            fail(self.store, job.id, exc.code or "training_failed", str(exc), None)
            return
        except Exception as exc:
            log.exception("job %s failed", job.id)
            fail(self.store, job.id, "server_error", f"training failed: {type(exc).__name__}: {exc}", None)
            return
        finally:
            beating.stop()
            self.current = None
        if result.reason == LEASE_LOST:  # another worker runs it now
            return
        if result.final is not None:
            self._succeeded(job, result)
        elif result.reason == "cancel":
            self._ended(job, "cancelled")
        elif result.reason == "pause":
            self._ended(job, "paused")
        # otherwise the worker itself was stopped: the job stays running and is resumed by the next worker

    def _train(self, job: JobRecord, stop: StopFlag) -> TrainResult:
        run = job_run(job.id)
        sink = JobSink(self.store, job.id, stop)
        if self.processes > 1:
            return train_on_processes(job.settings, run, self.processes, sink, stop)
        if run.config.is_file():
            return resume(run.root, sink=sink, stop=stop)
        shutil.rmtree(run.root, ignore_errors=True)  # stopped before its config was written: nothing to keep
        return train(build_config(job.settings, f"job {job.id}"), run.root, sink=sink, stop=stop)

    def _ended(self, job: JobRecord, status: str) -> None:
        changes = {"requested": None} | ({"finished_at": int(time.time())} if status == "cancelled" else {})
        self.store.update_job(job.id, changes)
        self.store.move(job.id, status, only_from=("running", "pausing"))
        message = "Fine-tuning job cancelled" if status == "cancelled" else "Fine-tuning job paused"
        self.store.add_event(job.id, f"{status}:{int(time.time())}", message)

    def _succeeded(self, job: JobRecord, result: TrainResult) -> None:
        run = RunFolder(result.run_dir)
        self.store.update_job(job.id, {"estimated_finish": None})
        self.store.add_event(job.id, "evaluating", "Training done; evaluating the tuned model against its base")
        results = [store_bytes(metrics_csv(run), "step_metrics.csv", "fine-tune-results")]
        headline = _headline(result.run_dir)
        report = run.eval / REPORT_FILES[-1]
        if headline and report.is_file():
            results.append(store_bytes(report.read_bytes(), "report.html", "fine-tune-results"))
        for record in results:
            self.store.scoped(job.project).add_file(record)  # the job's project's, like the job
        changes = {
            "fine_tuned_model": job.tuned_name(),
            "finished_at": int(time.time()),
            "trained_tokens": result.state.tokens,
            "result_files": [record.id for record in results],
            "estimated_finish": None,
            "requested": None,
        }
        self.store.update_job(job.id, changes)
        self.store.move(job.id, "succeeded", only_from=("running", "pausing"))
        message = "The job has successfully completed" + (f": {headline}" if headline else "")
        self.store.add_event(job.id, "completed", message)


def metrics_csv(run: RunFolder) -> bytes:
    """The run's metrics in OpenAI's result-file columns, a row per step."""
    rows: dict[int, dict[str, object]] = {}
    for line in run.read_metrics():
        row = rows.setdefault(int(line["step"]), {"step": line["step"]})
        if line.get("event") == "step":
            row |= {"train_loss": line.get("loss"), "train_accuracy": line.get("token_accuracy")}
        elif line.get("event") == "eval":
            row |= {"valid_loss": line.get("eval_loss"), "valid_mean_token_accuracy": line.get("eval_token_accuracy")}
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows[step] for step in sorted(rows) if step > 0)
    return text.getvalue().encode()


def _headline(run_dir: Path) -> str:
    """The evaluation's one line, or nothing when the run had no held-out data or the evaluation failed."""
    from tunesmith.evaluate.report import after_training, evaluate_to_folder

    options = after_training(run_dir)
    if options is None:
        return ""
    try:
        evaluation, _ = evaluate_to_folder(str(run_dir), options)
    except Exception:
        log.exception("the evaluation of %s failed", run_dir)
        return ""
    return evaluation.headline()
