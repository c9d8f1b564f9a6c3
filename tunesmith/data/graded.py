"""Lines that graders score: OpenAI's reinforcement format, `{"messages": [...], ...fields}`. The messages are the
prompt (a last assistant message is its reference, not part of it); the whole line is the graders' {{item.*}}.
Read the same way for training (objective grpo) and for grading a model (`eval --grader`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from tunesmith.data.formats import RecordError, parse_prompt
from tunesmith.data.load import read_rows
from tunesmith.data.schema import Message, Tool
from tunesmith.errors import DataError

HINT = 'write one prompt a line: {"messages": [...]} (a last assistant message is its reference), plus the fields'


@dataclass(frozen=True)
class GradedLine:
    """One prompt and its line."""

    line: int
    """Its line in the file."""
    messages: tuple[Message, ...]
    """The conversation the model answers."""
    tools: tuple[Tool, ...]
    """The functions it offers."""
    reference: str
    """The last assistant message's text, or empty."""
    value: dict[str, Any]
    """The whole line: the graders' item namespace."""


def _graded_line(source: str, line: int, value: Any) -> GradedLine:
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list) or not value["messages"]:
        raise DataError(f"{source}:{line}: no 'messages' list", hint=HINT, code="missing_messages_list")
    messages, reference = value["messages"], ""
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        messages, reference = messages[:-1], str(last.get("content") or "")
    try:
        conversation = parse_prompt({**value, "messages": messages})
    except RecordError as exc:
        raise DataError(f"{source}:{line}: {exc.message}", hint=HINT, code=exc.code) from None
    return GradedLine(line, conversation.messages, conversation.tools, reference, value)


def read_graded(
    source: str, lines: Collection[int] | None = None, limit: int | None = None
) -> tuple[list[GradedLine], int]:
    """(the prompts of `lines` (all when None), at most `limit` of them, and how many the file holds there); the
    first line that cannot be read is a DataError naming it, and so is a file without prompts."""
    graded, total = [], 0
    for row in read_rows(source):
        if row.code:
            raise DataError(f"{source}:{row.line}: {row.message}", hint=HINT, code=row.code)
        if lines is not None and row.line not in lines:
            continue
        total += 1
        if limit is None or len(graded) < limit:
            graded.append(_graded_line(source, row.line, row.value))
    if not graded:
        raise DataError(f"{source}: no prompts", hint=HINT, code="empty_file")
    return graded, total
