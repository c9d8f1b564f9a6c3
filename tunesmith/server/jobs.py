"""OpenAI's files and fine_tuning.jobs routes, on the same server, behind the same key, with the same error objects.

The routes only read and write the store; the worker process validates a new job's files and trains it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from tunesmith.errors import ModelError
from tunesmith.jobs.control import JobError, cancel_job, find_job, pause_job, resume_job
from tunesmith.jobs.files import FILE_LIMIT, SUFFIXES, TooLarge, store_upload, suffix_of
from tunesmith.jobs.records import FileRecord, JobRecord, new_id
from tunesmith.jobs.schemas import JobRequest
from tunesmith.jobs.store import FileInUse, Page, Store, UnknownCursor
from tunesmith.models.sources import model_source
from tunesmith.server.access import audit, scoped
from tunesmith.server.errors import APIError

UPLOAD_PURPOSES = ("fine-tune",)
"""What may be uploaded: training and validation data."""
Limit = Annotated[int, Query(ge=1, le=100)]


def listing(page: Page, objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": objects,
        "has_more": page.has_more,
        "first_id": objects[0]["id"] if objects else None,
        "last_id": objects[-1]["id"] if objects else None,
    }


class JobsAPI:
    """The routes and what they share: the store."""

    def __init__(self, store: Store, file_limit: int = FILE_LIMIT, jobs_per_project: int | None = None) -> None:
        self.root, self.file_limit, self.jobs_per_project = store, file_limit, jobs_per_project

    @property
    def store(self) -> Store:
        """The store as this request's key sees it: its project's files and jobs."""
        return scoped(self.root)

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/v1/files", self.upload, methods=["POST"])
        router.add_api_route("/v1/files", self.list_files, methods=["GET"])
        router.add_api_route("/v1/files/{file_id}", self.get_file, methods=["GET"])
        router.add_api_route("/v1/files/{file_id}", self.delete_file, methods=["DELETE"])
        router.add_api_route("/v1/files/{file_id}/content", self.file_content, methods=["GET"], response_model=None)
        router.add_api_route("/v1/fine_tuning/jobs", self.create_job, methods=["POST"])
        router.add_api_route("/v1/fine_tuning/jobs", self.list_jobs, methods=["GET"])
        router.add_api_route("/v1/fine_tuning/jobs/{job_id}", self.get_job, methods=["GET"])
        for action in ("cancel", "pause", "resume"):
            router.add_api_route(f"/v1/fine_tuning/jobs/{{job_id}}/{action}", getattr(self, action), methods=["POST"])
        router.add_api_route("/v1/fine_tuning/jobs/{job_id}/events", self.events, methods=["GET"])
        router.add_api_route("/v1/fine_tuning/jobs/{job_id}/checkpoints", self.checkpoints, methods=["GET"])
        return router

    # files

    def upload(self, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]) -> dict[str, Any]:
        if purpose not in UPLOAD_PURPOSES:
            raise APIError(400, f"purpose {purpose!r} is not accepted here; use fine-tune", "purpose", "invalid_value")
        suffix = suffix_of(file.filename or "")
        if suffix is None:
            message = f"file {file.filename!r}: the name must end in one of {', '.join(SUFFIXES)}"
            raise APIError(400, message, "file", "invalid_file")
        try:
            record = store_upload(file.file, file.filename or "upload", purpose, suffix, self.file_limit)
        except TooLarge:
            message = f"The file is over {self.file_limit // (1024 * 1024)} MB"
            raise APIError(413, message, "file", "file_too_large") from None
        self.store.add_file(record)
        audit(self.root, "file.upload", record.id, record.filename)
        return record.as_object()

    def list_files(
        self,
        after: str | None = None,
        limit: Limit = 100,
        order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ) -> dict[str, Any]:
        page = paged(self.store.files, after, limit, purpose, newest_first=order == "desc")
        return listing(page, [f.as_object() for f in page.items])

    def _file(self, file_id: str) -> FileRecord:
        record = self.store.file(file_id)
        if record is None:
            raise APIError(404, f"No such File object: {file_id}", "id", "file_not_found")
        return record

    def get_file(self, file_id: str) -> dict[str, Any]:
        return self._file(file_id).as_object()

    def delete_file(self, file_id: str) -> dict[str, Any]:
        record = self._file(file_id)
        try:
            self.store.delete_file(file_id)
        except FileInUse as exc:
            message = f"{file_id} is a file of {exc.job_id}, which has not ended: cancel it or wait for it to end"
            raise APIError(409, message, "file_id", "file_in_use") from None
        Path(record.path).unlink(missing_ok=True)
        audit(self.root, "file.delete", file_id, record.filename)
        return {"id": file_id, "object": "file", "deleted": True}

    def file_content(self, file_id: str) -> FileResponse:
        record = self._file(file_id)
        return FileResponse(record.path, media_type="application/octet-stream", filename=None)

    # jobs

    async def create_job(self, body: JobRequest) -> dict[str, Any]:
        self._check_request(body)
        if self.jobs_per_project is not None and self.store.active_jobs() >= self.jobs_per_project:
            message = f"This project has {self.jobs_per_project} jobs not yet ended, its limit: wait for one to end"
            raise APIError(429, message, None, "rate_limit_exceeded", retry_after=60)
        hyper = body.chosen_hyperparameters().model_dump()
        job = JobRecord(
            id=new_id("ftjob-"),
            created_at=int(time.time()),
            model=body.model,
            training_file=body.training_file,
            validation_file=body.validation_file,
            hyperparameters=hyper,
            method=body.method_record(),
            suffix=body.suffix,
            seed=body.seed if body.seed is not None else random.randrange(2**31),
            metadata=body.metadata,
            status="validating_files",
            integrations=[i.model_dump(exclude_none=True) for i in body.integrations or []],
        )
        self.store.add_job(job)
        self.store.add_event(job.id, "created", f"Created fine-tuning job: {job.id}")
        audit(self.root, "job.create", job.id, job.model)
        return job.as_object()

    def _check_request(self, body: JobRequest) -> None:
        try:
            model_source(body.model)
        except ModelError as exc:
            message = f"The model '{body.model}' does not exist: {exc.message}"
            raise APIError(404, message, "model", "model_not_found") from None
        for param, file_id in (("training_file", body.training_file), ("validation_file", body.validation_file)):
            record = self.store.file(file_id) if file_id else None
            if file_id and record is None:
                raise APIError(400, f"invalid {param}: {file_id} does not exist", param, "invalid_file")
            if record is not None and record.purpose != "fine-tune":
                raise APIError(400, f"invalid {param}: {file_id} has purpose {record.purpose}", param, "invalid_file")

    def list_jobs(self, request: Request, after: str | None = None, limit: Limit = 20) -> dict[str, Any]:
        metadata = {
            key[len("metadata[") : -1]: value
            for key, value in request.query_params.items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        page = paged(self.store.jobs, after, limit, metadata)
        return listing(page, [j.as_object() for j in page.items])

    def _job(self, job_id: str) -> JobRecord:
        return _answer(find_job, self.store, job_id)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._job(job_id).as_object()

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = _answer(cancel_job, self.store, job_id)
        audit(self.root, "job.cancel", job_id)
        return job.as_object()

    def pause(self, job_id: str) -> dict[str, Any]:
        job = _answer(pause_job, self.store, job_id)
        audit(self.root, "job.pause", job_id)
        return job.as_object()

    def resume(self, job_id: str) -> dict[str, Any]:
        job = _answer(resume_job, self.store, job_id)
        audit(self.root, "job.resume", job_id)
        return job.as_object()

    def events(self, job_id: str, after: str | None = None, limit: Limit = 20) -> dict[str, Any]:
        self._job(job_id)
        page = paged(self.store.events, job_id, after, limit)
        return listing(page, [e.as_object() for e in page.items])

    def checkpoints(self, job_id: str, after: str | None = None, limit: Limit = 10) -> dict[str, Any]:
        job = self._job(job_id)
        page = paged(self.store.checkpoints, job_id, after, limit)
        return listing(page, [c.as_object(job.tuned_name()) for c in page.items])


def paged(listing: Callable[..., Page], *args: Any, **options: Any) -> Page:
    """A page of a list; an `after` that is not in the list is a 400 (not the list from its top again)."""
    try:
        return listing(*args, **options)
    except UnknownCursor as exc:
        raise APIError(400, f"after: {exc.after!r} is not an object of this list", "after", "invalid_value") from None


def _answer(action: Callable[[Store, str], JobRecord], store: Store, job_id: str) -> JobRecord:
    """A control action, its JobError as OpenAI's error object (404 for an unknown job, else 400)."""
    try:
        return action(store, job_id)
    except JobError as exc:
        status = 404 if exc.code == "fine_tune_not_found" else 400
        raise APIError(status, exc.message, "fine_tune_id", exc.code) from None
