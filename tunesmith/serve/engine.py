"""Dynamic batching: requests that arrive together are generated together, one forward pass per token for all.

A worker thread takes every waiting request (up to `max_batch` rows), generates them as one left-padded batch
with a KV cache and one adapter per row, and sends each row's text as it is made. Requests that arrive during a
batch wait for the next one; none is refused.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from tunesmith.serve.registry import ModelSet, Served

COLLECT_SECONDS = 0.01
"""After the first request, wait this long for others to join its batch."""


@dataclass(frozen=True)
class Sampling:
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


@dataclass(frozen=True)
class Piece:
    """What a row sends: new text, and at the end why it stopped and how many tokens it made."""

    row: int
    """Which of the request's n answers."""
    text: str
    """Text added since the last piece."""
    finish: str | None = None
    """stop or length on the last piece."""
    tokens: int = 0
    """Tokens generated (on the last piece)."""


@dataclass
class Job:
    """One request: n answers to one prompt, pieces delivered through `send` (called from the worker thread)."""

    prompt: list[int]
    """Prompt token ids."""
    served: Served
    """Which model id (adapter) answers."""
    sampling: Sampling
    """How tokens are chosen."""
    n: int
    """Answers wanted."""
    send: Callable[[Piece], None]
    """Receives pieces; must not block."""


@dataclass
class _Row:
    job: Job
    index: int
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)
    sent: int = 0
    finish: str | None = None


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


class Engine:
    """The worker thread and its queue."""

    def __init__(self, models: ModelSet, max_batch: int = 8) -> None:
        self.models = models
        self.max_batch = max_batch
        self.waiting: queue.Queue[Job] = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="tunesmith-engine", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        self.waiting.put(job)

    def _take(self) -> list[Job]:
        jobs = [self.waiting.get()]
        deadline = time.monotonic() + COLLECT_SECONDS
        while sum(j.n for j in jobs) < self.max_batch:
            try:
                jobs.append(self.waiting.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            try:
                self._generate(jobs)
            except Exception as exc:  # a failed batch fails its requests, never the server
                for job in jobs:
                    for index in range(job.n):
                        job.send(Piece(index, f"[generation failed: {exc}]", "error"))

    def _rows(self, jobs: list[Job]) -> list[_Row]:
        rows = []
        for job in jobs:
            for index in range(job.n):
                generator = None
                if job.sampling.seed is not None:
                    generator = torch.Generator().manual_seed(job.sampling.seed + index)
                rows.append(_Row(job, index, generator))
        return rows

    def _generate(self, jobs: list[Job]) -> None:
        rows = self._rows(jobs)
        model, device = self.models.model, self.models.model.device
        longest = max(len(r.job.prompt) for r in rows)
        pad = int(self.models.tokenizer.pad_token_id)
        ids = torch.tensor([[pad] * (longest - len(r.job.prompt)) + r.job.prompt for r in rows], device=device)
        mask = (
            torch.arange(longest, device=device)[None]
            >= torch.tensor([longest - len(r.job.prompt) for r in rows], device=device)[:, None]
        ).long()
        extra = {"adapter_names": [r.job.served.adapter for r in rows]} if hasattr(model, "peft_config") else {}
        cache = DynamicCache()
        steps = max(r.job.sampling.max_tokens for r in rows)
        with torch.inference_mode():
            for _ in range(steps):
                positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
                out = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                    **extra,
                )
                logits = out.logits[:, -1]
                chosen = [self._advance(row, logits[i]) for i, row in enumerate(rows)]
                if all(r.finish for r in rows):
                    return
                ids = torch.tensor(chosen, device=device)[:, None]
                mask = torch.cat([mask, torch.ones_like(ids)], dim=1)

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
            row.job.send(Piece(row.index, text[row.sent :], row.finish, tokens if row.finish else 0))
            row.sent = max(row.sent, len(text))
