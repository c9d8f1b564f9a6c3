"""The input formats: each turns one JSON object into a record or says exactly what is wrong with it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tunesmith.data.schema import ROLES, Conversation, Message, PreferencePair, Record, TextDoc

CHAT_MESSAGE_KEYS = ("role", "content", "name", "weight")
SHAREGPT_TURN_KEYS = ("from", "value", "weight")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


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


def _chat_message(index: int, raw: Any) -> Message:
    where = f"message {index + 1}"
    raw = _turn_object(raw, where, CHAT_MESSAGE_KEYS)
    role = raw["role"]
    if role not in ROLES:
        raise RecordError("unrecognized_role", f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
    content = raw["content"]
    if not isinstance(content, str) or not content.strip():
        raise RecordError("missing_content", f"{where} ({role}) has no text content")
    weight = raw.get("weight")
    if weight is not None and (role != "assistant" or weight not in (0, 1) or isinstance(weight, bool)):
        raise RecordError("invalid_weight", f"{where}: weight must be 0 or 1 and only on assistant messages")
    return Message(role=role, content=content, weight=weight)


def _messages(raw: Any, field: str, missing_code: str) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise RecordError(missing_code, f"field {field!r} must be a non-empty list of messages")
    return tuple(_chat_message(i, m) for i, m in enumerate(raw))


def _needs_assistant(messages: tuple[Message, ...]) -> Conversation:
    if not any(m.role == "assistant" for m in messages):
        raise RecordError("example_missing_assistant_message", "no assistant message to learn from")
    return Conversation(messages=messages)


def parse_chat(obj: Any) -> Record:
    obj = _require_dict(obj)
    if "messages" not in obj:
        raise RecordError("missing_messages_list", "no 'messages' list")
    return _needs_assistant(_messages(obj["messages"], "messages", "missing_messages_list"))


def _turns(obj: dict[str, Any], key: str, role: str) -> tuple[Message, ...]:
    """A prompt or completion given as a string or as a list of messages."""
    value = obj.get(key)
    if isinstance(value, list):
        return _messages(value, key, "missing_field")
    return (Message(role=role, content=_string(obj, key)),)  # type: ignore[arg-type]


def _no_training(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    return tuple(Message(m.role, m.content, 0) if m.role == "assistant" else m for m in messages)


def parse_prompt_completion(obj: Any) -> Record:
    obj = _require_dict(obj)
    prompt = _no_training(_turns(obj, "prompt", "user"))
    completion = _turns(obj, "completion", "assistant")
    if any(m.role != "assistant" for m in completion):
        raise RecordError("unrecognized_role", "completion messages must all have role 'assistant'")
    return Conversation(messages=prompt + completion)


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
    return _chat_message(
        index, {"role": role, "content": raw["value"], **({"weight": raw["weight"]} if "weight" in raw else {})}
    )


def parse_sharegpt(obj: Any) -> Record:
    obj = _require_dict(obj)
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RecordError("missing_conversations_list", "field 'conversations' must be a non-empty list")
    messages = tuple(_sharegpt_message(i, t) for i, t in enumerate(turns))
    system = _string(obj, "system", required=False)
    if system.strip() and messages[0].role != "system":
        messages = (Message("system", system), *messages)
    return _needs_assistant(messages)


def parse_text(obj: Any) -> Record:
    return TextDoc(text=_string(_require_dict(obj), "text"))


def _answer(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if isinstance(value, list):
        messages = _messages(value, key, "missing_field")
        if len(messages) != 1 or messages[0].role != "assistant":
            raise RecordError("unrecognized_role", f"field {key!r} must hold exactly one assistant message")
        return messages[0].content
    return _string(obj, key)


def _preference_prompt(obj: dict[str, Any], key: str) -> tuple[Message, ...]:
    messages = _turns(obj, key, "user")
    if messages[-1].role == "assistant":
        raise RecordError("unrecognized_role", f"field {key!r} must end with a user message, not an assistant one")
    return messages


def parse_preference(obj: Any) -> Record:
    obj = _require_dict(obj)
    prompt = _preference_prompt(obj, "prompt")
    return PreferencePair(prompt=prompt, chosen=_answer(obj, "chosen"), rejected=_answer(obj, "rejected"))


def parse_openai_preference(obj: Any) -> Record:
    obj = _require_dict(obj)
    source = obj.get("input")
    if not isinstance(source, dict) or "messages" not in source:
        raise RecordError("missing_messages_list", "field 'input' must be an object with a 'messages' list")
    prompt = _messages(source["messages"], "input.messages", "missing_messages_list")
    if prompt[-1].role == "assistant":
        raise RecordError("unrecognized_role", "input.messages must end with a user message")
    return PreferencePair(
        prompt=prompt, chosen=_answer(obj, "preferred_output"), rejected=_answer(obj, "non_preferred_output")
    )


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


def parse_prompt(obj: Any) -> tuple[Message, ...]:
    """A prompt for a teacher: a string, {"prompt": string} or {"messages": [...]} that ends before the answer."""
    if isinstance(obj, str):
        if not obj.strip():
            raise RecordError("missing_content", "the prompt is empty")
        return (Message("user", obj),)
    obj = _require_dict(obj)
    if "messages" in obj:
        messages = _messages(obj["messages"], "messages", "missing_messages_list")
        if messages[-1].role == "assistant":
            raise RecordError("prompt_has_answer", "the last message is the assistant's: a prompt ends before it")
        return messages
    if "prompt" in obj:
        return (Message("user", _string(obj, "prompt")),)
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
