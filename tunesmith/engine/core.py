"""Continuous batching: every running answer advances by one token per forward pass of the whole batch.

The engine keeps one batch of rows (left-padded, a KV cache). At each step, waiting requests join it while there is
room for `max_batch` rows (their prompts prefilled together, their cache merged in), or else the batch advances by one
token; finished rows leave at once, so a short answer never waits for a long one. Rows batch together only when their
requests share a `group` (a caller's choice: the server keeps DoRA adapters apart).

A request that fails (a prompt the model refuses, a sampling error) fails alone: its answers end with "error" and the
others go on. The engine runs in its caller's thread: `generate` runs it to the end; the server steps it from a
thread of its own.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from tunesmith.engine import kv
from tunesmith.engine.constraint import Constraint, apply_masks, mask_words
from tunesmith.engine.sampling import Sampling, TokenLogprob, choose, row_generator, token_logprob

log = logging.getLogger(__name__)

Forward = Callable[[list["Answer"], torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache], torch.Tensor]
"""(rows, input ids, attention mask over cache + ids, position ids, cache) -> the logits of each row's last
position. The default calls the model; the server's also picks each row's adapter."""


@dataclass(eq=False)
class Answer:
    """One answer of a request: a row of the batch while it runs."""

    request: Request
    """Whose answer it is."""
    index: int
    """Which of the request's n answers."""
    generator: torch.Generator | None
    """Its random draws."""
    ids: list[int] = field(default_factory=list)
    """Tokens made so far (the token that stopped it not included)."""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    """Each token's log-probs, when the request asks for them."""
    finish: str | None = None
    """stop (a stop token, or `stop()`), length, cancelled or error; None while it runs."""
    error: Exception | None = None
    """What failed, for finish error."""
    constraint: Constraint | None = None
    """Which tokens it may choose (a grammar's), when its request is constrained."""

    def stop(self) -> None:
        """End the answer after its latest token (a caller's stop string, which wins over the length limit)."""
        if self.finish in (None, "length"):
            self.finish = "stop"


@dataclass(eq=False)
class Request:
    """n answers to one prompt."""

    prompt: list[int]
    """Prompt token ids."""
    sampling: Sampling
    """How tokens are chosen."""
    stop_ids: frozenset[int]
    """Tokens that end an answer (end of turn, eos): not part of it."""
    n: int = 1
    """Answers wanted."""
    adapter: str | None = None
    """The PEFT adapter that answers (for a Forward that mixes adapters per row); None: the model as it is."""
    group: str = ""
    """Rows batch only with rows of the same group."""
    on_token: Callable[[Answer], None] | None = None
    """Called in the engine's thread after each token of an answer and when it finishes; must not block. It may end
    the answer with `answer.stop()`."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when nobody wants the answers any more: its rows leave at the next step."""
    constrain: Callable[[], Constraint] | None = None
    """Makes each answer's constraint (a grammar the answer must follow); None: free."""
    answers: list[Answer] = field(init=False)
    """Its n answers, filled in as they are made."""

    def __post_init__(self) -> None:
        self.answers = [Answer(self, i, row_generator(self.sampling.seed, i)) for i in range(self.n)]
        if self.constrain is not None:
            for answer in self.answers:
                answer.constraint = self.constrain()

    @property
    def done(self) -> bool:
        return all(a.finish is not None for a in self.answers)


@dataclass
class _Batch:
    """Rows generated together: the cache of every position seen, its mask, and each row's next input token."""

    rows: list[Answer]
    cache: DynamicCache
    mask: torch.Tensor
    next_ids: torch.Tensor

    def extend(self, other: _Batch) -> None:
        self.mask = kv.join(self.cache, self.mask, other.cache, other.mask)
        self.rows += other.rows
        self.next_ids = torch.cat([self.next_ids, other.next_ids])


class Engine:
    """The running batch and the requests waiting to join it."""

    def __init__(self, model: torch.nn.Module, pad_id: int, max_batch: int = 8, forward: Forward | None = None) -> None:
        self.model, self.pad_id, self.max_batch = model, pad_id, max_batch
        self.forward: Forward = forward or self._model_forward
        self.pending: deque[Request] = deque()
        """Requests not yet in the batch, first come first served."""
        self.batch: _Batch | None = None
        self.vocab = int(model.config.vocab_size)
        """Tokens a constraint's mask covers."""
        self._masker: ThreadPoolExecutor | None = None
        """Computes constrained rows' masks while the forward pass runs (made at the first constrained row)."""

    def add(self, request: Request) -> None:
        self.pending.append(request)

    @property
    def idle(self) -> bool:
        return not self.pending and self.batch is None

    @property
    def running(self) -> int:
        """Rows in the batch."""
        return len(self.batch.rows) if self.batch else 0

    def run(self) -> None:
        """Step until every request added has finished."""
        while not self.idle:
            self.step()

    def step(self) -> None:
        """Requests that fit join the batch (prefilled, their first token chosen), or else the batch advances by one
        token; then finished rows leave."""
        joining = self._admit()
        if joining:
            joined = self._join(joining)
            if joined is not None and self.batch is not None:
                self.batch.extend(joined)
            elif joined is not None:
                self.batch = joined
        elif self.batch is not None:
            try:
                self._decode(self.batch)
            except Exception as exc:  # one forward pass for every row: they fail together, the engine goes on
                self.fail_running(exc)
        self._let_go()

    def fail_running(self, exc: Exception) -> None:
        """End every running row with an error (a step failed outside any one request) and empty the batch."""
        if self.batch is not None:
            _fail(self.batch.rows, exc)
        self.batch = None

    def _admit(self) -> list[Request]:
        """Waiting requests that fit beside the batch (room and group), in order; cancelled ones are dropped."""
        taken: list[Request] = []
        rows = self.running
        group = self.batch.rows[0].request.group if self.batch else None
        while self.pending:
            request = self.pending[0]
            if request.cancelled.is_set():
                self.pending.popleft()
                _end(request.answers, "cancelled")
                continue
            if group is None:
                group = request.group
            if request.group != group or (rows + request.n > self.max_batch and rows > 0):
                break  # it waits for the batch to drain: first come, first served
            taken.append(self.pending.popleft())
            rows += request.n
        return taken

    def _join(self, requests: list[Request]) -> _Batch | None:
        """Prefill joining requests together; if that fails, each on its own, so that only the one at fault fails."""
        rows = [answer for request in requests for answer in request.answers]
        try:
            return self._prefill(rows)
        except Exception as exc:
            if len(requests) == 1:
                _fail(rows, exc)
                return None
        joined: _Batch | None = None
        for request in requests:
            alone = self._join([request])
            if alone is not None and joined is not None:
                joined.extend(alone)
            elif alone is not None:
                joined = alone
        return joined

    def _model_forward(
        self, rows: list[Answer], ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        return last_logits(self.model, ids, mask, positions, cache)

    def _logits(self, rows: list[Answer], ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """The next-token logits of each row, constrained rows' forbidden tokens at -inf."""
        masks = self._start_masks(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        logits = self.forward(rows, ids, mask, positions, cache)
        if masks is not None:
            constrained = [i for i, row in enumerate(rows) if row.constraint is not None and not row.finish]
            apply_masks(logits, masks.result(), constrained)
        return logits

    def _start_masks(self, rows: list[Answer]) -> Future[torch.Tensor] | None:
        """The constrained rows' masks, computed in the masker's thread (None when no row is constrained)."""
        if all(row.constraint is None or row.finish for row in rows):
            return None
        if self._masker is None:
            self._masker = ThreadPoolExecutor(1, thread_name_prefix="tunesmith-masks")
        return self._masker.submit(_masks, rows, mask_words(self.vocab))

    def _prefill(self, rows: list[Answer]) -> _Batch:
        device = _device(self.model)
        prompts = [row.request.prompt for row in rows]
        longest = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (longest - len(p)) + p for p in prompts], device=device)
        starts = torch.tensor([longest - len(p) for p in prompts], device=device)
        mask = (torch.arange(longest, device=device)[None] >= starts[:, None]).long()
        cache = kv.RoomyCache()
        logits = self._logits(rows, ids, mask, cache)
        chosen = [self._advance(row, logits[i]) for i, row in enumerate(rows)]
        return _Batch(rows, cache, mask, torch.tensor(chosen, device=device)[:, None])

    def _decode(self, batch: _Batch) -> None:
        mask = torch.cat([batch.mask, torch.ones_like(batch.next_ids)], dim=1)
        logits = self._logits(batch.rows, batch.next_ids, mask, batch.cache)
        chosen = [self._advance(row, logits[i]) for i, row in enumerate(batch.rows)]
        batch.mask, batch.next_ids = mask, torch.tensor(chosen, device=mask.device)[:, None]

    def _advance(self, row: Answer, logits: torch.Tensor) -> int:
        """Choose and record one token of a row, and tell its caller; finished rows feed padding. A row that fails
        here fails alone."""
        if row.finish:
            return self.pad_id
        try:
            sampling = row.request.sampling
            token = choose(logits, sampling, row.generator)
            if row.constraint is not None:
                row.constraint.advance(token)
            if token in row.request.stop_ids:
                row.finish = "stop"
            else:
                row.ids.append(token)
                if sampling.logprobs is not None:
                    row.logprobs.append(token_logprob(logits, token, sampling.logprobs))
                if len(row.ids) >= sampling.max_tokens:
                    row.finish = "length"
            _tell(row)
            return token
        except Exception as exc:
            _fail([row], exc)
            return self.pad_id

    def _let_go(self) -> None:
        """Finished and cancelled rows leave the batch."""
        batch = self.batch
        if batch is None:
            return
        for row in batch.rows:
            if row.request.cancelled.is_set() and not row.finish:
                row.finish = "cancelled"
        keep = [i for i, row in enumerate(batch.rows) if not row.finish]
        if not keep:
            self.batch = None
        elif len(keep) < len(batch.rows):
            batch.mask = kv.keep_rows(batch.cache, batch.mask, keep)
            batch.rows = [batch.rows[i] for i in keep]
            batch.next_ids = batch.next_ids[keep]


def last_logits(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: DynamicCache,
    **extra: object,
) -> torch.Tensor:
    """The logits of each row's last position (the output head runs there only), the cache extended."""
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
        **extra,
    )
    return out.logits[:, -1]


def _masks(rows: list[Answer], words: int) -> torch.Tensor:
    """Each row's mask (all tokens allowed for a free row)."""
    out = torch.full((len(rows), words), -1, dtype=torch.int32)
    for i, row in enumerate(rows):
        if row.constraint is not None and not row.finish:
            row.constraint.fill(out[i])
    return out


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _tell(row: Answer) -> None:
    """The row's caller hears of its new token; a caller that fails stops listening (its request is cancelled)."""
    if row.request.on_token is None:
        return
    try:
        row.request.on_token(row)
    except Exception:
        log.exception("a generation callback failed; its request is cancelled")
        row.request.cancelled.set()


def _end(rows: Sequence[Answer], finish: str) -> None:
    for row in rows:
        if not row.finish:
            row.finish = finish


def _fail(rows: Sequence[Answer], exc: Exception) -> None:
    """End rows with an error, logged once, and tell their callers."""
    log.error("generation failed for %d answer(s)", len(rows), exc_info=exc)
    for row in rows:
        if not row.finish:
            row.finish, row.error = "error", exc
            _tell(row)


def generate(
    model: torch.nn.Module,
    prompts: Sequence[list[int]],
    samplings: Sequence[Sampling],
    *,
    pad_id: int,
    stop_ids: Sequence[int],
    max_batch: int = 8,
    constraints: Sequence[Callable[[], Constraint] | None] | None = None,
) -> list[Answer]:
    """The first answer to each prompt, generated in the caller's thread with continuous batching; a failure raises
    the error it had. `constraints`: per prompt, what makes its answer's constraint (None: free)."""
    engine = Engine(model, pad_id, max_batch)
    makers = constraints if constraints is not None else [None] * len(prompts)
    requests = [
        Request(list(p), s, frozenset(stop_ids), constrain=c)
        for p, s, c in zip(prompts, samplings, makers, strict=True)
    ]
    for request in sorted(requests, key=lambda r: len(r.prompt)):  # similar lengths together: less padding
        engine.add(request)
    with torch.inference_mode():
        engine.run()
    answers = [request.answers[0] for request in requests]
    for answer in answers:
        if answer.error is not None:
            raise answer.error
    return answers
