"""Who is asking, and what they may do: every route's need (ROUTES), checked before the route runs.

A request is someone's: the server's own key (`serve --api-key`: admin of every project), a project's key
(`tunesmith keys create`), or a dashboard session (a cookie holding a random token; the store keeps its digest and
whose key it was). Keys are compared in constant time or found by their digest; nothing else is trusted. A route
missing from ROUTES is refused (a new route cannot be left open by forgetting it), and the request's principal is
what the routes scope the store by (`Store.scoped`): another project's ids answer 404 exactly as unknown ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
import time
from collections import defaultdict, deque
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunesmith.errors import ConfigError
from tunesmith.jobs.access import Access, check_project
from tunesmith.jobs.store import Store
from tunesmith.server.errors import APIError, http_error

Need = Literal["public", "models", "read", "write", "admin"]
SESSION_COOKIE = "tunesmith_session"
"""The dashboard's session: a random token (HttpOnly, SameSite=Strict), never a key."""
LOGIN_PATH = "/login"
ALLOWED: dict[str, set[str]] = {
    "admin": {"models", "read", "write", "admin"},
    "member": {"models", "read", "write"},
    "reader": {"models", "read"},
    "inference": {"models"},
    "none": set(),
}
"""What each role may do."""
_F, _J, _W = "/v1/files", "/v1/fine_tuning/jobs", "/v1/webhook_endpoints"
ROUTES: dict[tuple[str, str], Need] = {
    ("GET", "/login"): "public",
    ("POST", "/login"): "public",
    ("GET", "/static/{name}"): "read",  # but PUBLIC_ASSETS
    ("GET", "/favicon.ico"): "public",
    ("POST", "/logout"): "models",
    ("GET", "/v1/models"): "models",
    ("GET", "/v1/models/{model_id:path}"): "models",
    ("POST", "/v1/chat/completions"): "models",
    ("POST", "/v1/completions"): "models",
    ("DELETE", "/v1/models/{model_id:path}"): "admin",
    ("GET", _F): "read",
    ("GET", _F + "/{file_id}"): "read",
    ("GET", _F + "/{file_id}/content"): "read",
    ("POST", _F): "write",
    ("DELETE", _F + "/{file_id}"): "write",
    ("GET", _J): "read",
    ("GET", _J + "/{job_id}"): "read",
    ("GET", _J + "/{job_id}/events"): "read",
    ("GET", _J + "/{job_id}/checkpoints"): "read",
    ("POST", _J): "write",
    ("POST", _J + "/{job_id}/cancel"): "write",
    ("POST", _J + "/{job_id}/pause"): "write",
    ("POST", _J + "/{job_id}/resume"): "write",
    ("POST", "/v1/fine_tuning/alpha/graders/run"): "read",
    ("POST", "/v1/fine_tuning/alpha/graders/validate"): "read",
    ("GET", _W): "read",
    ("GET", _W + "/{endpoint_id}"): "read",
    ("POST", _W): "admin",
    ("POST", _W + "/{endpoint_id}"): "admin",
    ("DELETE", _W + "/{endpoint_id}"): "admin",
    ("POST", _W + "/{endpoint_id}/rotate_secret"): "admin",
    ("POST", _W + "/{endpoint_id}/test"): "admin",
    ("GET", "/"): "read",
    ("GET", "/data"): "read",
    ("GET", "/jobs"): "read",
    ("GET", "/jobs/new"): "read",
    ("GET", "/playground"): "models",
    ("GET", "/export"): "read",
    ("GET", "/jobs/{job_id}"): "read",
    ("GET", "/jobs/{job_id}/report"): "read",
    ("POST", "/api/files/{file_id}/check"): "write",
    ("GET", "/api/files/{file_id}/lines/{line}"): "read",
    ("GET", "/api/files/{file_id}/preview"): "read",
    ("GET", "/api/system-prompt"): "models",
    ("POST", "/api/jobs/{job_id}/exports/{format}"): "write",
    ("GET", "/api/jobs/{job_id}/exports/{format}.zip"): "read",
    ("GET", "/api/tasks/{task_id}"): "read",
}  # fmt: skip
"""Every route's need: public (no key), models (list and call models), read, write, admin."""
PUBLIC_ASSETS = ("/static/app.css", "/static/app.js", "/static/favicon.svg")
"""What the login page itself needs; the pages' other scripts need a key like the pages."""


@dataclass(frozen=True)
class Principal:
    """Who a request is."""

    key_id: str
    """The key's id ("server" for the server's own key, "open" on a server without keys)."""
    project: str | None
    """The project it acts in (None: every project, the server's key without an OpenAI-Project header)."""
    role: str
    """admin, member, reader or inference."""
    via: str = "bearer"
    """bearer (an Authorization header) or session (the dashboard's cookie)."""
    requests_per_minute: int | None = None
    """The key's own request limit (None: the server's)."""

    def may(self, need: str) -> bool:
        return need == "public" or need in ALLOWED[self.role]


OPEN = Principal("open", None, "admin", "open")
"""A server without keys: everyone is admin of every project, as before projects."""
NOBODY = Principal("nobody", "", "none", "none")
"""A public route's principal: no project (the empty name matches none), no role."""
WATCH_SECONDS = 0.25
"""How often a streamed answer's key is checked (one indexed lookup)."""
PRINCIPAL_BOX = "tunesmith.principal"
"""Where the gate leaves the principal in the ASGI scope for the stream watcher."""
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=OPEN)


def current() -> Principal:
    """The principal of the request being handled (outside requests: the server itself, every project)."""
    return _current.get()


def scoped(store: Store) -> Store:
    """The store as the current request's key sees it."""
    return store.scoped(current().project)


def bearer_token(header: str) -> str:
    """The token of an Authorization header; the scheme is case-insensitive (RFC 7235), so `bearer KEY` counts."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def key_matches(given: str, key: str) -> bool:
    """Constant-time comparison, so the time taken says nothing of how much of the key was right."""
    return hmac.compare_digest(given.encode(), key.encode())


class Denied(Exception):
    """A request that may not go on: its answer."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def denied_response(request: Request, exc: Exception) -> Response:
    """The answer a Denied carries (the app's exception handler for it)."""
    assert isinstance(exc, Denied)
    return exc.response


class RateLimiter:
    """Requests per minute per key: a sliding window of each key's last minute of request times."""

    def __init__(self, default: int | None) -> None:
        self.default = default
        self.seen: dict[str, deque[float]] = defaultdict(deque)

    def wait(self, key_id: str, limit: int | None) -> float:
        """0 when the request may go now (and it is counted), else the seconds until it may."""
        limit = limit or self.default
        if not limit:
            return 0.0
        now, times = time.monotonic(), self.seen[key_id]
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) >= limit:
            return 60 - (now - times[0])
        times.append(now)
        return 0.0


class Gate:
    """Checks each request before its route runs (an app-wide dependency, so that the route it was matched to is
    known: `check`), and ends a streamed answer once the key behind it is revoked (ASGI middleware around the app:
    `middleware`)."""

    def __init__(self, api_key: str | None, store: Store, requests_per_minute: int | None = None) -> None:
        self.api_key, self.access = api_key, Access(store)
        self.limiter = RateLimiter(requests_per_minute)

    async def check(self, request: Request) -> None:
        """Who is asking and whether they may: the principal the route then runs as, or Denied."""
        route = request.scope.get("route")
        path = getattr(route, "path", "")
        method = "GET" if request.method == "HEAD" else request.method
        need = "public" if request.url.path in PUBLIC_ASSETS else ROUTES.get((method, path))
        if need is None:  # fail closed: a route without a rule is no one's
            raise Denied(APIError(403, f"{method} {path} has no access rule", None, "forbidden").response())
        principal = NOBODY if need == "public" else self._principal(request, need)
        _current.set(principal)
        box = request.scope.get(PRINCIPAL_BOX)
        if box is not None:
            box.append(principal)

    def _principal(self, request: Request, need: Need) -> Principal:
        principal = self._who(request)
        if principal is None:
            raise Denied(_unauthenticated(request))
        if principal.via == "session" and request.method not in ("GET", "HEAD") and not _same_origin(request):
            raise Denied(APIError(403, "cross-site request refused", None, "csrf_failed").response())
        principal = _project_header(request, principal)
        if not principal.may(need):
            message = f"This key ({principal.role}) may not do this: it needs {need} access"
            raise Denied(APIError(403, message, None, "insufficient_permissions").response())
        wait = self.limiter.wait(principal.key_id, principal.requests_per_minute)
        if wait > 0:
            message = "Rate limit reached for requests per minute of this key"
            raise Denied(APIError(429, message, None, "rate_limit_exceeded", retry_after=wait).response())
        return principal

    def _who(self, request: Request) -> Principal | None:
        token = bearer_token(request.headers.get("authorization", ""))
        if token and self.api_key is not None and key_matches(token, self.api_key):
            return Principal("server", None, "admin")
        key = self.access.key_for(token) if token else None
        if key is not None:
            return Principal(key.id, key.project, key.role, requests_per_minute=key.requests_per_minute)
        cookie = request.cookies.get(SESSION_COOKIE, "")
        session = self.access.session(cookie) if cookie and not token else None
        if session is not None:
            return Principal(session.key_id, session.project, session.role, "session", session.requests_per_minute)
        if self.api_key is None and not self.access.keys_exist():
            return OPEN  # a server without keys, as before projects: whatever key a client sends
        return None

    def unrouted(self, request: Request, exc: Exception) -> Response:
        """A path or method no route takes: 401 to whoever has no key (which paths exist is not told to strangers),
        else the app's own 404 or 405 error object."""
        if self._who(request) is None:
            return _unauthenticated(request)
        return http_error(request, exc)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The app with each streamed answer watched: cut once its key is revoked (checked every WATCH_SECONDS).
        Plain ASGI, not BaseHTTPMiddleware, so that a handler still sees its client disconnect."""

        async def watched_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            box: list[Principal] = []
            scope[PRINCIPAL_BOX] = box
            with contextlib.suppress(_Revoked):  # the stream was ended where its key stopped being valid
                await app(scope, receive, self._watched(send, box))

        return watched_app

    def _watched(self, send: Send, box: list[Principal]) -> Send:
        checked = [time.monotonic()]

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("more_body") and box:
                now = time.monotonic()
                if box[0].key_id not in ("server", "open", "nobody") and now - checked[0] >= WATCH_SECONDS:
                    checked[0] = now
                    if not self._still_valid(box[0]):
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                        raise _Revoked
            await send(message)

        return watched

    def _still_valid(self, principal: Principal) -> bool:
        """The key behind a request (sent, or the one its session signed in with) is still usable."""
        key = self.access.key(principal.key_id)
        return key is not None and key.usable(time.time())


class _Revoked(Exception):
    """A stream's key was revoked while it was being answered."""


def _unauthenticated(request: Request) -> Response:
    if "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(("/v1/", "/api/")):
        return RedirectResponse(LOGIN_PATH, status_code=303)
    message = "Incorrect or missing API key (send Authorization: Bearer KEY)"
    return APIError(401, message, None, "invalid_api_key").response()


def _same_origin(request: Request) -> bool:
    """A cookie-carried request that changes something must come from this server's own pages: its Origin (or
    Referer) names this host (SameSite=Strict stops other sites' posts already; this holds for old browsers too)."""
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    return bool(source) and urlsplit(source).netloc == request.headers.get("host", "")


def _project_header(request: Request, principal: Principal) -> Principal:
    """OpenAI's OpenAI-Project header: the server's key acts in the project it names; a project's key only in its
    own (another is refused, never ignored)."""
    named = request.headers.get("openai-project")
    if not named:
        return principal
    try:
        check_project(named)
    except ConfigError:
        message = f"OpenAI-Project: {named!r} is not a project name"
        raise Denied(APIError(400, message, None, "invalid_project").response()) from None
    if principal.project is None:
        return replace(principal, project=named)
    if named != principal.project:
        message = f"This key belongs to another project than {named!r}"
        raise Denied(APIError(403, message, None, "mismatched_project").response())
    return principal


def audit(store: Store, action: str, target: str | None, detail: str = "") -> None:
    """Record what the current request's key did."""
    who = current()
    Access(store).record(action, who.key_id, who.project, target, detail)
