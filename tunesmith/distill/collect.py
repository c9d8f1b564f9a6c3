"""Ask a teacher (any OpenAI-compatible endpoint) to answer every prompt, keeping each answer as it arrives.

The answers file is a chat data set `tunesmith train` takes as it is: one line per prompt, the prompt's messages and
the teacher's answer, with what the teacher said about it under "teacher" (and its log-probs when asked for).
Each line is appended whole the moment its answer arrives, keyed by a hash of the prompt and the teacher settings,
so a run that is killed, even with kill -9, starts again where it stopped: prompts already answered are never
asked again. Retries (exponential backoff with jitter, Retry-After honoured, on 408/409/429/5xx, timeouts and
dropped connections) are the official openai client's own; an answer whose body is cut short (a 200 whose JSON does
not parse) is retried here the same way, since the client would take it as final. A prompt that still fails is
written to the errors file with its error and counted; the next run asks it again.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith import paths
from tunesmith.distill.prompts import Prompt, prompt_key, read_prompts
from tunesmith.errors import ConfigError


@dataclass(frozen=True)
class TeacherSettings:
    """What is asked of the teacher. Every field can change the answer, so all of them key a prompt."""

    base_url: str
    """The endpoint, as the openai client takes it: https://api.openai.com/v1, http://127.0.0.1:8000/v1, ..."""
    model: str
    """The teacher model's name at that endpoint."""
    temperature: float = 0.0
    """Sampling temperature; 0 asks for the teacher's most likely answer."""
    max_tokens: int = 512
    """The longest answer, in tokens."""
    system: str | None = None
    """A system message sent to the teacher before each prompt, and not kept in the answers file: the student
    learns to answer without it (a long instruction the teacher needed costs the student nothing)."""
    logprobs: int = 0
    """Top log-probs to ask for at every answer token (0: none; at most 20, as OpenAI allows)."""


@dataclass(frozen=True)
class CollectSettings:
    """How the teacher is called."""

    teacher: TeacherSettings
    """What is asked."""
    api_key: str
    """The endpoint's API key (local servers without a key take any string)."""
    concurrency: int = 4
    """Requests in flight at once."""
    max_requests_per_minute: float | None = None
    """Requests started per minute at most, across all of them; None: no limit."""
    retries: int = 5
    """Retries of one request by the openai client before the prompt counts as failed."""
    timeout: float = 120.0
    """Seconds one request may take."""
    empty_ok: bool = False
    """Keep an empty answer (a model being compared is scored whatever it says); else it fails the prompt, since
    an empty answer teaches nothing."""


@dataclass
class Progress:
    """Where a collection stands."""

    total: int
    """Distinct prompts in the file."""
    already: int = 0
    """Answered by an earlier run: not asked again."""
    done: int = 0
    """Answered in this run."""
    failed: int = 0
    """Failed in this run after the retries."""
    tokens_in: int = 0
    """Prompt tokens the teacher reported, this run."""
    tokens_out: int = 0
    """Answer tokens the teacher reported, this run."""
    started: float = field(default_factory=time.monotonic)
    """When this run started (monotonic clock)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds per answered request, this run."""


@dataclass(frozen=True)
class CollectSummary:
    """What a collection did, for the closing lines and for `distill report`."""

    answers: str
    """The answers file."""
    errors: str
    """The errors file (written only when a prompt failed)."""
    total: int
    """Distinct prompts."""
    already: int
    """Answered by an earlier run."""
    answered: int
    """Answered in this run."""
    failed: list[dict[str, Any]]
    """{line, key, error} of each prompt that failed in this run."""
    tokens_in: int
    """Prompt tokens the teacher reported, this run."""
    tokens_out: int
    """Answer tokens the teacher reported, this run."""
    seconds: float
    """Wall time of this run."""
    latency_p50: float | None
    """Median seconds per answered request (None when none was)."""
    latency_p95: float | None
    """95th percentile seconds per answered request."""


def _answered_keys(path: Path) -> set[str]:
    """Keys of the answers already in the file; a last line cut short by a kill is dropped first."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        os.truncate(path, len(whole))
    keys = set()
    for number, line in enumerate(whole.decode("utf-8").splitlines(), start=1):
        try:
            keys.add(json.loads(line)["teacher"]["key"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{path}:{number}: not a line this command wrote",
                hint="choose another --out, or move the file away",
            ) from None
    return keys


class _RateLimit:
    """Spaces the starts of requests at least 60 / per_minute seconds apart, across threads."""

    def __init__(self, per_minute: float | None) -> None:
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        time.sleep(start - now)


class _Appender:
    """Appends whole lines to a file with one write each, from any thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        os.close(self._fd)


def _client(settings: CollectSettings) -> Any:
    from openai import OpenAI

    return OpenAI(
        base_url=settings.teacher.base_url,
        api_key=settings.api_key,
        max_retries=settings.retries,
        timeout=settings.timeout,
    )


def _logprobs(choice: Any) -> list[dict[str, Any]] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [
        {
            "token": t.token,
            "logprob": t.logprob,
            "top_logprobs": [{"token": o.token, "logprob": o.logprob} for o in (t.top_logprobs or [])],
        }
        for t in content
    ]


def _create(client: Any, retries: int, **request: Any) -> Any:
    """client.chat.completions.create, retried with backoff when the answer's body is not whole JSON."""
    for attempt in range(retries + 1):
        try:
            return client.chat.completions.create(**request)
        except ValueError:  # json.JSONDecodeError: a body cut short by a proxy or a dropped stream
            if attempt == retries:
                raise
            time.sleep(min(8.0, 0.5 * 2**attempt) * (0.75 + random.random() / 2))
    raise AssertionError("unreachable")


def ask(
    client: Any, teacher: TeacherSettings, prompt: Prompt, key: str, retries: int = 0, empty_ok: bool = False
) -> dict[str, Any]:
    """One prompt to the teacher -> its line in the answers file; raises what the client raises."""
    system = [{"role": "system", "content": teacher.system}] if teacher.system else []
    extra: dict[str, Any] = {"logprobs": True, "top_logprobs": teacher.logprobs} if teacher.logprobs else {}
    if prompt.tools:
        extra["tools"] = prompt.tools_json()
    started = time.monotonic()
    response = _create(
        client,
        retries,
        model=teacher.model,
        messages=system + prompt.as_json(),
        temperature=teacher.temperature,
        max_tokens=teacher.max_tokens,
        **extra,
    )
    latency = time.monotonic() - started
    choice = response.choices[0]
    answer = _assistant(choice.message, empty_ok)
    usage = response.usage
    record: dict[str, Any] = {
        "messages": [*prompt.as_json(), answer],
        **({"tools": prompt.tools_json()} if prompt.tools else {}),
        "teacher": {
            "key": key,
            "line": prompt.line,
            "model": teacher.model,
            "finish_reason": choice.finish_reason,
            "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
            "latency_s": round(latency, 4),
        },
    }
    logprobs = _logprobs(choice)
    if logprobs is not None:
        record["logprobs"] = logprobs
    return record


def _assistant(message: Any, empty_ok: bool) -> dict[str, Any]:
    """The teacher's answer as a message of the answers file: its text, or the functions it calls."""
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
        for c in message.tool_calls or []
    ]
    if calls:
        return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
    if not empty_ok and (not isinstance(message.content, str) or not message.content.strip()):
        raise ValueError("the teacher's answer is empty")
    return {"role": "assistant", "content": message.content or ""}


def _ask_limited(client: Any, limit: _RateLimit, settings: CollectSettings, prompt: Prompt, key: str) -> dict:
    limit.wait()
    return ask(client, settings.teacher, prompt, key, settings.retries, settings.empty_ok)


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def collect(
    prompts_source: str,
    out: Path,
    settings: CollectSettings,
    on_progress: Callable[[Progress], None] | None = None,
) -> CollectSummary:
    """Answer every prompt of `prompts_source` not yet in `out`; failures go to `out`'s .errors.jsonl sibling."""
    if not 0 <= settings.teacher.logprobs <= 20:
        raise ConfigError(f"--logprobs {settings.teacher.logprobs}: between 0 and 20", hint="OpenAI allows up to 20")
    teacher = asdict(settings.teacher)
    todo: dict[str, Prompt] = {}
    for prompt in read_prompts(prompts_source):
        todo.setdefault(prompt_key(prompt, teacher), prompt)
    answered = _answered_keys(out)
    progress = Progress(total=len(todo), already=len(answered & todo.keys()))
    failed: list[dict[str, Any]] = []
    client, limit, answers = _client(settings), _RateLimit(settings.max_requests_per_minute), _Appender(out)
    try:
        with ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool:
            futures: dict[Future, str] = {
                pool.submit(_ask_limited, client, limit, settings, prompt, key): key
                for key, prompt in todo.items()
                if key not in answered
            }
            for future in as_completed(futures):
                _settle(future, futures[future], todo, answers, progress, failed)
                if on_progress is not None:
                    on_progress(progress)
    finally:
        answers.close()
    errors = out.with_name(out.stem + ".errors.jsonl")
    if failed:
        paths.write_text_atomic(errors, "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failed))
    elif errors.is_file():
        errors.unlink()
    return CollectSummary(
        str(out),
        str(errors),
        progress.total,
        progress.already,
        progress.done,
        sorted(failed, key=lambda f: f["line"]),
        progress.tokens_in,
        progress.tokens_out,
        time.monotonic() - progress.started,
        _percentile(progress.latencies, 50),
        _percentile(progress.latencies, 95),
    )


def _settle(
    future: Future,
    key: str,
    todo: dict[str, Prompt],
    answers: _Appender,
    progress: Progress,
    failed: list[dict[str, Any]],
) -> None:
    """One finished request: its answer appended, or its error kept."""
    try:
        record = future.result()
    except Exception as exc:  # whatever the client or the teacher did, the prompt is reported
        progress.failed += 1
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        failed.append({"line": todo[key].line, "key": key, "error": message})
        return
    answers.write(record)
    progress.done += 1
    progress.tokens_in += record["teacher"]["prompt_tokens"]
    progress.tokens_out += record["teacher"]["completion_tokens"]
    progress.latencies.append(record["teacher"]["latency_s"])
