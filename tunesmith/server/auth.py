"""The API key on every route: a Bearer header, or the dashboard's session cookie; compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tunesmith.server.errors import APIError

KEY_COOKIE = "tunesmith_key"
"""The dashboard's session: the API key in an HttpOnly, same-site cookie, set by its login page."""
PUBLIC_PATHS = ("/login", "/static/app.css", "/static/app.js", "/static/favicon.svg", "/favicon.ico")
"""What answers without the key: the login form and its style."""
LOGIN_PATH = "/login"
"""Where a browser without the key is sent."""


def bearer_token(header: str) -> str:
    """The token of an Authorization header; the scheme is case-insensitive (RFC 7235), so `bearer KEY` counts."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def key_matches(given: str, key: str) -> bool:
    """Constant-time comparison, so the time taken says nothing of how much of the key was right."""
    return hmac.compare_digest(given.encode(), key.encode())


class KeyCheck:
    """ASGI middleware: with a key, every route needs it but the login page; a browser opening a page is sent to the
    login page, anything else answers 401. (Plain ASGI, not BaseHTTPMiddleware, so that a handler still sees its
    client disconnect.)"""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app, self.api_key = app, api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.api_key is None or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = bearer_token(request.headers.get("authorization", "")) or request.cookies.get(KEY_COOKIE, "")
        if key_matches(given, self.api_key):
            await self.app(scope, receive, send)
            return
        response: Response
        if "text/html" in request.headers.get("accept", "") and not scope["path"].startswith(("/v1/", "/api/")):
            response = RedirectResponse(LOGIN_PATH, status_code=303)
        else:
            message = "Incorrect or missing API key (send Authorization: Bearer KEY)"
            response = APIError(401, message, None, "invalid_api_key").response()
        await response(scope, receive, send)
