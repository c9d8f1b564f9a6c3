"""Graders that ask a model: score_model and label_model (a judge at any OpenAI-compatible endpoint, `tunesmith
serve` included, asked for JSON by a schema), and text_similarity's cosine (an embeddings endpoint). Retries with
backoff are the official openai client's own; tokens are counted per model for the cost line."""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import openai

from tunesmith.graders.spec import LabelModel, ScoreModel
from tunesmith.graders.template import Sample, render

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
JUDGE_MAX_TOKENS = 256
"""The longest judge answer when sampling_params names none."""


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


@dataclass(frozen=True)
class Endpoint:
    """Where model graders and cosine similarity are computed."""

    base_url: str | None = None
    """The judge's endpoint; None: $TUNESMITH_GRADER_BASE_URL, else $OPENAI_BASE_URL, else OpenAI's."""
    api_key: str | None = None
    """Its key; None: $TUNESMITH_GRADER_API_KEY, else $OPENAI_API_KEY (a local server takes any string)."""
    embedding_model: str = "text-embedding-3-small"
    """The embeddings model that text_similarity's cosine asks."""
    max_retries: int = 5
    """Retries of a failed call (408/409/429/5xx, timeouts), with the client's backoff."""
    timeout: float = 120.0
    """Seconds one call may take."""

    def resolved_url(self) -> str | None:
        return self.base_url or _env("TUNESMITH_GRADER_BASE_URL", "OPENAI_BASE_URL")

    def resolved_key(self) -> str:
        return self.api_key or _env("TUNESMITH_GRADER_API_KEY", "OPENAI_API_KEY") or "none"


class JudgeError(Exception):
    """A judge's answer that gives no grade; `kind` is OpenAI's error flag."""

    def __init__(self, kind: str, details: str) -> None:
        super().__init__(details)
        self.kind = kind


@dataclass
class Usage:
    """Tokens each judge model used (thread-safe)."""

    by_model: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, model: str, usage: Any) -> None:
        if usage is None:
            return
        with self.lock:
            counts = self.by_model[model]
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                counts[key] += int(getattr(usage, key, 0) or 0)

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {model: dict(counts) for model, counts in self.by_model.items()}


@dataclass
class Judge:
    """Calls to the endpoint."""

    endpoint: Endpoint = field(default_factory=Endpoint)

    @cached_property
    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.endpoint.resolved_url(),
            api_key=self.endpoint.resolved_key(),
            max_retries=self.endpoint.max_retries,
            timeout=self.endpoint.timeout,
        )

    def score(self, grader: ScoreModel, sample: Sample, item: Any, usage: Usage) -> float:
        low, high = grader.range
        schema = {"type": "object", "properties": {"result": {"type": "number"}}, "required": ["result"],
                  "additionalProperties": False}  # fmt: skip
        answer = self._ask(grader, sample, item, schema, usage)
        value = _field(answer, lambda v: isinstance(v, int | float) and not isinstance(v, bool))
        if value is None:
            found = NUMBER.search(answer)
            if found is None:
                raise JudgeError("model_grader_parse_error", f"no score in the judge's answer: {answer[:200]!r}")
            value = float(found.group())
        return min(high, max(low, float(value)))

    def label(self, grader: LabelModel, sample: Sample, item: Any, usage: Usage) -> float:
        schema = {
            "type": "object",
            "properties": {"result": {"type": "string", "enum": grader.labels}},
            "required": ["result"],
        }
        answer = self._ask(grader, sample, item, schema, usage)
        value = _field(answer, lambda v: isinstance(v, str))
        label = value if value is not None else answer.strip().strip('"')
        if label not in grader.labels:
            raise JudgeError("model_grader_parse_error", f"the judge answered {label[:100]!r}, not one of the labels")
        return 1.0 if label in grader.passing_labels else 0.0

    def cosine(self, text: str, reference: str, usage: Usage) -> float:
        model = self.endpoint.embedding_model
        try:
            made = self.client.embeddings.create(model=model, input=[text, reference])
        except openai.OpenAIError as exc:
            raise JudgeError("model_grader_server_error", f"embeddings: {exc}") from None
        usage.add(model, made.usage)
        a, b = (d.embedding for d in sorted(made.data, key=lambda d: d.index))
        norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0

    def _ask(self, grader: ScoreModel | LabelModel, sample: Sample, item: Any, schema: dict, usage: Usage) -> str:
        messages = [{"role": m.role, "content": render(m.text(), sample, item)} for m in grader.input]
        params = grader.sampling_params
        extra: dict[str, Any] = {"max_tokens": JUDGE_MAX_TOKENS}
        if params is not None:
            extra |= {
                k: v
                for k, v in (
                    ("temperature", params.temperature),
                    ("top_p", params.top_p),
                    ("seed", params.seed),
                    ("max_tokens", params.max_completions_tokens),
                )
                if v is not None
            }
        try:
            made = self.client.chat.completions.create(
                model=grader.model,
                messages=messages,  # type: ignore[arg-type]
                response_format={"type": "json_schema", "json_schema": {"name": "grade", "schema": schema}},
                **extra,
            )
        except openai.OpenAIError as exc:
            raise JudgeError("model_grader_server_error", f"{grader.model}: {exc}") from None
        usage.add(grader.model, made.usage)
        message = made.choices[0].message
        if getattr(message, "refusal", None):
            raise JudgeError("model_grader_refusal_error", str(message.refusal))
        return message.content or ""


RESULT = re.compile(r'"result"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')
"""The result field at the start of an answer that goes on past it (a judge that wrote more keys, cut short)."""


def _field(answer: str, accepts: Any) -> Any:
    """`result` of a JSON answer when it is what is wanted, else None."""
    try:
        value = json.loads(answer)
    except json.JSONDecodeError:
        found = RESULT.search(answer)
        value = {"result": json.loads(found.group(1))} if found else None
    result = value.get("result") if isinstance(value, dict) else value
    return result if accepts(result) else None
