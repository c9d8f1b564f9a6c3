"""OpenAI's grader objects, read and checked: `read_grader` turns the JSON a user wrote (or a job carries) into one
of the typed graders below, or a GraderError naming the field at fault."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tunesmith.errors import TunesmithError, field_path
from tunesmith.graders.formula import Formula

MAX_PYTHON_SOURCE = 256 * 1024
"""The longest python grader source, in bytes (OpenAI's limit)."""

SIMILARITY_METRICS = (
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)


class GraderError(TunesmithError):
    """A grader object that cannot be used: the message names the field."""


class _Grader(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1)
    """The grader's name: the key of its score in sub_rewards and in reports."""


class StringCheck(_Grader):
    """A comparison of two templated strings: eq, ne, like (contains), ilike (contains, any case)."""

    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarity(_Grader):
    """A similarity score in [0, 1] of two templated strings."""

    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Literal[SIMILARITY_METRICS]  # type: ignore[valid-type]


class Python(_Grader):
    """`def grade(sample, item) -> float` run in the sandbox (`sandbox.py`)."""

    type: Literal["python"]
    source: str
    image_tag: str | None = None
    """Accepted for OpenAI's shape; the grader runs under this machine's Python and its packages."""

    @model_validator(mode="after")
    def _defines_grade(self) -> Python:
        if len(self.source.encode()) > MAX_PYTHON_SOURCE:
            raise ValueError(f"source is longer than {MAX_PYTHON_SOURCE} bytes")
        try:
            tree = ast.parse(self.source)
        except SyntaxError as exc:
            raise ValueError(f"source does not parse: {exc.msg} (line {exc.lineno})") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == "grade" for n in tree.body):
            raise ValueError("source must define grade(sample, item) at its top level")
        return self


class Content(BaseModel):
    """One content part of a judge's message."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    type: Literal["input_text", "output_text", "text"] = "input_text"
    text: str


class JudgeMessage(BaseModel):
    """A message sent to a judge model; its text may hold {{item.*}} and {{sample.*}}."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    role: Literal["user", "assistant", "system", "developer"]
    content: str | Content | list[Content]
    type: Literal["message"] | None = None

    def text(self) -> str:
        parts = self.content if isinstance(self.content, list) else [self.content]
        return "".join(p if isinstance(p, str) else p.text for p in parts)


class SamplingParams(BaseModel):
    """How the judge samples (OpenAI's sampling_params)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_completions_tokens: int | None = Field(default=None, gt=0)
    reasoning_effort: str | None = None


class ScoreModel(_Grader):
    """A judge model asked for a number in `range`."""

    type: Literal["score_model"]
    model: str
    input: list[JudgeMessage] = Field(min_length=1)
    range: tuple[float, float] = (0.0, 1.0)
    sampling_params: SamplingParams | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ScoreModel:
        if not self.range[0] < self.range[1]:
            raise ValueError("range must be two numbers, the lower first")
        return self


class LabelModel(_Grader):
    """A judge model asked for one of `labels`; 1 when it is one of `passing_labels`."""

    type: Literal["label_model"]
    model: str
    input: list[JudgeMessage] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)
    sampling_params: SamplingParams | None = None

    @model_validator(mode="after")
    def _subset(self) -> LabelModel:
        unknown = [label for label in self.passing_labels if label not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels {unknown} are not among labels")
        return self


Single = Annotated[StringCheck | TextSimilarity | Python | ScoreModel | LabelModel, Field(discriminator="type")]


class Multi(_Grader):
    """Sub-graders by name, combined by the `calculate_output` formula (`formula.py`)."""

    type: Literal["multi"]
    graders: dict[str, Single]
    calculate_output: str

    @model_validator(mode="before")
    @classmethod
    def _one_grader(cls, data: Any) -> Any:
        # OpenAI's client types `graders` as one grader; its guide writes a map of names: both are read
        if isinstance(data, dict) and isinstance(data.get("graders"), dict) and "type" in data["graders"]:
            one = data["graders"]
            return {**data, "graders": {str(one.get("name", "grader")): one}}
        return data

    @model_validator(mode="after")
    def _formula(self) -> Multi:
        if not self.graders:
            raise ValueError("graders must name at least one grader")
        Formula.parse(self.calculate_output, names=tuple(self.graders))
        return self

    @property
    def formula(self) -> Formula:
        return Formula.parse(self.calculate_output, names=tuple(self.graders))


Grader = Annotated[StringCheck | TextSimilarity | Python | ScoreModel | LabelModel | Multi, Field(discriminator="type")]


class _Holder(BaseModel):
    grader: Grader


def read_grader(value: Any, where: str = "grader") -> Grader:
    """A grader object checked; a GraderError names the first field at fault (`where` prefixes it)."""
    try:
        return _Holder(grader=value).grader
    except ValidationError as exc:
        first = exc.errors()[0]
        tags = {"string_check", "text_similarity", "python", "score_model", "label_model", "multi"}
        path = field_path(tuple(part for part in first["loc"][1:] if part not in tags))
        name = f"{where}.{path}" if path else where
        message = str(first["msg"]).removeprefix("Value error, ")
        raise GraderError(
            f"{name}: {message}", hint="see docs/graders.md for each grader type's fields", code="invalid_grader"
        ) from None


def load_grader(path: str) -> Grader:
    """A grader from a JSON file (one grader object)."""
    file = Path(path)
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GraderError(f"{path}: no such grader file", hint="give a JSON file holding one grader object") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GraderError(f"{path}: not JSON ({exc})", hint="give a JSON file holding one grader object") from None
    return read_grader(value, where=path)


def as_json(grader: Grader) -> dict[str, Any]:
    """The grader as OpenAI writes it."""
    return grader.model_dump(mode="json", exclude_none=True)
