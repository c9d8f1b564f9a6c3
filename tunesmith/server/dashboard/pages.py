"""The dashboard's pages (the JSON routes they use beyond OpenAI's API are in api.py beside it).

Pages are Jinja2 templates from this package; scripts and styles are files of this package too (no CDN, nothing
fetched at run time). Signing in with a key (the server's own or a project's) opens a session: a random token in an
HttpOnly, SameSite=Strict cookie, whose digest the store keeps with whose key it was (never the key itself); it
ends after SESSION_SECONDS, on logout, or when its key is revoked. Every page shows the project it acts in.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from tunesmith.auto import AUTO_BATCH_TOKENS
from tunesmith.config import LoraSettings
from tunesmith.export.writer import EXPORT_FORMATS
from tunesmith.jobs.access import SESSION_SECONDS, Access
from tunesmith.jobs.records import JobRecord
from tunesmith.jobs.store import ACTIVE, Store
from tunesmith.models.load import cached_models
from tunesmith.models.sources import EMBEDDED
from tunesmith.runs import REPORT_FILES, job_run
from tunesmith.server.access import SESSION_COOKIE, current, key_matches, scoped
from tunesmith.server.dashboard.api import DashboardAPI
from tunesmith.server.errors import APIError

STATIC = Path(__file__).parent / "static"
"""The dashboard's own scripts and styles."""
TEMPLATES = Environment(loader=PackageLoader("tunesmith.server.dashboard"), autoescape=select_autoescape())
REPORT_POLICY = "sandbox allow-same-origin; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""An evaluation report is shown as it was written: no script runs, nothing is fetched (same origin, so that the page
that embeds it can size it and screenshots include it)."""


def _page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    who = current()
    return HTMLResponse(TEMPLATES.get_template(name).render(who=who, **values), status_code=status)


class Dashboard:
    """The pages, for one server: its store, its key and its base model."""

    def __init__(self, store: Store, api_key: str | None, base_model: str) -> None:
        self.root, self.api_key, self.base_model = store, api_key, base_model
        self.access = Access(store)
        self.api = DashboardAPI(store, base_model)

    @property
    def store(self) -> Store:
        """The store as this session's key sees it: its project's files and jobs."""
        return scoped(self.root)

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/", self.home, methods=["GET"], include_in_schema=False)
        router.add_api_route("/login", self.login_form, methods=["GET"])
        router.add_api_route("/login", self.login, methods=["POST"])
        router.add_api_route("/logout", self.logout, methods=["POST"])
        router.add_api_route("/data", self.data, methods=["GET"])
        router.add_api_route("/jobs", self.jobs, methods=["GET"])
        router.add_api_route("/jobs/new", self.new_job, methods=["GET"])
        router.add_api_route("/playground", self.playground, methods=["GET"])
        router.add_api_route("/export", self.exports, methods=["GET"])
        router.add_api_route("/jobs/{job_id}", self.job, methods=["GET"], response_model=None)
        router.add_api_route("/jobs/{job_id}/report", self.report, methods=["GET"], response_model=None)
        router.add_api_route("/static/{name}", self.static, methods=["GET"], response_model=None)
        router.add_api_route("/favicon.ico", self.favicon, methods=["GET"], response_model=None)
        router.include_router(self.api.router())
        return router

    def home(self) -> RedirectResponse:
        return RedirectResponse("/data", status_code=303)

    def login_form(self) -> Response:
        if self.api_key is None and not self.access.keys_exist():
            return RedirectResponse("/data", status_code=303)
        return _page("login.html")

    def login(self, key: Annotated[str, Form()]) -> Response:
        """A session for a valid key: the cookie holds a new random token, never the key."""
        if self.api_key is not None and key_matches(key, self.api_key):
            token = self.access.open_session("server", None, "admin")
        elif (record := self.access.key_for(key)) is not None:
            token = self.access.open_session(record.id, record.project, record.role)
        else:
            return _page("login.html", status=401, error="That key is not one of this server's (or was revoked).")
        response = RedirectResponse("/data", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_SECONDS, httponly=True, samesite="strict", path="/")
        return response

    def logout(self, request: Request) -> Response:
        self.access.close_session(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def data(self) -> HTMLResponse:
        return _page("data.html", model=self.base_model)

    def playground(self) -> HTMLResponse:
        return _page("playground.html")

    def new_job(self, training_file: str | None = None) -> HTMLResponse:
        files = self.store.files(None, 100, "fine-tune").items
        models = list(dict.fromkeys([self.base_model, *EMBEDDED, *(p.name for p in cached_models())]))
        return _page(
            "new_job.html",
            files=files,
            chosen=training_file,
            models=models,
            batch_tokens=AUTO_BATCH_TOKENS["cpu"],
            lora_rank=LoraSettings.model_fields["rank"].default,
        )

    def exports(self) -> HTMLResponse:
        done = [job for job in self.store.jobs_with_status("succeeded") if not job.model_deleted]
        return _page("export.html", jobs=[_job_row(job) for job in done], formats=EXPORT_FORMATS)

    def jobs(self) -> HTMLResponse:
        rows = [_job_row(job) for job in self.store.jobs(None, 100).items]
        return _page("jobs.html", jobs=rows)

    def job(self, job_id: str) -> HTMLResponse:
        if self.store.job(job_id) is None:
            return _page("base.html", status=404)
        return _page("job.html", job_id=job_id)

    def report(self, job_id: str) -> Response:
        """A succeeded job's evaluation report, to embed in its page."""
        report = job_run(job_id).eval / REPORT_FILES[-1]
        if self.store.job(job_id) is None or not report.is_file():
            raise APIError(404, f"{job_id} has no evaluation report", "job_id", "not_found")
        return FileResponse(report, media_type="text/html", headers={"Content-Security-Policy": REPORT_POLICY})

    def static(self, name: str) -> FileResponse:
        files = {p.name: p for p in STATIC.iterdir()}  # only the package's own files, never a path from the URL
        if name not in files:
            raise APIError(404, f"no such asset: {name}", None, "not_found")
        return FileResponse(files[name])

    def favicon(self) -> FileResponse:
        """Browsers ask for /favicon.ico whatever the page links: the icon, an SVG, public like the login page."""
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


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
