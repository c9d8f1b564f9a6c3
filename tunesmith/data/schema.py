"""The records every input format is turned into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation."""

    role: Role
    """Who speaks: system, user or assistant."""
    content: str
    """What is said."""
    weight: int | None = None
    """On assistant turns: 0 to leave the turn out of training, 1 (or None) to train on it."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """A chat example: the model learns the assistant turns."""

    messages: tuple[Message, ...]
    """The turns in order."""


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


Record = Conversation | TextDoc | PreferencePair


def as_dicts(messages: tuple[Message, ...]) -> list[dict[str, str]]:
    """Messages in the shape chat templates expect."""
    return [{"role": m.role, "content": m.content} for m in messages]
