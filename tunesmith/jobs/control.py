"""Cancel, pause and resume: what the API and the CLI both do to a job, through the store."""

from __future__ import annotations

import time

from tunesmith.errors import TunesmithError
from tunesmith.jobs.records import JobRecord
from tunesmith.jobs.store import Store


class JobError(TunesmithError):
    """A job that does not exist, or cannot do what was asked in its state."""


def find_job(store: Store, job_id: str) -> JobRecord:
    job = store.job(job_id)
    if job is None:
        raise JobError(f"Could not find fine tune: {job_id}", code="fine_tune_not_found")
    return job


def cancel_job(store: Store, job_id: str) -> JobRecord:
    """A job not yet running ends at once; a running one stops after its current step and keeps its checkpoint."""
    job = find_job(store, job_id)
    if store.move(job_id, "cancelled", only_from=("validating_files", "queued", "paused")):
        store.update_job(job_id, {"finished_at": int(time.time())})
        store.add_event(job_id, "cancelled", "Fine-tuning job cancelled")
    elif job.status in ("running", "pausing"):
        store.request(job_id, "cancel")
    else:
        raise JobError(f"Job {job_id} has already {job.status}", code="invalid_state")
    return find_job(store, job_id)


def pause_job(store: Store, job_id: str) -> JobRecord:
    """A running job saves a checkpoint after its current step and waits, paused."""
    job = find_job(store, job_id)
    if not store.move(job_id, "pausing", only_from=("running",)):
        raise JobError(f"Job {job_id} is {job.status}; only a running job pauses", code="invalid_state")
    store.request(job_id, "pause")
    store.add_event(job_id, f"pausing:{int(time.time())}", "Pausing the job after the current step")
    return find_job(store, job_id)


def resume_job(store: Store, job_id: str) -> JobRecord:
    """A paused job is queued again; the worker continues it from its checkpoint."""
    job = find_job(store, job_id)
    if not store.move(job_id, "queued", only_from=("paused",)):
        raise JobError(f"Job {job_id} is {job.status}; only a paused job resumes", code="invalid_state")
    store.request(job_id, None)
    store.add_event(job_id, f"resumed-by-user:{int(time.time())}", "Job resumed: queued to continue")
    return find_job(store, job_id)
