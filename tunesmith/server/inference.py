"""OpenAI's inference routes: /v1/models, /v1/chat/completions and /v1/completions, streamed or not.

Rendering and tokenising a prompt run in a thread, off the event loop (a prompt of megabytes would stall every
other request); the engine answers in its own thread and its pieces come back through an asyncio queue. A client
that goes away, streaming or not, frees its rows at the next token.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from tunesmith.constrain.guide import Grammars
from tunesmith.data.schema import Message, Tool
from tunesmith.engine.constraint import Constraint
from tunesmith.engine.sampling import Sampling, TokenLogprob
from tunesmith.errors import DataError
from tunesmith.serve.batcher import Batcher, Busy, Delta, Generation
from tunesmith.serve.loaded import ModelSet, Served
from tunesmith.server import toolcalls
from tunesmith.server.errors import APIError
from tunesmith.server.logprobs import chat_logprobs, completion_logprobs
from tunesmith.server.schemas import ChatRequest, CompletionRequest
from tunesmith.tokenize.tools import CallSyntax

DEFAULT_MAX_TOKENS = 512
"""A chat answer's length when the request names none (or less where the context ends sooner)."""
DISCONNECT_POLL_SECONDS = 0.1
"""How often a request waiting for its whole answer checks that its client is still there."""
GENERATION_FAILED = "generation failed; see the server log"


@dataclass(frozen=True)
class _Gone:
    """Put on a request's queue when its client has disconnected."""


class Service:
    """What the routes share: the models and the generation thread."""

    def __init__(self, models: ModelSet, batcher: Batcher) -> None:
        self.models, self.batcher = models, batcher
        self._grammars: Grammars | None = None

    def constraint(self, served: Served, shape: toolcalls.Shape) -> Callable[[], Constraint] | None:
        """What makes each answer's constraint for the request's shape; a grammar that cannot be enforced (a bad
        schema) is a 400 naming its field."""
        if shape.grammar is None:
            return None
        if self._grammars is None:
            vocab = int(self.models.model.config.vocab_size)
            self._grammars = Grammars(self.models.tokenizer, vocab, served.stop_ids)
        try:
            return self._grammars.guide(shape.grammar, shape.param)
        except DataError as exc:
            raise APIError(400, exc.message, shape.param, exc.code) from None

    def model(self, model_id: str) -> Served:
        served = self.models.find(model_id)
        if served is None:
            raise APIError(404, f"The model '{model_id}' does not exist", "model", "model_not_found")
        return served

    def chat_prompt(
        self,
        served: Served,
        messages: tuple[Message, ...],
        options: dict[str, object] | None = None,
        tools: tuple[Tool, ...] = (),
    ) -> list[int]:
        """The prompt's ids under the model's template; special-token strings inside contents stay text."""
        try:
            return served.renderer.prompt_ids(messages, options, tools)
        except DataError as exc:
            raise APIError(400, exc.message, "messages", exc.code) from None
        except TemplateError as exc:
            raise APIError(400, f"the model's chat template refused the messages: {exc}", "messages") from None

    def text_prompt(self, text: str) -> list[int]:
        """A completion's ids, with the tokenizer's own leading tokens. The prompt is raw text the client laid out
        itself (no template), so special tokens in it are meant as such, as other servers read them."""
        return list(self.models.tokenizer(text)["input_ids"])

    def check_context(self, prompt: list[int], max_tokens: int, param: str) -> None:
        if len(prompt) + max_tokens > self.models.context:
            raise APIError(
                400,
                f"This model's context is {self.models.context} tokens; the prompt has {len(prompt)} and "
                f"max_tokens asks for {max_tokens} more. Shorten the prompt or lower max_tokens.",
                param,
                "context_length_exceeded",
            )

    def start(
        self,
        prompt: list[int],
        served: Served,
        body: ChatRequest | CompletionRequest,
        sampling: Sampling,
        constrain: Callable[[], Constraint] | None = None,
    ) -> tuple[asyncio.Queue[Delta | _Gone], Generation]:
        """Queue a request for generation: its pieces arrive on the queue; a full queue is a 429."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Delta | _Gone] = asyncio.Queue()

        def send(piece: Delta) -> None:  # from the generation thread
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        job = Generation(prompt, served, sampling, body.stops(), body.n, send, constrain=constrain)
        try:
            self.batcher.submit(job)
        except Busy:
            raise APIError(
                429, "The server is busy: too many requests wait already. Retry after a moment.", None, "rate_limited"
            ) from None
        return pieces, job


async def _watch(request: Request, pieces: asyncio.Queue[Delta | _Gone]) -> None:
    """Tell a waiting request that its client has gone (uvicorn does not cancel a handler that is not streaming)."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_SECONDS)
    pieces.put_nowait(_Gone())


async def _collect(request: Request, pieces: asyncio.Queue[Delta | _Gone], job: Generation) -> list[Delta]:
    """The whole of each of the job's n answers: (text, finish, tokens) per row as one Delta."""
    n = job.n
    texts, done = [""] * n, [None] * n
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
    watcher = asyncio.create_task(_watch(request, pieces))
    try:
        while any(d is None for d in done):
            piece = await pieces.get()
            if isinstance(piece, _Gone):
                raise APIError(499, "the client closed the request", None, "client_closed_request")
            texts[piece.row] += piece.text
            logprobs[piece.row] += piece.logprobs
            if piece.finish:
                done[piece.row] = piece  # type: ignore[call-overload]
    finally:
        watcher.cancel()
        job.cancelled.set()  # finished, or the client went away: its rows leave the batch
    if any(d.finish == "error" for d in done):  # type: ignore[union-attr]
        raise APIError(500, GENERATION_FAILED, None, "server_error")
    return [Delta(i, texts[i], d.finish, d.tokens, tuple(logprobs[i])) for i, d in enumerate(done)]  # type: ignore[union-attr]


def _usage(prompt: int, answers: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": answers, "total_tokens": prompt + answers}


async def _events(
    opening: str,
    pieces: asyncio.Queue[Delta | _Gone],
    job: Generation,
    chunk: Callable[[Delta], list[dict[str, Any]]],
    usage: Callable[[int], dict[str, Any]] | None,
) -> AsyncIterator[str]:
    """Server-sent events: `opening` (when not empty), the chunks of each piece, the usage chunk if asked, [DONE];
    a failed answer sends OpenAI's error object as its last event.

    A client that disconnects closes this generator: the job is cancelled and its rows free their batch slots.
    """
    try:
        if opening:
            yield opening
        finished, tokens = 0, 0
        while finished < job.n:
            piece = await pieces.get()
            assert isinstance(piece, Delta)  # only _collect watches for a disconnect
            if piece.finish == "error":
                error = {"message": GENERATION_FAILED, "type": "server_error", "param": None, "code": "server_error"}
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            finished, tokens = finished + bool(piece.finish), tokens + piece.tokens
            for event in chunk(piece):
                yield f"data: {json.dumps(event)}\n\n"
        if usage is not None:
            yield f"data: {json.dumps(usage(tokens))}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()


def _sampling(body: ChatRequest | CompletionRequest, max_tokens: int, logprobs: int | None) -> Sampling:
    return Sampling(max_tokens, body.temperature, body.top_p, body.seed, logprobs)


def inference_router(models: ModelSet, batcher: Batcher) -> APIRouter:
    """The routes on one model set and its generation thread."""
    service = Service(models, batcher)
    router = APIRouter()

    @router.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(s) for s in models.all()]}

    @router.get("/v1/models/{model_id:path}")
    def get_model(model_id: str) -> dict[str, Any]:
        return _model_card(service.model(model_id))

    @router.delete("/v1/models/{model_id:path}")
    def delete_model(model_id: str) -> dict[str, Any]:
        if models.tuned is None or not models.tuned.delete(model_id):
            raise APIError(
                404, f"The model '{model_id}' does not exist or cannot be deleted", "model", "model_not_found"
            )
        models.forget(model_id)
        return {"id": model_id, "object": "model", "deleted": True}

    @router.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Response | dict[str, Any]:
        return await _chat(service, body, request)

    @router.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response | dict[str, Any]:
        return await _completion(service, body, request)

    return router


def _model_card(served: Served) -> dict[str, Any]:
    return {"id": served.id, "object": "model", "created": served.created, "owned_by": "tunesmith"}


async def _chat(service: Service, body: ChatRequest, request: Request) -> Response | dict[str, Any]:
    served = await asyncio.to_thread(service.model, body.model)  # may attach a tuned model's adapter
    shape = toolcalls.shape(body, served.renderer.call_syntax)
    reader = served.renderer.call_syntax if shape.calls else None  # answers read for calls
    conversation = toolcalls.messages(body)
    prompt = await asyncio.to_thread(service.chat_prompt, served, conversation, body.chat_template_kwargs, shape.tools)
    # compiling a grammar takes a thread; a request without one goes straight on
    constrain = await asyncio.to_thread(service.constraint, served, shape) if shape.grammar is not None else None
    asked = body.max_completion_tokens or body.max_tokens
    max_tokens = asked or max(1, min(DEFAULT_MAX_TOKENS, service.models.context - len(prompt)))
    service.check_context(prompt, max_tokens, "max_tokens" if asked else "messages")
    sampling = _sampling(body, max_tokens, body.logprob_count())
    pieces, job = service.start(prompt, served, body, sampling, constrain)
    tokenizer = service.models.tokenizer
    wanted = body.logprobs
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    head = {"id": ident, "created": created, "model": served.id, "system_fingerprint": None}
    if body.stream:
        return _chat_stream(head, body, pieces, job, len(prompt), tokenizer, reader)
    answers = await _collect(request, pieces, job)
    choices = []
    for a in answers:
        message, finish = toolcalls.answer(a.text, a.finish, reader)
        logprobs = chat_logprobs(tokenizer, a.logprobs) if wanted else None
        choices.append({"index": a.row, "message": message, "finish_reason": finish, "logprobs": logprobs})
    usage = _usage(len(prompt), sum(a.tokens for a in answers))
    return head | {"object": "chat.completion", "choices": choices, "usage": usage}


def _chat_stream(
    head: dict[str, Any],
    body: ChatRequest,
    pieces: asyncio.Queue[Delta | _Gone],
    job: Generation,
    prompt_tokens: int,
    tokenizer: PreTrainedTokenizerBase,
    syntax: CallSyntax | None,
) -> StreamingResponse:
    """The chat answer as chunks: text deltas (held back while a call may be starting), tool-call deltas at the end."""
    first = [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for i in range(body.n)]
    streams = [toolcalls.CallStream(syntax) for _ in range(body.n)] if syntax is not None else None
    unsent: list[list[TokenLogprob]] = [[] for _ in range(body.n)]
    """Each row's log-probs of tokens whose text is held back (a call may be starting): sent with its next event."""

    def chunk(p: Delta) -> list[dict[str, Any]]:
        if streams is None:
            deltas, finish = ([{"content": p.text}] if p.text else [{}]), p.finish
        else:
            deltas, finish = streams[p.row].feed(p.text, p.finish)
            deltas = [*deltas, {}] if finish else deltas
        unsent[p.row] += p.logprobs
        if not deltas:
            return []
        logprobs = chat_logprobs(tokenizer, unsent[p.row]) if body.logprobs else None
        unsent[p.row] = []
        events = []
        for k, delta in enumerate(deltas):
            last = k == len(deltas) - 1
            choice = {"index": p.row, "delta": delta, "finish_reason": finish if last else None}
            choice["logprobs"] = logprobs if k == 0 else None
            events.append(head | {"object": "chat.completion.chunk", "choices": [choice]})
        return events

    def usage(tokens: int) -> dict[str, Any]:
        return head | {"object": "chat.completion.chunk", "choices": [], "usage": _usage(prompt_tokens, tokens)}

    opening = f"data: {json.dumps(head | {'object': 'chat.completion.chunk', 'choices': first})}\n\n"
    events = _events(opening, pieces, job, chunk, usage if body.wants_usage() else None)
    return StreamingResponse(events, media_type="text/event-stream")


async def _completion(service: Service, body: CompletionRequest, request: Request) -> Response | dict[str, Any]:
    served = await asyncio.to_thread(service.model, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise APIError(400, "prompt: send one prompt per request", "prompt", "invalid_value")
    prompt = await asyncio.to_thread(service.text_prompt, prompts[0])
    service.check_context(prompt, body.max_tokens, "max_tokens")
    pieces, job = service.start(prompt, served, body, _sampling(body, body.max_tokens, body.logprobs))
    tokenizer, wanted = service.models.tokenizer, body.logprobs is not None
    head = {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": served.id,
    }
    if body.stream:

        def chunk(p: Delta) -> list[dict[str, Any]]:
            logprobs = completion_logprobs(tokenizer, p.logprobs) if wanted else None
            choice = {"index": p.row, "text": p.text, "finish_reason": p.finish, "logprobs": logprobs}
            return [head | {"choices": [choice]}]

        def usage(tokens: int) -> dict[str, Any]:
            return head | {"choices": [], "usage": _usage(len(prompt), tokens)}

        events = _events("", pieces, job, chunk, usage if body.wants_usage() else None)
        return StreamingResponse(events, media_type="text/event-stream")
    answers = await _collect(request, pieces, job)
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
