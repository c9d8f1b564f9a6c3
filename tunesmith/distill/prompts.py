"""The prompts file of a collection: one prompt a line, read with the same rules and line numbers as `data check`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from tunesmith.data.formats import RecordError, parse_prompt
from tunesmith.data.load import read_rows
from tunesmith.data.schema import Message, Tool, as_dicts
from tunesmith.errors import DataError

PROMPT_HINT = 'write one prompt a line: a JSON string, {"prompt": "..."} or {"messages": [...]} without the answer'
HELD_OUT_HINT = 'write one conversation a line, {"messages": [...]}, the last message its reference answer, or a prompt'


@dataclass(frozen=True)
class Prompt:
    """One prompt and where it came from."""

    line: int
    """Its line in the prompts file."""
    messages: tuple[Message, ...]
    """The conversation so far; the teacher writes the next assistant turn."""
    tools: tuple[Tool, ...] = ()
    """The functions the teacher may call."""

    def as_json(self) -> list[dict[str, object]]:
        """The messages as OpenAI's API takes them (tool calls' arguments as JSON text)."""
        out = as_dicts(self.messages)
        for message in out:
            for call in message.get("tool_calls", []):
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
        return out

    def tools_json(self) -> list[dict[str, object]]:
        return [t.as_dict() for t in self.tools]

    def as_line(self) -> dict[str, object]:
        """The prompt as a line of a prompts file: its messages, and its tools when it has any."""
        return {"messages": self.as_json()} | ({"tools": self.tools_json()} if self.tools else {})


def read_prompts(source: str) -> list[Prompt]:
    """Every prompt of a JSONL/JSON/CSV/parquet file; the first bad line is a DataError naming it."""
    return [prompt for prompt, _ in _read(source, PROMPT_HINT, references=False)]


def read_held_out(source: str) -> list[tuple[Prompt, str | None]]:
    """Held-out prompts, each with its reference answer when the line's conversation ends with the assistant's."""
    return _read(source, HELD_OUT_HINT, references=True)


def _split_reference(value: object) -> tuple[object, str | None]:
    """(the prompt, the reference answer) of a conversation that ends with the assistant's turn."""
    messages = value.get("messages") if isinstance(value, dict) else None
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        last = messages[-1]
        if last.get("role") == "assistant" and isinstance(last.get("content"), str):
            return value | {"messages": messages[:-1]}, last["content"]
    return value, None


def _read(source: str, hint: str, references: bool) -> list[tuple[Prompt, str | None]]:
    out: list[tuple[Prompt, str | None]] = []
    for row in read_rows(source):
        if row.code:
            raise DataError(f"{source}:{row.line}: {row.message}", hint=hint, code=row.code)
        value, reference = _split_reference(row.value) if references else (row.value, None)
        try:
            conversation = parse_prompt(value)
            out.append((Prompt(row.line, conversation.messages, conversation.tools), reference))
        except RecordError as exc:
            raise DataError(f"{source}:{row.line}: {exc.message}", hint=hint, code=exc.code) from None
    if not out:
        raise DataError(f"{source}: no prompts", hint=hint, code="empty_file")
    return out


def prompt_key(prompt: Prompt, teacher: dict[str, object]) -> str:
    """What identifies one request: the prompt and every teacher setting that changes the answer."""
    asked = {"messages": prompt.as_json(), "teacher": teacher} | (
        {"tools": prompt.tools_json()} if prompt.tools else {}
    )
    text = json.dumps(asked, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
