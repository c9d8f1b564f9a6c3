"""Tools and response formats on /v1/chat/completions: a request's grammar, and answers as OpenAI's tool calls.

With `tools` (and tool_choice other than none) the answer is decoded under a grammar of the functions' calls in the
model's own call syntax (or text, for auto), so a call always parses and matches its function's parameters; it comes
back as `message.tool_calls` with `finish_reason: "tool_calls"`. tool_choice none keeps the answer free of calls.
Without tools, `response_format` json_object or json_schema decodes the answer under the schema's grammar.
Streamed, text is sent as it is made until a call begins; the calls are sent whole when the answer ends, one
tool-call delta each (index, id, name, arguments), which the official client assembles as it does OpenAI's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tunesmith.constrain.grammar import closed, json_grammar, tools_grammar
from tunesmith.data.schema import Message, Tool
from tunesmith.data.tools import ToolDataError, parse_tool_calls, parse_tools
from tunesmith.server.errors import APIError
from tunesmith.server.schemas import ChatRequest
from tunesmith.tokenize.tools import CallSyntax


@dataclass(frozen=True)
class Shape:
    """What a chat request's answers must be."""

    tools: tuple[Tool, ...]
    """The functions offered (rendered into the prompt)."""
    grammar: str | None
    """The grammar answers are decoded under; None: free."""
    param: str
    """The request field the grammar comes from (named by a 400 when it cannot be enforced)."""
    calls: bool
    """Answers are read for calls."""


def messages(body: ChatRequest) -> tuple[Message, ...]:
    """The request's conversation (developer read as system; earlier calls and their results kept)."""
    out = []
    for index, m in enumerate(body.messages):
        calls = ()
        if m.tool_calls:
            try:
                calls = parse_tool_calls([c.model_dump() for c in m.tool_calls], f"message {index + 1}")
            except ToolDataError as exc:
                raise APIError(400, exc.message, f"messages[{index}].tool_calls", exc.code) from None
        role = "system" if m.role == "developer" else m.role
        out.append(Message(role, m.text(), tool_calls=calls, tool_call_id=m.tool_call_id))
    return tuple(out)


def shape(body: ChatRequest, syntax: CallSyntax) -> Shape:
    """The request's tools, tool_choice and response_format as one grammar."""
    try:
        tools = parse_tools(body.tools) if body.tools else ()
    except ToolDataError as exc:
        raise APIError(400, exc.message, "tools", exc.code) from None
    choice = _choice(body, tools)
    if tools:
        grammar = tools_grammar(tools, syntax, choice, body.parallel_tool_calls)
        return Shape(tools, grammar, "tools", choice != "none")
    form = body.response_format
    if form is None or form.type == "text":
        return Shape((), None, "", False)
    schema: dict[str, Any] = {"type": "object"}
    if form.type == "json_schema" and form.json_schema is not None:
        given = form.json_schema
        schema = closed(given.json_schema) if given.strict else given.json_schema  # strict: no keys of its own
    return Shape((), json_grammar(schema), "response_format", False)


def _choice(body: ChatRequest, tools: tuple[Tool, ...]) -> str:
    choice = body.tool_choice
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice != "none" and not tools:
            raise APIError(400, f"tool_choice {choice!r} needs tools", "tool_choice", "invalid_value")
        return choice
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise APIError(400, 'tool_choice must be {"type": "function", "function": {"name": ...}}', "tool_choice")
    if name not in {t.name for t in tools}:
        raise APIError(400, f"tool_choice names {name!r}, which is not in tools", "tool_choice", "invalid_value")
    return name


def _call_objects(calls: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": n, "arguments": a}}
        for n, a in calls
    ]


def answer(text: str, finish: str | None, syntax: CallSyntax | None) -> tuple[dict[str, Any], str | None]:
    """(the assistant message, its finish_reason): calls as tool_calls where `syntax` is given and the text ends in
    them."""
    read = syntax.read(text) if syntax is not None else None
    if read is None or not read[1]:
        return {"role": "assistant", "content": text}, finish
    content, calls = read
    message = {"role": "assistant", "content": content or None, "tool_calls": _call_objects(calls)}
    return message, "tool_calls" if finish == "stop" else finish


class CallStream:
    """One streamed answer's deltas: text as it comes until a call may have begun, the calls whole at the end."""

    def __init__(self, syntax: CallSyntax) -> None:
        self.syntax = syntax
        self.held = ""
        self.calling = False

    def feed(self, text: str, finish: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """(the deltas to send for a piece of text, the finish_reason to send)."""
        self.held += text
        if finish is not None:
            return self._end(finish)
        if self.calling or self._call_started():
            self.calling = True
            return [], None
        keep = self._may_open()
        sent, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return ([{"content": sent}] if sent else []), None

    def _call_started(self) -> bool:
        opening = self.syntax.opening
        return opening in self.held if opening else self.held.lstrip().startswith("{")

    def _may_open(self) -> int:
        """How many trailing characters could be the start of a call (held back until it is known)."""
        opening = self.syntax.opening or "{"
        if not self.syntax.opening and self.held.strip():
            return 0  # bare-JSON calls open an answer: text that began otherwise is text
        if not self.syntax.opening:
            return len(self.held)
        return next(
            (k for k in range(min(len(opening), len(self.held)), 0, -1) if opening.startswith(self.held[-k:])), 0
        )

    def _end(self, finish: str) -> tuple[list[dict[str, Any]], str | None]:
        """The held text as the whole answer reads it: its text, then each call as a delta of its own."""
        message, finish_reason = answer(self.held, finish, self.syntax)
        deltas: list[dict[str, Any]] = [{"content": message["content"]}] if message["content"] else []
        deltas += [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(message.get("tool_calls", []))]
        return deltas, finish_reason
