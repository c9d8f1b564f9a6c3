"""The few JSON routes the dashboard needs beyond OpenAI's API: a file's check, its lines and examples as trained,
the system prompt a tuned model learned with, and a finished job's exports as downloads.

A check and an export are heavy (a model's training speed is measured, weights are merged and written): they are
tasks the jobs worker does. Their POST answers 202 with the task, which the page polls at GET /api/tasks/{id}
until it answers 200 with the result (or an error object).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse

from tunesmith.check import DataOptions
from tunesmith.data.validate import RecordReader
from tunesmith.export.writer import EXPORT_FORMATS
from tunesmith.jobs.records import FileRecord, TaskRecord
from tunesmith.jobs.store import Store
from tunesmith.models.load import load_tokenizer
from tunesmith.runs import job_run
from tunesmith.server.access import audit, scoped
from tunesmith.server.errors import APIError
from tunesmith.server.tuned import CHECKPOINT_MARK
from tunesmith.tokenize.encode import conversation_of
from tunesmith.tokenize.marks import marks

MAX_LINE = 2**31 - 1
"""The largest line number asked for (a larger one is a 400, not an overflow in the file reader)."""
LINE_LIMIT = 20_000
"""Characters of a line shown when a problem is clicked."""
PREVIEW_LIMIT = 10
"""Examples a preview shows at most."""


def _lines_of(record: FileRecord, line: int) -> str:
    """Line `line` (1-based) of a stored text file, cut at LINE_LIMIT characters."""
    if line < 1 or Path(record.filename).suffix == ".parquet":
        raise APIError(404, f"{record.filename} has no line {line}", "line", "not_found")
    with open(record.path, encoding="utf-8", errors="replace") as handle:
        text = next(itertools.islice(handle, line - 1, None), None)
    if text is None:
        raise APIError(404, f"{record.filename} has no line {line}", "line", "not_found")
    return text.rstrip("\n")[:LINE_LIMIT]


def _system_prompt(path: str) -> str:
    """The system message of the first conversation of a training file, or ""."""
    for chunk in RecordReader(path).chunks():
        for _, record in chunk:
            conversation = conversation_of(record)
            if conversation is not None:
                first = conversation.messages[0]
                return first.content if first.role == "system" else ""
        break
    return ""


def _named(report: dict[str, Any], filename: str) -> dict[str, Any]:
    """A check report naming the file as it was uploaded, never by where it is stored."""
    for problem in report["errors"] + report["warnings"]:
        problem["file"] = filename
    report["stats"]["train"]["file"] = filename
    return report


def _download(job_id: str, format: str, size: int) -> JSONResponse:
    """Where a made export is downloaded, and its size."""
    return JSONResponse({"url": f"/api/jobs/{job_id}/exports/{format}.zip", "bytes": size})


class DashboardAPI:
    """The JSON routes, for one server's store and base model."""

    def __init__(self, store: Store, base_model: str) -> None:
        self.root, self.base_model = store, base_model

    @property
    def store(self) -> Store:
        """The store as this request's key sees it: its project's files, jobs and tasks."""
        return scoped(self.root)

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/api")
        router.add_api_route("/files/{file_id}/check", self.check, methods=["POST"])
        router.add_api_route("/files/{file_id}/lines/{line}", self.line, methods=["GET"])
        router.add_api_route("/files/{file_id}/preview", self.preview, methods=["GET"])
        router.add_api_route("/system-prompt", self.system_prompt, methods=["GET"])
        router.add_api_route("/jobs/{job_id}/exports/{format}", self.make_export, methods=["POST"])
        router.add_api_route("/jobs/{job_id}/exports/{format}.zip", self.download, methods=["GET"])
        router.add_api_route("/tasks/{task_id}", self.task, methods=["GET"], response_model=None)
        return router

    def _file(self, file_id: str) -> FileRecord:
        record = self.store.file(file_id)
        if record is None:
            raise APIError(404, f"No such File object: {file_id}", "id", "file_not_found")
        return record

    def check(self, file_id: str, model: str | None = None) -> JSONResponse:
        """The data check of an uploaded file under a model's tokenizer (the served one by default), with the
        estimated training time on this machine: a task of the worker, done once per file and model."""
        record = self._file(file_id)
        chosen = model or self.base_model
        args = {"path": record.path, "model": chosen, "filename": record.filename}
        task = self.store.ask_task("check", f"{file_id}|{chosen}", args)
        return self._answer(task)

    def task(self, task_id: str) -> JSONResponse:
        """How a task stands: 202 while it waits or runs, 200 with its result, or its error object."""
        task = self.store.task(task_id)
        if task is None:
            raise APIError(404, f"No such task: {task_id}", "task_id", "not_found")
        return self._answer(task)

    def _answer(self, task: TaskRecord) -> JSONResponse:
        if task.status in ("queued", "running"):
            return JSONResponse({"id": task.id, "object": "task", "status": task.status}, status_code=202)
        if task.error is not None:
            error = task.error
            status = 500 if error.get("code") == "server_error" else 400
            raise APIError(status, error["message"], error.get("param"), error.get("code"))
        result = task.result or {}
        if task.kind == "check":
            return JSONResponse(_named(result, task.args["filename"]))
        return _download(task.args["job_id"], task.args["format"], result["bytes"])

    def line(self, file_id: str, line: Annotated[int, PathParam(ge=1, le=MAX_LINE)]) -> dict[str, Any]:
        """One line of an uploaded file as it was sent, to see what a problem is about."""
        return {"line": line, "text": _lines_of(self._file(file_id), line)}

    async def preview(self, file_id: str, n: int = 3) -> dict[str, Any]:
        """The first examples as the model sees them: runs of trained and masked text."""
        record = self._file(file_id)
        return {"examples": await asyncio.to_thread(self._preview, record, max(1, min(n, PREVIEW_LIMIT)))}

    def _preview(self, record: FileRecord, n: int) -> list[dict[str, Any]]:
        tokenizer = load_tokenizer(self.base_model)
        return [
            {
                "line": example.line,
                "tokens": len(example.input_ids),
                "trained": example.supervised,
                "marks": [{"text": mark.text, "trained": mark.trained} for mark in marks(example, tokenizer)],
            }
            for example in DataOptions().first(record.path, tokenizer, n)
        ]

    def system_prompt(self, model: str) -> dict[str, str]:
        """The system prompt a tuned model was trained with (its training file's first), "" for other models."""
        job = self.store.job_by_model(model.partition(CHECKPOINT_MARK)[0])
        record = self.store.file(job.training_file) if job else None
        return {"model": model, "system": _system_prompt(record.path) if record else ""}

    def _exported(self, job_id: str, format: str) -> tuple[Path, str]:
        job = self.store.job(job_id)
        if job is None or job.status != "succeeded" or job.fine_tuned_model is None:
            raise APIError(404, f"{job_id} has no tuned model to export", "job_id", "not_found")
        if format not in EXPORT_FORMATS:
            raise APIError(400, f"format {format!r} is unknown: use {', '.join(EXPORT_FORMATS)}", "format", None)
        name = job.fine_tuned_model.replace(":", "_").replace("/", "_")
        return job_run(job_id).export_zip(format), f"{name}-{format}.zip"

    def make_export(self, job_id: str, format: str) -> JSONResponse:
        """Export a succeeded job's model (once, by the worker; later calls reuse it) and say where to download
        it."""
        target, _ = self._exported(job_id, format)
        if target.is_file():
            return _download(job_id, format, target.stat().st_size)
        task = self.store.ask_task("export", f"{job_id}|{format}", {"job_id": job_id, "format": format})
        audit(self.root, "export.create", job_id, format)
        return self._answer(task)

    def download(self, job_id: str, format: str) -> FileResponse:
        target, name = self._exported(job_id, format)
        if not target.is_file():
            raise APIError(404, f"{format} of {job_id} is not exported yet: POST to make it", "format", "not_found")
        return FileResponse(target, media_type="application/zip", filename=name)
