"""The few JSON routes the dashboard needs beyond OpenAI's API: a file's check, its lines and examples as trained,
the system prompt a tuned model learned with, and a finished job's exports as downloads."""

from __future__ import annotations

import asyncio
import itertools
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from tunesmith import paths
from tunesmith.check import DataOptions, check_data
from tunesmith.data.validate import RecordReader
from tunesmith.errors import TunesmithError
from tunesmith.export.writer import EXPORT_FORMATS, ExportFormat, ExportRequest, export
from tunesmith.jobs.records import FileRecord
from tunesmith.jobs.store import Store
from tunesmith.models.load import load_tokenizer, model_width
from tunesmith.runs import job_run
from tunesmith.server.errors import APIError
from tunesmith.server.tuned import CHECKPOINT_MARK
from tunesmith.tokenize.encode import conversation_of
from tunesmith.tokenize.marks import marks
from tunesmith.training.throughput import training_tokens_per_second

MAX_LINE = 2**31 - 1
"""The largest line number asked for (a larger one is a 400, not an overflow in the file reader)."""
LINE_LIMIT = 20_000
"""Characters of a line shown when a problem is clicked."""
PREVIEW_LIMIT = 10
"""Examples a preview shows at most."""
CHECKS_KEPT = 32
"""Check reports kept in memory (files never change, so a report stays true)."""


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


def _zip(folder: Path, target: Path) -> None:
    """The export folder as one zip (stored: weights do not compress), written atomically."""
    with paths.atomic_file(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())


class DashboardAPI:
    """The JSON routes, for one server's store and base model."""

    def __init__(self, store: Store, base_model: str) -> None:
        self.store, self.base_model = store, base_model
        self._checks: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/api")
        router.add_api_route("/files/{file_id}/check", self.check, methods=["POST"])
        router.add_api_route("/files/{file_id}/lines/{line}", self.line, methods=["GET"])
        router.add_api_route("/files/{file_id}/preview", self.preview, methods=["GET"])
        router.add_api_route("/system-prompt", self.system_prompt, methods=["GET"])
        router.add_api_route("/jobs/{job_id}/exports/{format}", self.make_export, methods=["POST"])
        router.add_api_route("/jobs/{job_id}/exports/{format}.zip", self.download, methods=["GET"])
        return router

    def _file(self, file_id: str) -> FileRecord:
        record = self.store.file(file_id)
        if record is None:
            raise APIError(404, f"No such File object: {file_id}", "id", "file_not_found")
        return record

    async def check(self, file_id: str, model: str | None = None) -> dict[str, Any]:
        """The data check of an uploaded file under a model's tokenizer (the served one by default), with the
        estimated training time on this machine; problems are named by the file's name, never its stored path."""
        record = self._file(file_id)
        key = (file_id, model or self.base_model)
        if key not in self._checks:
            self._checks[key] = await asyncio.to_thread(self._check, record, key[1])
            while len(self._checks) > CHECKS_KEPT:
                self._checks.popitem(last=False)
        return self._checks[key]

    def _check(self, record: FileRecord, model: str) -> dict[str, Any]:
        try:
            speed, width = training_tokens_per_second(model), model_width(model)
            report = check_data(
                record.path, load_tokenizer(model), DataOptions(), tokens_per_second=speed, width=width
            ).as_dict()
        except TunesmithError as exc:
            raise APIError(400, exc.message, "model", exc.code or "invalid_request") from None
        for problem in report["errors"] + report["warnings"]:
            problem["file"] = record.filename
        report["stats"]["train"]["file"] = record.filename
        return report

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

    async def make_export(self, job_id: str, format: str) -> dict[str, Any]:
        """Export a succeeded job's model (once; later calls reuse it) and say where to download it."""
        target, _ = self._exported(job_id, format)
        if not target.is_file():
            await asyncio.to_thread(self._export, job_id, format, target)  # type: ignore[arg-type]
        return {"url": f"/api/jobs/{job_id}/exports/{format}.zip", "bytes": target.stat().st_size}

    def _export(self, job_id: str, format: ExportFormat, target: Path) -> None:
        try:
            folder = export(ExportRequest(str(job_run(job_id).root), format))
        except TunesmithError as exc:
            raise APIError(400, exc.message, "format", exc.code or "invalid_request") from None
        _zip(folder, target)

    def download(self, job_id: str, format: str) -> FileResponse:
        target, name = self._exported(job_id, format)
        if not target.is_file():
            raise APIError(404, f"{format} of {job_id} is not exported yet: POST to make it", "format", "not_found")
        return FileResponse(target, media_type="application/zip", filename=name)
