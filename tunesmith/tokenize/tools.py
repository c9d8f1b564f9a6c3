"""Function calls in text: how a model's template writes them, and the one fallback for templates that cannot.

A template that supports tools (Qwen2.5, Qwen3, Llama 3.1/3.2, ...) renders the functions and calls itself
(`apply_chat_template(..., tools=...)`); its call syntax is learned once by rendering a probe call: the text before the
call's JSON object, after it, between two calls, and the keys it uses ("arguments", or Llama's "parameters"). Serving
parses answers and builds grammars with the same syntax, so a model answers as it was trained.

A template without tool support (the default SmolLM2's) gets the fallback, the Hermes format as Qwen2.5's template
writes it: the functions described in the system turn (appended to the system message, or as one), each call as
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` in the assistant turn (after its text, calls joined
by a newline), and tool results as a user turn of `<tool_response>\\n...\\n</tool_response>` blocks. Training,
`data show`, the server and the Ollama export all render through this one transformation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from tunesmith.data.schema import Message, Tool, ToolCall, as_dicts
from tunesmith.tokenize.template import jinja

FALLBACK_TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    'XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
"""What the fallback appends to the system turn (Qwen2.5's own words); {tools}: one JSON object a line."""
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>\n", "\n</tool_response>"
_PROBE_TOOL = Tool("tunesmith_probe", "probe", json.dumps({"type": "object", "properties": {"q": {"type": "string"}}}))
_PROBE_CALLS = (ToolCall("call_0", "tunesmith_probe", '{"q": "first"}'), ToolCall("call_1", "tunesmith_probe", "{}"))


@dataclass(frozen=True)
class CallSyntax:
    """How calls are written in an assistant turn: opening + {name_key: name, arguments_key: arguments} + closing,
    calls joined by separator."""

    opening: str
    """Text before a call's JSON object."""
    closing: str
    """Text after it."""
    separator: str = "\n"
    """Between two calls."""
    name_key: str = "name"
    """The JSON key of the function's name."""
    arguments_key: str = "arguments"
    """The JSON key of its arguments."""
    parallel: bool = True
    """The template writes several calls in one turn."""

    def call_object(self, name: str, arguments: Any) -> dict[str, Any]:
        return {self.name_key: name, self.arguments_key: arguments}

    def write(self, calls: tuple[ToolCall, ...]) -> str:
        """The calls as the model writes them."""
        return self.separator.join(
            self.opening + json.dumps(self.call_object(c.name, c.parsed()), ensure_ascii=False) + self.closing
            for c in calls
        )

    def read(self, text: str) -> tuple[str, list[tuple[str, str]]] | None:
        """(text before the calls, [(name, arguments as JSON text)]) when `text` ends in well-formed calls; None
        when it holds none. Calls must follow each other to the end (trailing whitespace aside)."""
        start = text.find(self.opening + "{") if self.opening else _first_object(text)
        if start < 0:
            return None
        content, rest, calls = text[:start], text[start:], []
        while True:
            call = self._read_one(rest)
            if call is None:
                return None
            calls.append(call[0])
            rest = call[1]
            if not rest.strip():
                return content.rstrip(), calls
            if not self.separator or not rest.startswith(self.separator):
                return None
            rest = rest[len(self.separator) :]

    def _read_one(self, text: str) -> tuple[tuple[str, str], str] | None:
        """The call at the start of `text` and the text after it."""
        if not text.startswith(self.opening):
            return None
        try:
            value, end = json.JSONDecoder().raw_decode(text, len(self.opening))
        except ValueError:
            return None
        if not isinstance(value, dict) or not isinstance(value.get(self.name_key), str):
            return None
        arguments = value.get(self.arguments_key, {})
        if not isinstance(arguments, dict) or not text.startswith(self.closing, end):
            return None
        return (value[self.name_key], json.dumps(arguments, ensure_ascii=False)), text[end + len(self.closing) :]


def _first_object(text: str) -> int:
    stripped = text.lstrip()
    return len(text) - len(stripped) if stripped.startswith("{") else -1


FALLBACK = CallSyntax("<tool_call>\n", "\n</tool_call>", "\n")
"""The fallback's syntax."""


def tool_dicts(tools: tuple[Tool, ...]) -> list[dict[str, Any]] | None:
    return [t.as_dict() for t in tools] or None


def native_syntax(tokenizer: PreTrainedTokenizerBase, stop_texts: tuple[str, ...]) -> CallSyntax | None:
    """The template's own call syntax, learned from a probe call; None when the template ignores tools (or fails on
    them). `stop_texts`: the end-of-turn strings, where a call's closing text ends."""
    tools = tool_dicts((_PROBE_TOOL,))
    user = {"role": "user", "content": "hi"}
    try:
        prompt = jinja(tokenizer, [user], generate=True, tools=tools)
        one = _turn(tokenizer, prompt, user, _PROBE_CALLS[:1], stop_texts)
    except Exception:
        return None
    if one is None or _PROBE_TOOL.name not in prompt:
        return None
    found = _split_call(one)
    if found is None:
        return None
    opening, closing, name_key, arguments_key = found
    syntax = CallSyntax(opening, closing, "", name_key, arguments_key, parallel=False)
    try:
        two = _turn(tokenizer, prompt, user, _PROBE_CALLS, stop_texts)
    except Exception:  # Llama 3.1's template refuses several calls in a turn
        return syntax
    first = syntax.write(_PROBE_CALLS[:1])
    second = syntax.write(_PROBE_CALLS[1:])
    if two is None or not two.startswith(first) or not two.endswith(second):
        return syntax
    return CallSyntax(opening, closing, two[len(first) : len(two) - len(second)], name_key, arguments_key, True)


def _turn(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    user: dict[str, str],
    calls: tuple[ToolCall, ...],
    stop_texts: tuple[str, ...],
) -> str | None:
    """What the template writes for an assistant turn of these calls: after the generation prompt, up to the turn's
    end."""
    message = as_dicts((Message("assistant", "", tool_calls=calls),))[0]
    text = jinja(tokenizer, [user, message], tools=tool_dicts((_PROBE_TOOL,)))
    if not text.startswith(prompt):
        return None
    answer = text[len(prompt) :]
    ends = [at for s in stop_texts if s and (at := answer.find(s)) >= 0]
    return answer[: min(ends)] if ends else answer.rstrip()


def _split_call(turn: str) -> tuple[str, str, str, str] | None:
    """(opening, closing, name key, arguments key) of a turn holding the first probe call."""
    for start in (i for i, ch in enumerate(turn) if ch == "{"):
        try:
            value, end = json.JSONDecoder().raw_decode(turn, start)
        except ValueError:
            continue
        if not isinstance(value, dict) or _PROBE_TOOL.name not in value.values():
            continue
        name_key = next(k for k, v in value.items() if v == _PROBE_TOOL.name)
        arguments_key = next((k for k, v in value.items() if v == {"q": "first"}), None)
        if arguments_key is None:
            return None
        return turn[:start], turn[end:], name_key, arguments_key
    return None


def fallback_messages(messages: tuple[Message, ...], tools: tuple[Tool, ...]) -> tuple[Message, ...]:
    """Tools, calls and results as plain system, user and assistant messages (the fallback's rendering)."""
    out: list[Message] = []
    if tools:
        listed = FALLBACK_TOOLS_PROMPT.format(
            tools="\n".join(json.dumps(t.as_dict(), ensure_ascii=False) for t in tools)
        )
        if messages and messages[0].role == "system":
            out.append(Message("system", messages[0].content + "\n\n" + listed))
            messages = messages[1:]
        else:
            out.append(Message("system", listed))
    previous = None
    for message in messages:
        if message.role == "tool":
            block = RESPONSE_OPEN + message.content + RESPONSE_CLOSE
            if previous == "tool":  # consecutive results: one user turn
                out[-1] = Message("user", out[-1].content + "\n" + block)
            else:
                out.append(Message("user", block))
        elif message.tool_calls:
            calls = FALLBACK.write(message.tool_calls)
            content = message.content + "\n" + calls if message.content.strip() else calls
            out.append(Message("assistant", content, message.weight))
        else:
            out.append(message)
        previous = message.role
    return tuple(out)
