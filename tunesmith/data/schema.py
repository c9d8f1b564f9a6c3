"""The records every input format is turned into."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call an assistant message makes, as OpenAI writes it."""

    id: str
    """The call's id, which the tool message answering it names."""
    name: str
    """The function called."""
    arguments: str
    """Its arguments: a JSON object, as text."""

    def parsed(self) -> dict[str, Any]:
        """The arguments as an object (chat templates take them so)."""
        value = json.loads(self.arguments)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call."""

    name: str
    """Its name."""
    description: str = ""
    """What it does, for the model."""
    parameters: str = "{}"
    """Its arguments' JSON schema, as canonical JSON text (records stay hashable and comparable)."""

    def schema(self) -> dict[str, Any]:
        """The parameters' JSON schema."""
        return json.loads(self.parameters)

    def as_dict(self) -> dict[str, Any]:
        """OpenAI's tool object, the shape chat templates take."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.schema()
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation."""

    role: Role
    """Who speaks: system, user, assistant, or tool (a function's result)."""
    content: str
    """What is said ("" for an assistant message that only calls functions)."""
    weight: int | None = None
    """On assistant turns: 0 to leave the turn out of training, 1 (or None) to train on it."""
    tool_calls: tuple[ToolCall, ...] = ()
    """On assistant turns: the functions it calls."""
    tool_call_id: str | None = None
    """On tool turns: the call it answers."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """A chat example: the model learns the assistant turns."""

    messages: tuple[Message, ...]
    """The turns in order."""
    tools: tuple[Tool, ...] = ()
    """The functions the assistant may call."""


@dataclass(frozen=True, slots=True)
class TextDoc:
    """A plain document for continued pre-training: every token is learned."""

    text: str
    """The document."""


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """A prompt with a preferred and a rejected answer."""

    prompt: tuple[Message, ...]
    """The conversation so far, ending before the answer."""
    chosen: str
    """The preferred assistant answer."""
    rejected: str
    """The rejected assistant answer."""
    tools: tuple[Tool, ...] = ()
    """The functions the assistant may call."""
    chosen_calls: tuple[ToolCall, ...] = ()
    """The functions the preferred answer calls."""
    rejected_calls: tuple[ToolCall, ...] = ()
    """The functions the rejected answer calls."""

    def conversation(self, side: Literal["chosen", "rejected"]) -> Conversation:
        """The prompt followed by one side's answer."""
        calls = self.chosen_calls if side == "chosen" else self.rejected_calls
        answer = Message("assistant", self.chosen if side == "chosen" else self.rejected, tool_calls=calls)
        return Conversation((*self.prompt, answer), self.tools)


Record = Conversation | TextDoc | PreferencePair


def as_dicts(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages in the shape chat templates expect (tool calls with their arguments as objects, as Hugging Face's
    templates take them)."""
    return [_as_dict(m) for m in messages]


def _as_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.parsed()}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out
