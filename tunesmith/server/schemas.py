"""Request bodies in OpenAI's shapes, validated; fields OpenAI has and we do not use are accepted and ignored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_STOPS = 4
"""OpenAI's limit on stop strings."""
MAX_TOP_LOGPROBS = 20
"""OpenAI's limit on top_logprobs."""
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
"""OpenAI's seed is a signed 64-bit integer."""


class FunctionCall(BaseModel):
    """A call's function: its name and arguments (JSON text)."""

    model_config = ConfigDict(extra="ignore")
    name: str
    """The function called."""
    arguments: str = "{}"
    """Its arguments, a JSON object as text."""


class ToolCallIn(BaseModel):
    """A call an earlier assistant message made."""

    model_config = ConfigDict(extra="ignore")
    id: str
    """The call's id, which a tool message answers."""
    type: Literal["function"] = "function"
    """Always function."""
    function: FunctionCall
    """What was called."""


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    """Who wrote it; developer is read as system; tool answers a call."""
    content: str | list[dict[str, object]] | None = None
    """Text, or OpenAI's list of content parts (only text parts are used); null on an assistant message that only
    calls functions."""
    tool_calls: list[ToolCallIn] | None = None
    """On an assistant message: the calls it made."""
    tool_call_id: str | None = None
    """On a tool message: the call it answers."""

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")


class JSONSchemaFormat(BaseModel):
    """response_format's json_schema."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str = "response"
    """The schema's name."""
    json_schema: dict[str, object] = Field(default_factory=dict, alias="schema")
    """The JSON schema the answer must match."""
    strict: bool | None = None
    """OpenAI's strict mode; answers here always match the schema (decoded under its grammar)."""


class ResponseFormat(BaseModel):
    """What shape a chat answer takes."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    """text (free), json_object (any JSON object) or json_schema (matching json_schema)."""
    json_schema: JSONSchemaFormat | None = None
    """With type json_schema."""

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object")
        return self


class StreamOptions(BaseModel):
    """Options of a streamed response."""

    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False
    """Send a last chunk with the token counts."""


class _Sampled(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    """The model id (see GET /v1/models)."""
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    """0 is greedy; higher is more varied."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Sample from the smallest set of tokens whose probability reaches top_p."""
    n: int = Field(1, ge=1, le=8)
    """Answers to generate."""
    stream: bool = False
    """Send server-sent events as tokens are made."""
    stream_options: StreamOptions | None = None
    """include_usage."""
    stop: str | Annotated[list[str], Field(max_length=MAX_STOPS)] | None = None
    """A string, or up to 4, that end an answer."""
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    """Makes sampling repeatable (a 64-bit signed integer, as OpenAI takes)."""

    def wants_usage(self) -> bool:
        """A streamed response ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


class ChatRequest(_Sampled):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    """The conversation so far."""
    max_tokens: int | None = Field(None, ge=1)
    """The longest answer (older name)."""
    max_completion_tokens: int | None = Field(None, ge=1)
    """The longest answer."""
    logprobs: bool = False
    """Return each answer token's log-probability."""
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    """With logprobs: also the likeliest tokens' at each position."""
    chat_template_kwargs: dict[str, bool | int | float | str] | None = None
    """Variables for the model's chat template, as vLLM takes them (e.g. {"enable_thinking": false} for Qwen3)."""
    tools: list[dict[str, object]] | None = None
    """Functions the model may call: [{"type": "function", "function": {"name", "description", "parameters"}}]."""
    tool_choice: Literal["auto", "none", "required"] | dict[str, object] | None = None
    """auto (the default with tools), none, required, or {"type": "function", "function": {"name": ...}}."""
    parallel_tool_calls: bool = True
    """Several calls in one answer, where the model's template writes them."""
    response_format: ResponseFormat | None = None
    """text, json_object or json_schema: the answer is decoded under the format's grammar."""

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def logprob_count(self) -> int | None:
        """What the engine is asked: None, or how many alternatives a token."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Sampled):
    """POST /v1/completions."""

    prompt: str | list[str]
    """Text to continue (one prompt; a list of one is accepted)."""
    max_tokens: int = Field(16, ge=1)
    """The longest continuation (OpenAI's default is 16)."""
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    """Return each token's log-probability and this many likeliest tokens' (OpenAI allows 5; we allow 20)."""
