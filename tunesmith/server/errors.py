"""Errors as OpenAI's object, {"error": {"message", "type", "param", "code"}}, and the request body limit."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from tunesmith.errors import field_path

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body; more is refused with 413 before it is read into memory (a context's worth of text is far
less)."""
RETRY_AFTER_SECONDS = 2
"""What a 429 asks a client to wait: about the time a batch of short answers takes to make room."""


class APIError(Exception):
    """An error answered as OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        kind = {401: "authentication_error", 429: "rate_limit_error", 500: "server_error"}.get(
            self.status, "invalid_request_error"
        )
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        wait = max(1, round(self.retry_after)) if self.retry_after is not None else RETRY_AFTER_SECONDS
        headers = {"Retry-After": str(wait)} if self.status == 429 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes (`larger[path]` on some paths) is answered 413, declared
    (Content-Length) or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES, larger: Mapping[str, int] | None = None) -> None:
        self.app, self.default, self.larger = app, limit, dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.default)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            await _error(400, "Content-Length must be a number", "invalid_value")(scope, receive, send)
            return
        if int(declared) > limit:
            await self._refuse(limit, scope, receive, send)
            return
        seen, refused = 0, False

        async def counted() -> ASGIMessage:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit and not refused:  # streamed past the limit: answer now, the app sees a hang-up
                refused = True
                await self._refuse(limit, scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: ASGIMessage) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"The request body is over {limit // (1024 * 1024)} MB"
        await _error(413, message, "request_too_large")(scope, receive, send)


def _error(status: int, message: str, code: str) -> JSONResponse:
    return APIError(status, message, None, code).response()


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    param = field_path(tuple(first.get("loc", ()))[1:]) or None  # after "body", "path" or "query"
    missing = first.get("type") == "missing"
    message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
    return APIError(400, message, param, "missing_required_parameter" if missing else "invalid_value").response()


def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = "not_found" if exc.status_code == 404 else None
    return APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", None, code).response()


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return APIError(500, "The server failed on this request; see its log", None, "server_error").response()


def install_error_handlers(app: FastAPI) -> None:
    """Every error of the app answered as OpenAI's object, the unexpected ones as a 500 (and logged)."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(Exception, _unexpected)
