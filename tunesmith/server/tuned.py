"""The models jobs made, for the server: found by their ft: id, attached on first use, no restart.

`ft:<base>:<suffix>:<job id>` is a succeeded job's final adapter; `...:ckpt-step-N` is its checkpoint at step N (a
LoRA or DoRA job's, while the checkpoint is kept: the last three).
"""

from __future__ import annotations

from tunesmith.jobs.records import JobRecord
from tunesmith.jobs.store import Store
from tunesmith.models.load import local_path
from tunesmith.runs import job_run
from tunesmith.serve.loaded import Tuned
from tunesmith.server.access import audit, scoped

CHECKPOINT_MARK = ":ckpt-step-"


class JobModels:
    """The jobs store as the server's source of tuned models (serve.loaded.TunedModels)."""

    def __init__(self, store: Store) -> None:
        self.root = store

    @property
    def store(self) -> Store:
        """The store as the asking request's key sees it: its project's models (all of them outside requests)."""
        return scoped(self.root)

    def _job(self, name: str) -> JobRecord | None:
        job = self.store.job(name.rsplit(":", 1)[-1])
        return job if job is not None and job.tuned_name() == name and not job.model_deleted else None

    def find(self, model_id: str) -> Tuned | None:
        name, mark, step = model_id.partition(CHECKPOINT_MARK)
        job = self._job(name)
        if job is None:
            return None
        if mark:
            return self._checkpoint(job, step)
        final = job_run(job.id).final
        if job.status != "succeeded" or not final.is_dir():
            return None
        return Tuned(final, final, job.model, job.finished_at or job.created_at)

    def _checkpoint(self, job: JobRecord, step: str) -> Tuned | None:
        record = self.store.checkpoint(job.id, int(step)) if step.isdigit() else None
        adapter = job_run(job.id).checkpoint_adapter(record.step) if record else None
        if record is None or adapter is None or not adapter.is_dir():
            return None
        return Tuned(adapter, local_path(job.model), job.model, record.created_at)

    def ids(self) -> list[str]:
        jobs = self.store.jobs_with_status("succeeded")
        return [job.fine_tuned_model for job in jobs if job.fine_tuned_model and not job.model_deleted]

    def delete(self, model_id: str) -> bool:
        job = self._job(model_id)
        if job is None or job.status != "succeeded":
            return False
        self.store.update_job(job.id, {"model_deleted": True})
        audit(self.root, "model.delete", model_id)
        return True
