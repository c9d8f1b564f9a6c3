"""Grammars (llguidance's Lark syntax) for what an answer must be: function calls in the model's own call syntax,
JSON matching a schema, or text that makes no call.

A call is the syntax's opening text, a JSON object {name: "<function>", arguments: <its parameters' schema, closed
to keys it does not list>} and the closing text; JSON is written with the separators chat templates use (", " and
": "), so a constrained answer looks as the model was trained to write it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from tunesmith.data.schema import Tool
from tunesmith.tokenize.tools import CallSyntax

ToolChoice = Literal["auto", "none", "required"] | str
"""auto, none, required, or the name of the one function to call."""
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""llguidance's JSON layout options: the separators of Python's json.dumps, which chat templates' tojson uses."""


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _regex_literal(text: str) -> str:
    """`text` matched literally inside a /regex/."""
    return "".join(c if c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)


def closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others (where it says nothing of
    additionalProperties): a call's arguments are the function's own, and a model, left free, may go on writing
    keys of its own invention for as long as it is let."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) if k not in ("const", "enum", "default", "examples") else v for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _styled(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "x-guidance": JSON_STYLE}


def json_grammar(schema: dict[str, Any]) -> str:
    """JSON that matches `schema` (response_format)."""
    return f"start: %json {json.dumps(_styled(schema))}\n"


def _call_rule(index: int, tool: Tool, syntax: CallSyntax) -> str:
    call = {
        "type": "object",
        "properties": {syntax.name_key: {"const": tool.name}, syntax.arguments_key: closed(tool.schema())},
        "required": [syntax.name_key, syntax.arguments_key],
        "additionalProperties": False,
    }
    body = f"%json {json.dumps(_styled(call))}"
    return f"call_{index}: {_literal(syntax.opening)} {body} {_literal(syntax.closing)}".replace('"" ', "")


def _free_text(syntax: CallSyntax) -> str:
    """A terminal for text that makes no call: it never holds the opening's text (<tool_call>; or, where calls open
    with bare JSON, it never starts with "{")."""
    if syntax.opening.strip():
        opening = _regex_literal(syntax.opening.strip())
        return f"TEXT: /(?s:.+)/ & ~/(?s:.*){opening}(?s:.*)/"
    return r"TEXT: /(?s:[^{\s].*)/"


def tools_grammar(tools: tuple[Tool, ...], syntax: CallSyntax, choice: ToolChoice, parallel: bool) -> str:
    """What an answer may be, given the functions and tool_choice: text (auto, none), calls (auto, required), or
    exactly one call of a named function; several calls in a turn where `parallel` and the template allow."""
    if choice == "none" or not tools:
        return f"start: TEXT\n{_free_text(syntax)}\n"
    chosen = [t for t in tools if t.name == choice] if choice not in ("auto", "required") else list(tools)
    rules = [_call_rule(i, tool, syntax) for i, tool in enumerate(chosen)]
    alternatives = " | ".join(f"call_{i}" for i in range(len(chosen)))
    several = parallel and syntax.parallel and choice in ("auto", "required")
    calls = f"calls: call ({_literal(syntax.separator)} call)*" if several else "calls: call"
    start = "start: TEXT | calls" if choice == "auto" else "start: calls"
    lines = [start, calls, f"call: {alternatives}", *rules]
    if choice == "auto":
        lines.append(_free_text(syntax))
    return "\n".join(lines) + "\n"
