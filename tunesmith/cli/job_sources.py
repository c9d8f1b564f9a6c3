"""Where `tunesmith jobs list|show|events|cancel|pause|resume` look: this host's jobs store, or a tunesmith (or any
OpenAI-compatible) server through the official openai client. Both give jobs and events in OpenAI's shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from tunesmith.errors import TunesmithError


class ServerError(TunesmithError):
    """What a remote server answered instead of a job: its error object, or that it could not be reached."""


class JobSource(Protocol):
    def jobs(self, limit: int) -> list[dict[str, Any]]: ...

    def job(self, job_id: str) -> dict[str, Any]: ...

    def events(self, job_id: str, limit: int) -> list[dict[str, Any]]:
        """Newest first, as the API lists them."""
        ...

    def act(self, job_id: str, action: str) -> dict[str, Any]:
        """cancel, pause or resume; the job after it."""
        ...


class LocalJobs:
    """The jobs store of this host (TUNESMITH_HOME, or TUNESMITH_DATABASE_URL)."""

    def __init__(self) -> None:
        from tunesmith.jobs.store import Store

        self.store = Store()

    def jobs(self, limit: int) -> list[dict[str, Any]]:
        return [job.as_object() for job in self.store.jobs(None, limit).items]

    def job(self, job_id: str) -> dict[str, Any]:
        from tunesmith.jobs.control import find_job

        return find_job(self.store, job_id).as_object()

    def events(self, job_id: str, limit: int) -> list[dict[str, Any]]:
        from tunesmith.jobs.control import find_job

        find_job(self.store, job_id)
        return [event.as_object() for event in self.store.events(job_id, None, limit).items]

    def act(self, job_id: str, action: str) -> dict[str, Any]:
        from tunesmith.jobs.control import cancel_job, pause_job, resume_job

        controls: dict[str, Callable[..., Any]] = {"cancel": cancel_job, "pause": pause_job, "resume": resume_job}
        return controls[action](self.store, job_id).as_object()  # type: ignore[no-any-return]


class RemoteJobs:
    """A server's fine-tuning jobs API, through the official openai client."""

    def __init__(self, server: str, api_key: str | None) -> None:
        import openai

        base = server.rstrip("/")
        base = base if base.endswith("/v1") else f"{base}/v1"
        self.server = server
        self.client = openai.OpenAI(base_url=base, api_key=api_key or "none", max_retries=2, timeout=60)

    def _call(self, call: Callable[[], Any]) -> Any:
        import openai

        try:
            return call()
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error", body) if isinstance(body, dict) else {}
            message = error.get("message") if isinstance(error, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            raise ServerError(f"{self.server}: {message or exc.message}", code=code or str(exc.status_code)) from None
        except openai.APIConnectionError as exc:
            raise ServerError(
                f"{self.server}: could not connect ({exc.__cause__ or exc})",
                hint="check --server (a running `tunesmith serve`) and the network",
            ) from None

    def jobs(self, limit: int) -> list[dict[str, Any]]:
        page = self._call(lambda: self.client.fine_tuning.jobs.list(limit=limit))
        return [_plain(job) for job in page.data]

    def job(self, job_id: str) -> dict[str, Any]:
        return _plain(self._call(lambda: self.client.fine_tuning.jobs.retrieve(job_id)))

    def events(self, job_id: str, limit: int) -> list[dict[str, Any]]:
        page = self._call(lambda: self.client.fine_tuning.jobs.list_events(job_id, limit=limit))
        return [_plain(event) for event in page.data]

    def act(self, job_id: str, action: str) -> dict[str, Any]:
        jobs = self.client.fine_tuning.jobs
        call = {"cancel": jobs.cancel, "pause": jobs.pause, "resume": jobs.resume}[action]
        return _plain(self._call(lambda: call(job_id)))


def _plain(obj: Any) -> dict[str, Any]:
    """An openai object as the server sent it (fields it left out stay out)."""
    return obj.model_dump(mode="json", exclude_unset=True)  # type: ignore[no-any-return]


def job_source(server: str | None, api_key: str | None) -> JobSource:
    """The server's jobs when one is named, else this host's store."""
    return RemoteJobs(server, api_key) if server else LocalJobs()
