"""The OpenAI-compatible HTTP API: /v1/models, /v1/chat/completions and /v1/completions, streamed or not.

Every error is OpenAI's object, {"error": {"message", "type", "param", "code"}}, with its status code.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from tunesmith.data.schema import Message
from tunesmith.serve.engine import Busy, Delta, Engine, Job, RequestSampling, TokenLogprob
from tunesmith.serve.errors import APIError, BodyLimit, install_error_handlers
from tunesmith.serve.loaded import ModelSet, Served
from tunesmith.serve.logprobs import chat_logprobs, completion_logprobs
from tunesmith.serve.schemas import ChatRequest, CompletionRequest

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512
KEY_COOKIE = "tunesmith_key"
"""The dashboard's session: the API key in an HttpOnly, same-site cookie, set by its login page."""
PUBLIC_PATHS = ("/login", "/static/app.css", "/static/app.js")
"""What answers without the key: the login form and its style."""


class Service:
    """What the routes share: the models, the engine, the API key."""

    def __init__(self, models: ModelSet, engine: Engine, api_key: str | None) -> None:
        self.models, self.engine, self.api_key = models, engine, api_key

    def model(self, model_id: str) -> Served:
        served = self.models.find(model_id)
        if served is None:
            raise APIError(404, f"The model '{model_id}' does not exist", "model", "model_not_found")
        return served

    def check_context(self, prompt: list[int], max_tokens: int, param: str) -> None:
        if len(prompt) + max_tokens > self.models.context:
            raise APIError(
                400,
                f"This model's context is {self.models.context} tokens; the prompt has {len(prompt)} and "
                f"max_tokens asks for {max_tokens} more. Shorten the prompt or lower max_tokens.",
                param,
                "context_length_exceeded",
            )

    async def authorize(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """With a key, every route needs it (Bearer header, or the dashboard's cookie) but the login page; a browser
        opening a page is sent to that login page, anything else answers 401."""
        if self.api_key is None or request.url.path in PUBLIC_PATHS:
            return await call_next(request)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = bearer or request.cookies.get(KEY_COOKIE, "")
        if hmac.compare_digest(given.encode(), self.api_key.encode()):
            return await call_next(request)
        if "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(("/v1/", "/api/")):
            return RedirectResponse("/login", status_code=303)  # a browser opening a page
        return APIError(
            401, "Incorrect or missing API key (send Authorization: Bearer KEY)", None, "invalid_api_key"
        ).response()

    def start(
        self, prompt: list[int], served: Served, sampling: RequestSampling, n: int
    ) -> tuple[asyncio.Queue[Delta], Job]:
        """Queue a request with the engine: its pieces arrive on the queue; a full engine is a 429."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Delta] = asyncio.Queue()
        job = Job(prompt, served, sampling, n, lambda p: loop.call_soon_threadsafe(pieces.put_nowait, p))
        try:
            self.engine.submit(job)
        except Busy:
            raise APIError(
                429, "The server is busy: too many requests wait already. Retry after a moment.", None, "rate_limited"
            ) from None
        return pieces, job


async def _collect(pieces: asyncio.Queue[Delta], job: Job) -> list[Delta]:
    """The whole of each of the job's n answers: (text, finish, tokens) per row as one Delta."""
    n = job.n
    texts, done = [""] * n, [None] * n
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
    try:
        while any(d is None for d in done):
            piece = await pieces.get()
            texts[piece.row] += piece.text
            logprobs[piece.row] += piece.logprobs
            if piece.finish:
                done[piece.row] = piece  # type: ignore[call-overload]
    finally:
        job.cancelled.set()  # finished, or the request was dropped: its rows leave the batch
    if any(d.finish == "error" for d in done):  # type: ignore[union-attr]
        raise APIError(500, "generation failed; see the server log", None, "server_error")
    return [Delta(i, texts[i], d.finish, d.tokens, tuple(logprobs[i])) for i, d in enumerate(done)]  # type: ignore[union-attr]


def _usage(prompt: int, answers: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": answers, "total_tokens": prompt + answers}


async def _events(
    opening: str,
    pieces: asyncio.Queue[Delta],
    job: Job,
    chunk: Callable[[Delta], dict[str, Any]],
    usage: Callable[[int], dict[str, Any]] | None,
) -> AsyncIterator[str]:
    """Server-sent events: `opening` (when not empty), a chunk per piece, the usage chunk if asked, [DONE].

    A client that disconnects closes this generator: the job is cancelled and its rows free their batch slots.
    """
    try:
        if opening:
            yield opening
        finished, tokens = 0, 0
        while finished < job.n:
            piece = await pieces.get()
            finished, tokens = finished + bool(piece.finish), tokens + piece.tokens
            yield f"data: {json.dumps(chunk(piece))}\n\n"
        if usage is not None:
            yield f"data: {json.dumps(usage(tokens))}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()


def _sampling(body: ChatRequest | CompletionRequest, max_tokens: int, logprobs: int | None) -> RequestSampling:
    return RequestSampling(max_tokens, body.temperature, body.top_p, body.stops(), body.seed, logprobs)


def _messages(body: ChatRequest) -> tuple[Message, ...]:
    return tuple(Message("system" if m.role == "developer" else m.role, m.text()) for m in body.messages)


def create_app(
    models: ModelSet,
    engine: Engine,
    api_key: str | None = None,
    routers: Sequence[APIRouter] = (),
    larger_bodies: Mapping[str, int] | None = None,
) -> FastAPI:
    """The FastAPI app; `api_key` (when set) is required on every route, the `routers` (the jobs API) included;
    `larger_bodies` raises the body limit on some paths (uploads)."""
    service = Service(models, engine, api_key)
    app = FastAPI(title="tunesmith", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(service.authorize)
    app.add_middleware(BodyLimit, larger=larger_bodies)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(s) for s in models.all()]}

    @app.get("/v1/models/{model_id:path}")
    def get_model(model_id: str) -> dict[str, Any]:
        return _model_card(service.model(model_id))

    @app.delete("/v1/models/{model_id:path}")
    def delete_model(model_id: str) -> dict[str, Any]:
        if models.tuned is None or not models.tuned.delete(model_id):
            raise APIError(
                404, f"The model '{model_id}' does not exist or cannot be deleted", "model", "model_not_found"
            )
        models.forget(model_id)
        return {"id": model_id, "object": "model", "deleted": True}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> Response | dict[str, Any]:
        return await _chat(service, body)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> Response | dict[str, Any]:
        return await _completion(service, body)

    return app


def _model_card(served: Served) -> dict[str, Any]:
    return {"id": served.id, "object": "model", "created": served.created, "owned_by": "tunesmith"}


async def _chat(service: Service, body: ChatRequest) -> Response | dict[str, Any]:
    served = service.model(body.model)
    text = served.renderer.prompt(_messages(body))
    prompt = service.models.tokenizer(text, add_special_tokens=False).input_ids
    asked = body.max_completion_tokens or body.max_tokens
    max_tokens = asked or max(1, min(DEFAULT_MAX_TOKENS, service.models.context - len(prompt)))
    service.check_context(prompt, max_tokens, "max_tokens" if asked else "messages")
    pieces, job = service.start(prompt, served, _sampling(body, max_tokens, body.logprob_count()), body.n)
    tokenizer = service.models.tokenizer
    wanted = body.logprobs
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    head = {"id": ident, "created": created, "model": served.id, "system_fingerprint": None}
    if body.stream:
        first = [
            {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for i in range(body.n)
        ]

        def chunk(p: Delta) -> dict[str, Any]:
            delta = {"content": p.text} if p.text else {}
            logprobs = chat_logprobs(tokenizer, p.logprobs) if wanted else None
            choice = {"index": p.row, "delta": delta, "finish_reason": p.finish, "logprobs": logprobs}
            return head | {"object": "chat.completion.chunk", "choices": [choice]}

        def usage(tokens: int) -> dict[str, Any]:
            return head | {"object": "chat.completion.chunk", "choices": [], "usage": _usage(len(prompt), tokens)}

        opening = f"data: {json.dumps(head | {'object': 'chat.completion.chunk', 'choices': first})}\n\n"
        events = _events(opening, pieces, job, chunk, usage if body.wants_usage() else None)
        return StreamingResponse(events, media_type="text/event-stream")
    answers = await _collect(pieces, job)
    choices = [
        {
            "index": a.row,
            "message": {"role": "assistant", "content": a.text},
            "finish_reason": a.finish,
            "logprobs": chat_logprobs(tokenizer, a.logprobs) if wanted else None,
        }
        for a in answers
    ]
    usage = _usage(len(prompt), sum(a.tokens for a in answers))
    return head | {"object": "chat.completion", "choices": choices, "usage": usage}


async def _completion(service: Service, body: CompletionRequest) -> Response | dict[str, Any]:
    served = service.model(body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise APIError(400, "prompt: send one prompt per request", "prompt", "invalid_value")
    prompt = service.models.tokenizer(prompts[0]).input_ids
    service.check_context(prompt, body.max_tokens, "max_tokens")
    pieces, job = service.start(prompt, served, _sampling(body, body.max_tokens, body.logprobs), body.n)
    tokenizer, wanted = service.models.tokenizer, body.logprobs is not None
    head = {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": served.id,
    }
    if body.stream:

        def chunk(p: Delta) -> dict[str, Any]:
            logprobs = completion_logprobs(tokenizer, p.logprobs) if wanted else None
            return head | {
                "choices": [{"index": p.row, "text": p.text, "finish_reason": p.finish, "logprobs": logprobs}]
            }

        def usage(tokens: int) -> dict[str, Any]:
            return head | {"choices": [], "usage": _usage(len(prompt), tokens)}

        events = _events("", pieces, job, chunk, usage if body.wants_usage() else None)
        return StreamingResponse(events, media_type="text/event-stream")
    answers = await _collect(pieces, job)
    choices = [
        {
            "index": a.row,
            "text": a.text,
            "finish_reason": a.finish,
            "logprobs": completion_logprobs(tokenizer, a.logprobs) if wanted else None,
        }
        for a in answers
    ]
    return head | {"choices": choices, "usage": _usage(len(prompt), sum(a.tokens for a in answers))}
