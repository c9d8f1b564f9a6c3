"""Continuous batching: every running answer advances by one token per forward pass of the whole batch.

A worker thread keeps one batch of rows (left-padded, a KV cache, one adapter per row). Between tokens, waiting
requests join it (their prompts prefilled on their own, then their cache merged in) while there is room for
`max_batch` rows, and finished rows leave it; each row's text is sent as it is made. A request that does not fit
waits for rows to finish; at most `max_waiting` wait, and one more is refused (`Busy`) instead of queueing without
bound. A cancelled request (its client went away) leaves the batch at the next token.

The base and LoRA adapters mix in one batch (PEFT's `adapter_names`, per row). PEFT cannot mix a DoRA adapter so,
and rows of one are batched only with each other, the adapter made active for their forward passes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from tunesmith.serve import kv
from tunesmith.serve.loaded import ModelSet, Served

COLLECT_SECONDS = 0.01
"""When idle, after the first request, wait this long for others to start with it."""
MIXED = ""
"""The batch group of rows that mix per row: the base and LoRA adapters (a DoRA adapter's group is its name)."""


@dataclass(frozen=True)
class RequestSampling:
    """How one request chooses tokens."""

    max_tokens: int
    """The longest answer."""
    temperature: float
    """0 is greedy."""
    top_p: float
    """Nucleus sampling mass."""
    stop: tuple[str, ...]
    """Strings that end the answer (not included in it)."""
    seed: int | None
    """Makes sampling repeatable."""
    logprobs: int | None = None
    """None: no log-probs; K: each answer token's log-prob and the K likeliest tokens' (0-20)."""


@dataclass(frozen=True)
class TokenLogprob:
    """One answer token's log-probability under the model (before temperature), and the likeliest alternatives."""

    token: int
    """The token id chosen."""
    logprob: float
    """Its log-probability."""
    top: tuple[tuple[int, float], ...]
    """(token id, log-probability) of the likeliest tokens, most likely first."""


@dataclass(frozen=True)
class Delta:
    """What a row sends: new text, and at the end why it stopped and how many tokens it made."""

    row: int
    """Which of the request's n answers."""
    text: str
    """Text added since the last piece."""
    finish: str | None = None
    """stop or length on the last piece."""
    tokens: int = 0
    """Tokens generated (on the last piece)."""
    logprobs: tuple[TokenLogprob, ...] = ()
    """Log-probs of the tokens made since the last piece, when asked for."""


@dataclass
class Job:
    """One request: n answers to one prompt, pieces delivered through `send` (called from the worker thread)."""

    prompt: list[int]
    """Prompt token ids."""
    served: Served
    """Which model id (adapter) answers."""
    sampling: RequestSampling
    """How tokens are chosen."""
    n: int
    """Answers wanted."""
    send: Callable[[Delta], None]
    """Receives pieces; must not block."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when nobody wants the answer any more: its rows stop at the next token."""


class Busy(Exception):
    """The engine's queue is full: the request was not taken."""


@dataclass
class _Row:
    job: Job
    index: int
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)
    sent: int = 0
    finish: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    logprobs_sent: int = 0


def _token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    log_probs = logits.float().log_softmax(-1)
    values, ids = log_probs.topk(top)
    return TokenLogprob(token, float(log_probs[token]), tuple(zip(ids.tolist(), values.tolist(), strict=True)))


def _choose(logits: torch.Tensor, row: _Row) -> int:
    sampling = row.job.sampling
    if sampling.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=row.generator))


@dataclass
class _Batch:
    """Rows generated together: the cache of every position seen, its mask, and each row's next input token."""

    rows: list[_Row]
    cache: DynamicCache
    mask: torch.Tensor
    next_ids: torch.Tensor


def _rows(jobs: list[Job]) -> list[_Row]:
    rows = []
    for job in jobs:
        for index in range(job.n):
            generator = None
            if job.sampling.seed is not None:
                generator = torch.Generator().manual_seed(job.sampling.seed + index)
            rows.append(_Row(job, index, generator))
    return rows


def _fail(rows: list[_Row], exc: Exception) -> None:
    for row in rows:
        if not row.finish:
            row.finish = "error"
            row.job.send(Delta(row.index, f"[generation failed: {exc}]", "error"))


class Engine:
    """The worker thread, its queue and the running batch."""

    def __init__(self, models: ModelSet, max_batch: int = 8, max_waiting: int = 64) -> None:
        self.models = models
        self.max_batch = max_batch
        self.waiting: queue.Queue[Job] = queue.Queue(maxsize=max_waiting)
        self.held: Job | None = None
        self.thread = threading.Thread(target=self._work, name="tunesmith-engine", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        """Queue a request; Busy when `max_waiting` requests already wait."""
        try:
            self.waiting.put_nowait(job)
        except queue.Full:
            raise Busy from None

    def _next_job(self, timeout: float | None) -> Job | None:
        if self.held is not None:
            job, self.held = self.held, None
            return job
        try:
            return self.waiting.get(block=timeout is None or timeout > 0, timeout=timeout)
        except queue.Empty:
            return None

    def _group(self, job: Job) -> str:
        """Which rows a job's rows may share a batch with (MIXED, or a DoRA adapter's name)."""
        config = getattr(self.models.model, "peft_config", {}).get(job.served.adapter)
        return job.served.adapter if config is not None and config.use_dora else MIXED

    def _take(self, batch: _Batch | None) -> list[Job]:
        """Jobs that fit beside the running batch (room and group); when idle, block for one and wait briefly for
        company."""
        running = len(batch.rows) if batch else 0
        first = self._next_job(None if batch is None else 0.0)
        if first is None:
            return []
        group = self._group(first)
        if batch is not None and (running + first.n > self.max_batch or group != self._group(batch.rows[0].job)):
            self.held = first
            return []
        jobs, rows = [first], running + first.n
        deadline = time.monotonic() + (COLLECT_SECONDS if batch is None else 0.0)
        while rows < self.max_batch:
            job = self._next_job(max(0.0, deadline - time.monotonic()))
            if job is None:
                break
            if rows + job.n > self.max_batch or self._group(job) != group:
                self.held = job
                break
            jobs.append(job)
            rows += job.n
        return jobs

    def _work(self) -> None:
        batch: _Batch | None = None
        while True:
            jobs = self._take(batch)
            new = _rows([job for job in jobs if not job.cancelled.is_set()])
            try:
                with self.models.lock, torch.inference_mode():  # no adapter is attached during a step
                    batch = self._step(batch, new)
            except Exception as exc:  # a failed batch fails its requests, never the server
                _fail((batch.rows if batch else []) + new, exc)
                batch = None

    def _step(self, batch: _Batch | None, new: list[_Row]) -> _Batch | None:
        """Prefill joining rows, or else advance the batch by one token; then let finished rows go."""
        if new:
            joining = self._prefill(new)
            if batch is None:
                batch = joining
            else:
                batch.mask = kv.merge(batch.cache, batch.mask, joining.cache, joining.mask)
                batch.rows += joining.rows
                batch.next_ids = torch.cat([batch.next_ids, joining.next_ids])
        elif batch is not None:
            self._decode(batch)
        if batch is None:
            return None
        for row in batch.rows:
            if row.job.cancelled.is_set() and not row.finish:
                row.finish = "cancelled"
        keep = [i for i, row in enumerate(batch.rows) if not row.finish]
        if not keep:
            return None
        if len(keep) < len(batch.rows):
            batch.mask = kv.keep_rows(batch.cache, batch.mask, keep)
            batch.rows = [batch.rows[i] for i in keep]
            batch.next_ids = batch.next_ids[keep]
        return batch

    def _forward(self, rows: list[_Row], ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """Logits of each row's last position; `mask` covers the cache and `ids`."""
        model = self.models.model
        group = self._group(rows[0].job)
        extra = {"adapter_names": [r.job.served.adapter for r in rows]} if hasattr(model, "peft_config") else {}
        if group != MIXED:  # a DoRA adapter's rows, alone in the batch
            model.set_adapter(group)
            extra = {}
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True, **extra
        )
        return out.logits[:, -1]

    def _prefill(self, rows: list[_Row]) -> _Batch:
        device = self.models.model.device
        longest = max(len(r.job.prompt) for r in rows)
        pad = int(self.models.tokenizer.pad_token_id)
        ids = torch.tensor([[pad] * (longest - len(r.job.prompt)) + r.job.prompt for r in rows], device=device)
        starts = torch.tensor([longest - len(r.job.prompt) for r in rows], device=device)
        mask = (torch.arange(longest, device=device)[None] >= starts[:, None]).long()
        cache = DynamicCache()
        logits = self._forward(rows, ids, mask, cache)
        chosen = [self._advance(row, logits[i]) for i, row in enumerate(rows)]
        return _Batch(rows, cache, mask, torch.tensor(chosen, device=device)[:, None])

    def _decode(self, batch: _Batch) -> None:
        mask = torch.cat([batch.mask, torch.ones_like(batch.next_ids)], dim=1)
        logits = self._forward(batch.rows, batch.next_ids, mask, batch.cache)
        chosen = [self._advance(row, logits[i]) for i, row in enumerate(batch.rows)]
        batch.mask, batch.next_ids = mask, torch.tensor(chosen, device=mask.device)[:, None]

    def _advance(self, row: _Row, logits: torch.Tensor) -> int:
        """Choose, record and send one token of a row; finished rows just feed padding."""
        if row.finish:
            return int(self.models.tokenizer.pad_token_id)
        token = _choose(logits, row)
        sampling = row.job.sampling
        if token in row.job.served.stop_ids:
            row.finish = "stop"
        else:
            row.ids.append(token)
            if sampling.logprobs is not None:
                row.logprobs.append(_token_logprob(logits, token, sampling.logprobs))
            if len(row.ids) >= sampling.max_tokens:
                row.finish = "length"
        self._send_text(row)
        return token

    def _send_text(self, row: _Row) -> None:
        text = self.models.tokenizer.decode(row.ids, skip_special_tokens=True)
        stops = [at for s in row.job.sampling.stop if (at := text.find(s)) >= 0]
        if stops:
            text, row.finish = text[: min(stops)], "stop"
        if not row.finish:
            hold = max((len(s) - 1 for s in row.job.sampling.stop), default=0)  # may be the start of a stop string
            text = text[: len(text) - hold] if hold else text
            if text.endswith("\ufffd"):  # half of a multi-byte character
                return
        if len(text) > row.sent or row.finish:
            tokens = len(row.ids) + (1 if row.finish == "stop" and not stops else 0)
            logprobs = tuple(row.logprobs[row.logprobs_sent :])
            row.job.send(Delta(row.index, text[row.sent :], row.finish, tokens if row.finish else 0, logprobs))
            row.sent, row.logprobs_sent = max(row.sent, len(text)), len(row.logprobs)
