"""The models finished jobs made, for the server: found by their ft: id, attached on first use, no restart."""

from __future__ import annotations

from pathlib import Path

from tunesmith import paths
from tunesmith.jobs.store import Store
from tunesmith.runs import RunFolder


def job_run(job_id: str) -> RunFolder:
    """The run folder of a job."""
    return RunFolder(paths.runs_dir() / job_id)


class JobModels:
    """The jobs store as the server's source of tuned models (serve.loaded.TunedModels)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def find(self, model_id: str) -> tuple[Path, int] | None:
        job = self.store.job_by_model(model_id)
        if job is None or job.status != "succeeded":
            return None
        final = job_run(job.id).final
        return (final, job.finished_at or job.created_at) if final.is_dir() else None

    def ids(self) -> list[str]:
        return [job.fine_tuned_model for job in self.store.jobs_with_status("succeeded") if job.fine_tuned_model]
