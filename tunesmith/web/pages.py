"""The dashboard's pages and the few JSON routes they need beyond OpenAI's API.

Pages are Jinja2 templates from this package; scripts and styles are files of this package too (no CDN, nothing
fetched at run time). With an API key, the login page keeps the key in an HttpOnly cookie that the server's key
check accepts like a Bearer header.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from tunesmith.check import DataOptions, check_data
from tunesmith.jobs.records import JobRecord
from tunesmith.jobs.store import ACTIVE, Store
from tunesmith.models.load import load_tokenizer
from tunesmith.serve.app import KEY_COOKIE
from tunesmith.serve.errors import APIError

STATIC = Path(__file__).parent / "static"
"""The dashboard's own scripts and styles."""
TEMPLATES = Environment(loader=PackageLoader("tunesmith.web"), autoescape=select_autoescape())


def _page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**values), status_code=status)


class Dashboard:
    """The pages, for one server: its store, its key and its base model."""

    def __init__(self, store: Store, api_key: str | None, base_model: str) -> None:
        self.store, self.api_key, self.base_model = store, api_key, base_model

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/", self.home, methods=["GET"], include_in_schema=False)
        router.add_api_route("/login", self.login_form, methods=["GET"])
        router.add_api_route("/login", self.login, methods=["POST"])
        router.add_api_route("/data", self.data, methods=["GET"])
        router.add_api_route("/jobs", self.jobs, methods=["GET"])
        router.add_api_route("/playground", self.playground, methods=["GET"])
        router.add_api_route("/jobs/{job_id}", self.job, methods=["GET"], response_model=None)
        router.add_api_route("/static/{name}", self.static, methods=["GET"], response_model=None)
        router.add_api_route("/api/files/{file_id}/check", self.check, methods=["POST"])
        return router

    def home(self) -> RedirectResponse:
        return RedirectResponse("/data", status_code=303)

    def login_form(self) -> Response:
        if self.api_key is None:
            return RedirectResponse("/data", status_code=303)
        return _page("login.html")

    def login(self, key: Annotated[str, Form()]) -> Response:
        if self.api_key is None or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return _page("login.html", status=401, error="That key is not this server's.")
        response = RedirectResponse("/data", status_code=303)
        response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
        return response

    def data(self) -> HTMLResponse:
        return _page("data.html", model=self.base_model)

    def playground(self) -> HTMLResponse:
        return _page("playground.html")

    def jobs(self) -> HTMLResponse:
        rows = [_job_row(job) for job in self.store.jobs(None, 100).items]
        return _page("jobs.html", jobs=rows)

    def job(self, job_id: str) -> HTMLResponse:
        if self.store.job(job_id) is None:
            return _page("base.html", status=404)
        return _page("job.html", job_id=job_id)

    def static(self, name: str) -> FileResponse:
        files = {p.name: p for p in STATIC.iterdir()}  # only the package's own files, never a path from the URL
        if name not in files:
            raise APIError(404, f"no such asset: {name}", None, "not_found")
        return FileResponse(files[name])

    async def check(self, file_id: str) -> dict[str, Any]:
        """The data check of an uploaded file under the served model's tokenizer, problems named by the file id."""
        record = self.store.file(file_id)
        if record is None:
            raise APIError(404, f"No such File object: {file_id}", "id", "file_not_found")
        report = await asyncio.to_thread(self._check, record.path)
        for problem in report["errors"] + report["warnings"]:
            problem["file"] = record.filename
        report["stats"]["train"]["file"] = record.filename
        return report

    def _check(self, path: str) -> dict[str, Any]:
        return check_data(path, load_tokenizer(self.base_model), DataOptions()).as_dict()


def _job_row(job: JobRecord) -> dict[str, Any]:
    """What the jobs table shows of a job."""
    ended = job.finished_at or (None if job.status in ACTIVE else job.created_at)
    seconds = (ended or int(time.time())) - job.created_at
    return {
        "id": job.id,
        "status": job.status,
        "model": job.model,
        "fine_tuned_model": job.fine_tuned_model,
        "created_iso": datetime.fromtimestamp(job.created_at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "duration": f"{seconds // 60}m {seconds % 60:02d}s",
    }
