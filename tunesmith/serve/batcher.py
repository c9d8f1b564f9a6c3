"""The server's generation thread: requests from the HTTP handlers wait in a bounded queue, join the engine's running
batch, and send their text as it is made.

The base and LoRA adapters mix in one batch (PEFT's `adapter_names`, per row). PEFT cannot mix a DoRA adapter so:
a DoRA adapter's rows form a group of their own, batched only with each other, the adapter made active for their
forward passes. At most `max_waiting` requests wait; one more is refused (`Busy`) instead of queueing without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from tunesmith.engine.constraint import Constraint
from tunesmith.engine.core import Answer, Engine, Request, last_logits
from tunesmith.engine.sampling import Sampling, TokenLogprob
from tunesmith.engine.text import TextStream
from tunesmith.serve.loaded import ModelSet, Served

COLLECT_SECONDS = 0.01
"""When idle, after the first request, wait this long for others to start with it."""
MIXED = ""
"""The group of rows that mix per row: the base and LoRA adapters (a DoRA adapter's group is its name)."""


@dataclass(frozen=True)
class Delta:
    """What an answer sends: new text, and at the end why it stopped and how many tokens it made."""

    row: int
    """Which of the request's n answers."""
    text: str
    """Text added since the last piece."""
    finish: str | None = None
    """stop, length or error on the last piece."""
    tokens: int = 0
    """Tokens generated (on the last piece)."""
    logprobs: tuple[TokenLogprob, ...] = ()
    """Log-probs of the tokens made since the last piece, when asked for."""


@dataclass(eq=False)
class Generation:
    """One HTTP request's answers: n answers to one prompt, pieces delivered through `send`."""

    prompt: list[int]
    """Prompt token ids."""
    served: Served
    """Which model id (adapter) answers."""
    sampling: Sampling
    """How tokens are chosen."""
    stop: tuple[str, ...]
    """Strings that end an answer (not included in it)."""
    n: int
    """Answers wanted."""
    send: Callable[[Delta], None]
    """Receives pieces, from the generation thread; must not block."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when nobody wants the answers any more: its rows stop at the next token."""
    constrain: Callable[[], Constraint] | None = None
    """Makes each answer's constraint (the grammar of a request's tools or response format); None: free."""


class Busy(Exception):
    """The queue is full: the request was not taken."""


class _Sender:
    """Turns one generation's answers, token by token, into Deltas."""

    def __init__(self, generation: Generation, tokenizer: PreTrainedTokenizerBase) -> None:
        self.generation = generation
        self.streams = [TextStream(tokenizer, generation.stop) for _ in range(generation.n)]
        self.logprobs_sent = [0] * generation.n

    def __call__(self, answer: Answer) -> None:
        if answer.finish == "error":
            self.generation.send(Delta(answer.index, "", "error"))
            return
        stream = self.streams[answer.index]
        piece = stream.update(answer.ids, answer.finish is not None)
        if stream.stopped:
            answer.stop()
        if answer.finish == "cancelled" or not (piece or answer.finish):
            return
        tokens = len(answer.ids) + (answer.finish == "stop" and not stream.stopped) if answer.finish else 0
        logprobs = tuple(answer.logprobs[self.logprobs_sent[answer.index] :])
        self.logprobs_sent[answer.index] = len(answer.logprobs)
        self.generation.send(Delta(answer.index, piece, answer.finish, int(tokens), logprobs))


class Batcher:
    """The generation thread, its queue, and the engine it steps."""

    def __init__(self, models: ModelSet, max_batch: int = 8, max_waiting: int = 64) -> None:
        self.models = models
        pad = int(models.tokenizer.pad_token_id)
        self.engine = Engine(models.model, pad, max_batch, forward=self._forward)
        self.waiting: queue.Queue[Generation] = queue.Queue(maxsize=max_waiting)
        self.thread = threading.Thread(target=self._work, name="tunesmith-generation", daemon=True)
        self.thread.start()

    def submit(self, generation: Generation) -> None:
        """Queue a request; Busy when `max_waiting` requests already wait."""
        try:
            self.waiting.put_nowait(generation)
        except queue.Full:
            raise Busy from None

    def _group(self, served: Served) -> str:
        """Which rows a model's rows may share a batch with (MIXED, or a DoRA adapter's name)."""
        config = getattr(self.models.model, "peft_config", {}).get(served.adapter)
        return served.adapter if config is not None and config.use_dora else MIXED

    def request(self, generation: Generation) -> Request:
        """The engine's request for an HTTP request's generation."""
        served = generation.served
        return Request(
            generation.prompt,
            generation.sampling,
            frozenset(served.stop_ids),
            generation.n,
            adapter=served.adapter,
            group=self._group(served),
            on_token=_Sender(generation, self.models.tokenizer),
            cancelled=generation.cancelled,
            constrain=generation.constrain,
        )

    def _intake(self) -> None:
        """Move waiting requests into the engine while they can join it; when idle, block for one and wait briefly
        for company. The rest stay in the bounded queue."""
        idle = self.engine.idle
        deadline = time.monotonic() + COLLECT_SECONDS
        room = self.engine.max_batch - self.engine.running - sum(r.n for r in self.engine.pending)
        while room > 0:
            try:
                if idle and not self.engine.pending:
                    generation = self.waiting.get()  # nothing to do: wait for work
                    deadline = time.monotonic() + COLLECT_SECONDS  # company is waited for from the first's arrival
                elif idle:
                    generation = self.waiting.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    generation = self.waiting.get_nowait()
            except queue.Empty:
                return
            self.engine.add(self.request(generation))
            room -= generation.n

    def _work(self) -> None:
        """The thread: nothing a request does may end it, or every later request would wait forever."""
        while True:
            try:
                self._intake()
                with self.models.lock, torch.inference_mode():  # no adapter is attached during a step
                    self.engine.step()
            except Exception as exc:
                self.engine.fail_running(exc)

    def _forward(
        self, rows: list[Answer], ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        """Each row answered by its own adapter: per row in a mixed batch, or the DoRA adapter made active."""
        model = self.models.model
        group = rows[0].request.group
        extra: dict[str, object] = {}
        if hasattr(model, "peft_config"):
            if group != MIXED:
                model.set_adapter(group)
            else:
                extra = {"adapter_names": [row.request.adapter for row in rows]}
        return last_logits(model, ids, mask, positions, cache, **extra)
