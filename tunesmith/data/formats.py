"""The input formats: each turns one JSON object into a record or says exactly what is wrong with it."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from tunesmith.data.schema import ROLES, Conversation, Message, PreferencePair, Record, TextDoc, Tool, ToolCall
from tunesmith.data.tools import ToolDataError, check_calls, parse_function_call, parse_tool_calls, parse_tools

CHAT_MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal")
SHAREGPT_TURN_KEYS = ("from", "value", "weight")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
}
"""ShareGPT speakers; function_call and observation are LLaMA-Factory's convention for a call (its value the call's
JSON, {"name", "arguments"}, or a list of them) and the tool's result, with the functions in a `tools` field (a JSON
list of function objects, as text or as a list)."""


class RecordError(Exception):
    """One line's problem: an error code (OpenAI's where it has one) and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Format:
    """An input format, recognised by the keys of its objects."""

    name: str
    """Short name shown in reports and accepted by `--format`."""
    keys: tuple[str, ...]
    """Keys every object of this format has."""
    parse: Callable[[Any], Record]
    """Object -> record, raising RecordError."""


def not_an_object(value: Any) -> RecordError:
    """The error of a line whose value is not a JSON object."""
    return RecordError("data_type", f"expected a JSON object, got {type(value).__name__}")


def _require_dict(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise not_an_object(obj)
    return obj


def _string(obj: dict[str, Any], key: str, *, required: bool = True) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise RecordError("missing_field", f"missing field {key!r}")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise RecordError("field_type", f"field {key!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RecordError("missing_content", f"field {key!r} is empty")
    return value


def _turn_object(raw: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """A message as an object holding its first two keys and no key outside `keys`."""
    if not isinstance(raw, dict):
        raise RecordError("data_type", f"{where} must be an object with {keys[0]} and {keys[1]}")
    for key in keys[:2]:
        if key not in raw:
            raise RecordError("message_missing_key", f"{where} has no {key!r}")
    unknown = [k for k in raw if k not in keys]
    if unknown:
        raise RecordError(
            "message_unrecognized_key", f"{where} has unrecognized key {unknown[0]!r}; expected only {', '.join(keys)}"
        )
    return raw


@contextmanager
def _tool_errors() -> Iterator[None]:
    try:
        yield
    except ToolDataError as exc:
        raise RecordError(exc.code, exc.message) from None


def _calls(raw: dict[str, Any], where: str, index: int) -> tuple[ToolCall, ...]:
    with _tool_errors():
        if raw.get("tool_calls") is not None:
            return parse_tool_calls(raw["tool_calls"], where)
        if raw.get("function_call") is not None:
            return parse_function_call(raw["function_call"], where, f"call_{index + 1}")
    return ()


def _chat_message(index: int, raw: Any) -> Message:
    where = f"message {index + 1}"
    if not isinstance(raw, dict) or "role" not in raw:
        _turn_object(raw, where, CHAT_MESSAGE_KEYS)
    role = "tool" if raw["role"] == "function" else raw["role"]  # the legacy function role answers a function_call
    if role not in ROLES:
        raise RecordError("unrecognized_role", f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
    calls = _calls(raw, where, index) if role == "assistant" else ()
    if calls and raw.get("content") is None:
        raw = {**raw, "content": ""}
    raw = _turn_object(raw, where, CHAT_MESSAGE_KEYS)
    content = raw["content"]
    if not isinstance(content, str) or not (content.strip() or calls):
        raise RecordError("missing_content", f"{where} ({role}) has no text content")
    weight = raw.get("weight")
    if weight is not None and (role != "assistant" or weight not in (0, 1) or isinstance(weight, bool)):
        raise RecordError("invalid_weight", f"{where}: weight must be 0 or 1 and only on assistant messages")
    answered = raw.get("tool_call_id") if role == "tool" else None
    if answered is not None and not isinstance(answered, str):
        raise RecordError("field_type", f"{where}: tool_call_id must be a string")
    return Message(role=role, content=content, weight=weight, tool_calls=calls, tool_call_id=answered)


def _messages(raw: Any, field: str, missing_code: str) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise RecordError(missing_code, f"field {field!r} must be a non-empty list of messages")
    return tuple(_chat_message(i, m) for i, m in enumerate(raw))


def _tools(obj: dict[str, Any], messages: tuple[Message, ...]) -> tuple[Tool, ...]:
    """The example's functions, its calls checked against them."""
    with _tool_errors():
        tools = parse_tools(obj.get("tools"), obj.get("functions"))
        check_calls(messages, tools)
    if obj.get("parallel_tool_calls") is False and any(len(m.tool_calls) > 1 for m in messages):
        raise RecordError("parallel_tool_calls", "parallel_tool_calls is false but a message makes several calls")
    return tools


def _needs_assistant(messages: tuple[Message, ...], tools: tuple[Tool, ...] = ()) -> Conversation:
    if not any(m.role == "assistant" for m in messages):
        raise RecordError("example_missing_assistant_message", "no assistant message to learn from")
    return Conversation(messages=messages, tools=tools)


def parse_chat(obj: Any) -> Record:
    obj = _require_dict(obj)
    if "messages" not in obj:
        raise RecordError("missing_messages_list", "no 'messages' list")
    messages = _messages(obj["messages"], "messages", "missing_messages_list")
    return _needs_assistant(messages, _tools(obj, messages))


def _turns(obj: dict[str, Any], key: str, role: str) -> tuple[Message, ...]:
    """A prompt or completion given as a string or as a list of messages."""
    value = obj.get(key)
    if isinstance(value, list):
        return _messages(value, key, "missing_field")
    return (Message(role=role, content=_string(obj, key)),)  # type: ignore[arg-type]


def _no_training(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    return tuple(replace(m, weight=0) if m.role == "assistant" else m for m in messages)


def parse_prompt_completion(obj: Any) -> Record:
    obj = _require_dict(obj)
    prompt = _no_training(_turns(obj, "prompt", "user"))
    completion = _turns(obj, "completion", "assistant")
    if any(m.role not in ("assistant", "tool") for m in completion):
        raise RecordError("unrecognized_role", "completion messages must have role 'assistant' (or 'tool')")
    return Conversation(messages=prompt + completion, tools=_tools(obj, prompt + completion))


def parse_alpaca(obj: Any) -> Record:
    obj = _require_dict(obj)
    instruction = _string(obj, "instruction")
    extra = _string(obj, "input", required=False)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    system = _string(obj, "system", required=False)
    head = (Message(role="system", content=system),) if system.strip() else ()
    return Conversation(messages=(*head, Message("user", user), Message("assistant", _string(obj, "output"))))


def _sharegpt_message(index: int, raw: Any) -> Message:
    where = f"turn {index + 1}"
    raw = _turn_object(raw, where, SHAREGPT_TURN_KEYS)
    role = SHAREGPT_ROLES.get(raw["from"])
    if role is None:
        raise RecordError(
            "unrecognized_role", f"{where} is from {raw['from']!r}; expected one of {', '.join(SHAREGPT_ROLES)}"
        )
    message: dict[str, Any] = {"role": role, "content": raw["value"]}
    if raw["from"] == "function_call":
        message = {"role": role, "content": None, "tool_calls": _sharegpt_calls(raw["value"], where, index)}
    return _chat_message(index, message | ({"weight": raw["weight"]} if "weight" in raw else {}))


def _sharegpt_calls(value: Any, where: str, index: int) -> list[dict[str, Any]]:
    """LLaMA-Factory's function_call value (a call's JSON, or a list of calls) as OpenAI's tool_calls."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise RecordError("invalid_tool_arguments", f"{where}: the function call is not valid JSON ({exc})") from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(c, dict) for c in calls):
        raise RecordError("invalid_tool_calls", f'{where}: a function call must be {{"name", "arguments"}}')
    return [
        {"id": f"call_{index + 1}_{k}", "type": "function", "function": {"name": c.get("name"), **_args(c)}}
        for k, c in enumerate(calls)
    ]


def _args(call: dict[str, Any]) -> dict[str, Any]:
    return {"arguments": call["arguments"]} if "arguments" in call else {}


def parse_sharegpt(obj: Any) -> Record:
    obj = _require_dict(obj)
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RecordError("missing_conversations_list", "field 'conversations' must be a non-empty list")
    messages = tuple(_sharegpt_message(i, t) for i, t in enumerate(turns))
    system = _string(obj, "system", required=False)
    if system.strip() and messages[0].role != "system":
        messages = (Message("system", system), *messages)
    tools = obj.get("tools")
    if isinstance(tools, str) and tools.strip():
        try:
            tools = json.loads(tools)
        except ValueError as exc:
            raise RecordError("invalid_tools", f"field 'tools' is not valid JSON ({exc})") from None
    functions = tools if isinstance(tools, list) and tools and "function" not in tools[0] else None
    return _needs_assistant(
        messages, _tools({"tools": None if functions else tools or None, "functions": functions}, messages)
    )


def parse_text(obj: Any) -> Record:
    return TextDoc(text=_string(_require_dict(obj), "text"))


def _answer(obj: dict[str, Any], key: str) -> Message:
    value = obj.get(key)
    if isinstance(value, list):
        messages = _messages(value, key, "missing_field")
        if len(messages) != 1 or messages[0].role != "assistant":
            raise RecordError("unrecognized_role", f"field {key!r} must hold exactly one assistant message")
        return messages[0]
    return Message("assistant", _string(obj, key))


def _pair(obj: dict[str, Any], prompt: tuple[Message, ...], keys: tuple[str, str]) -> PreferencePair:
    """A pair whose answers may call functions (`tools` beside them, checked as a conversation's)."""
    chosen, rejected = _answer(obj, keys[0]), _answer(obj, keys[1])
    tools = _tools(obj, (*prompt, chosen))
    with _tool_errors():
        check_calls((*prompt, rejected), tools)
    return PreferencePair(prompt, chosen.content, rejected.content, tools, chosen.tool_calls, rejected.tool_calls)


def _preference_prompt(obj: dict[str, Any], key: str) -> tuple[Message, ...]:
    messages = _turns(obj, key, "user")
    if messages[-1].role == "assistant":
        raise RecordError("unrecognized_role", f"field {key!r} must end with a user message, not an assistant one")
    return messages


def parse_preference(obj: Any) -> Record:
    obj = _require_dict(obj)
    return _pair(obj, _preference_prompt(obj, "prompt"), ("chosen", "rejected"))


def parse_openai_preference(obj: Any) -> Record:
    obj = _require_dict(obj)
    source = obj.get("input")
    if not isinstance(source, dict) or "messages" not in source:
        raise RecordError("missing_messages_list", "field 'input' must be an object with a 'messages' list")
    prompt = _messages(source["messages"], "input.messages", "missing_messages_list")
    if prompt[-1].role == "assistant":
        raise RecordError("unrecognized_role", "input.messages must end with a user message")
    tools = {k: source[k] for k in ("tools", "functions", "parallel_tool_calls") if k in source}
    return _pair(obj | tools, prompt, ("preferred_output", "non_preferred_output"))


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("chat", ("messages",), parse_chat),
        Format("preference", ("prompt", "chosen", "rejected"), parse_preference),
        Format("openai-preference", ("input", "preferred_output", "non_preferred_output"), parse_openai_preference),
        Format("prompt-completion", ("prompt", "completion"), parse_prompt_completion),
        Format("alpaca", ("instruction", "output"), parse_alpaca),
        Format("sharegpt", ("conversations",), parse_sharegpt),
        Format("text", ("text",), parse_text),
    )
}


PAIR_FORMATS = ("preference", "openai-preference")
"""The formats of preference pairs."""


def parse_prompt(obj: Any) -> Conversation:
    """A prompt for a teacher: a string, {"prompt": string} or {"messages": [...]} (with the `tools` it may call)
    that ends before the answer."""
    if isinstance(obj, str):
        if not obj.strip():
            raise RecordError("missing_content", "the prompt is empty")
        return Conversation((Message("user", obj),))
    obj = _require_dict(obj)
    if "messages" in obj:
        messages = _messages(obj["messages"], "messages", "missing_messages_list")
        if messages[-1].role == "assistant":
            raise RecordError("prompt_has_answer", "the last message is the assistant's: a prompt ends before it")
        return Conversation(messages, _tools(obj, messages))
    if "prompt" in obj:
        return Conversation((Message("user", _string(obj, "prompt")),))
    raise RecordError("unrecognized_prompt", 'expected a string, {"prompt": "..."} or {"messages": [...]}')


def auto_objective(format_name: str) -> str:
    """What a file of this format trains with unless told: dpo for pairs, text for plain text, sft otherwise."""
    return "dpo" if format_name in PAIR_FORMATS else "text" if format_name == "text" else "sft"


def detect(objects: Iterable[Any]) -> Format | None:
    """The format most objects match by their keys; None when no object matches any format."""
    votes: Counter[str] = Counter()
    for obj in objects:
        if isinstance(obj, dict):
            match = next((f for f in FORMATS.values() if all(k in obj for k in f.keys)), None)
            if match is not None:
                votes[match.name] += 1
    if not votes:
        return None
    return FORMATS[votes.most_common(1)[0][0]]
