"""OpenAI's function-calling data: tool definitions, assistant calls and tool results, read and checked.

Accepted as OpenAI's fine-tuning takes them: `tools` (or the legacy `functions`) beside `messages`; an assistant
message with `tool_calls` (one or several) and no content; a `tool` message answering a call by `tool_call_id`; the
legacy `function_call` on an assistant message and a `function` message answering it (given ids of their own).

What is checked, each with its code: a call's arguments must be a JSON object (`invalid_tool_arguments`) that matches
the function's parameters schema (`tool_arguments_mismatch`); a call must name a function defined in `tools`
(`unknown_function`, when the example defines any); a tool message must come after a call (`tool_message_without_call`)
and answer one of the calls since the last assistant message (`unmatched_tool_call_id`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tunesmith.data.schema import Message, Tool, ToolCall


class ToolDataError(Exception):
    """A problem with tool data: an error code and a message (data/formats.py makes a RecordError of it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def canonical(value: Any) -> str:
    """Compact JSON text, keys in the order written (the order the model learns and the grammar keeps)."""
    return json.dumps(value, ensure_ascii=False)


def parse_tools(tools: Any, functions: Any = None) -> tuple[Tool, ...]:
    """`tools` ([{"type": "function", "function": {...}}]) or the legacy `functions` ([{...}]) as Tools."""
    if tools is None and functions is None:
        return ()
    raw = tools if tools is not None else functions
    field = "tools" if tools is not None else "functions"
    if not isinstance(raw, list):
        raise ToolDataError("invalid_tools", f"field {field!r} must be a list of functions")
    found = tuple(_tool(i, t, field) for i, t in enumerate(raw))
    names = [t.name for t in found]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ToolDataError("invalid_tools", f"{field}: function {twice!r} is defined twice")
    return found


def _tool(index: int, raw: Any, field: str) -> Tool:
    where = f"{field}[{index}]"
    if field == "tools":
        if not isinstance(raw, dict) or raw.get("type", "function") != "function" or "function" not in raw:
            raise ToolDataError("invalid_tools", f'{where} must be {{"type": "function", "function": {{...}}}}')
        raw = raw["function"]
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].strip():
        raise ToolDataError("invalid_tools", f"{where} must be an object with a 'name'")
    parameters = raw.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise ToolDataError("invalid_tools", f"{where}.parameters must be a JSON schema object")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        raise ToolDataError("invalid_tools", f"{where}.parameters is not a valid JSON schema: {exc.message}") from None
    description = raw.get("description", "")
    return Tool(raw["name"], description if isinstance(description, str) else "", canonical(parameters))


def _arguments(raw: Any, where: str) -> str:
    """Arguments as OpenAI writes them (a JSON string) or as an object, checked to be a JSON object."""
    if isinstance(raw, dict):
        return canonical(raw)
    if not isinstance(raw, str):
        raise ToolDataError("invalid_tool_arguments", f"{where}: arguments must be a JSON object written as a string")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ToolDataError("invalid_tool_arguments", f"{where}: arguments are not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ToolDataError("invalid_tool_arguments", f"{where}: arguments must be a JSON object")
    return canonical(value)


def parse_tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    """An assistant message's `tool_calls` list."""
    if not isinstance(raw, list) or not raw:
        raise ToolDataError("invalid_tool_calls", f"{where}: tool_calls must be a non-empty list")
    calls = []
    for i, call in enumerate(raw):
        at = f"{where} tool call {i + 1}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ToolDataError("invalid_tool_calls", f'{at} must be {{"id", "type": "function", "function": {{...}}}}')
        ident = call.get("id")
        calls.append(
            ToolCall(
                ident if isinstance(ident, str) else f"call_{i}",
                function["name"],
                _arguments(function.get("arguments", "{}"), at),
            )
        )
    return tuple(calls)


def parse_function_call(raw: Any, where: str, ident: str) -> tuple[ToolCall, ...]:
    """The legacy `function_call` ({"name", "arguments"}) as one call with the id `ident`."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ToolDataError("invalid_tool_calls", f'{where}: function_call must be {{"name", "arguments"}}')
    return (ToolCall(ident, raw["name"], _arguments(raw.get("arguments", "{}"), where)),)


def check_calls(messages: Sequence[Message], tools: Iterable[Tool]) -> None:
    """Every call names a defined function with matching arguments; every tool message answers an open call."""
    defined = {t.name: t for t in tools}
    open_calls: set[str] = set()
    seen_call = False
    for index, message in enumerate(messages):
        where = f"message {index + 1}"
        if message.role == "assistant":
            open_calls = {c.id for c in message.tool_calls}
            seen_call = seen_call or bool(message.tool_calls)
            for call in message.tool_calls:
                _check_call(call, defined, where)
        elif message.role == "tool":
            if not seen_call:
                raise ToolDataError("tool_message_without_call", f"{where} (tool) answers no earlier tool call")
            if message.tool_call_id is not None and message.tool_call_id not in open_calls:
                raise ToolDataError(
                    "unmatched_tool_call_id",
                    f"{where} (tool) answers tool_call_id {message.tool_call_id!r}, which the assistant message "
                    "before it does not call",
                )


def _check_call(call: ToolCall, defined: dict[str, Tool], where: str) -> None:
    if not defined:
        return  # calls without definitions: nothing to check them against (OpenAI accepts such data too)
    tool = defined.get(call.name)
    if tool is None:
        raise ToolDataError(
            "unknown_function", f"{where} calls {call.name!r}, which is not in tools ({', '.join(sorted(defined))})"
        )
    error = next(iter(Draft202012Validator(tool.schema()).iter_errors(json.loads(call.arguments))), None)
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ToolDataError(
            "tool_arguments_mismatch",
            f"{where} calls {call.name!r} with arguments that do not match its parameters at {path}: {error.message}",
        )
