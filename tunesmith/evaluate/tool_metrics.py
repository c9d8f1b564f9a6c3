"""Scores of function calls: the right function, exact arguments, valid JSON, and per-argument accuracy.

A held-out example whose answer calls functions has as reference its calls written canonically (`calls_text`: a
JSON list of {"name", "arguments"}); an answer is read with the model's own call syntax and written the same way,
or left as the text it is when it holds no well-formed call. The model is evaluated as it writes unaided (no
grammar): a served answer is decoded under the functions' grammar and always parses.
"""

from __future__ import annotations

import json
from typing import Any

from tunesmith.data.schema import ToolCall
from tunesmith.tokenize.tools import CallSyntax


def calls_text(calls: list[tuple[str, str]] | tuple[ToolCall, ...]) -> str:
    """Calls as the canonical JSON list both sides are compared in."""
    pairs = [(c.name, c.arguments) if isinstance(c, ToolCall) else c for c in calls]
    return json.dumps([{"name": n, "arguments": json.loads(a)} for n, a in pairs], ensure_ascii=False)


def canonical_answer(text: str, syntax: CallSyntax) -> str:
    """An answer's calls as `calls_text`, or the answer itself where it makes no well-formed call."""
    read = syntax.read(text)
    return calls_text(read[1]) if read is not None and read[1] else text


def _calls(text: str) -> list[dict[str, Any]] | None:
    """The calls of a canonical text; None for an answer that made none."""
    if not text.startswith("[{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(c, dict) and "name" in c for c in value):
        return None
    return value


def _both(prediction: str, reference: str) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    return _calls(prediction), _calls(reference)


def tool_name(prediction: str, reference: str) -> float:
    """100 when the answer calls the same functions, in order, as the reference (or, where the reference calls
    none, calls none either)."""
    pred, ref = _both(prediction, reference)
    if ref is None:
        return 100.0 if pred is None else 0.0
    return 100.0 if pred is not None and [c["name"] for c in pred] == [c["name"] for c in ref] else 0.0


def tool_exact(prediction: str, reference: str) -> float:
    """100 when the answer's calls equal the reference's, functions and arguments (as JSON values)."""
    pred, ref = _both(prediction, reference)
    if ref is None:
        return 100.0 if pred is None else 0.0
    return 100.0 if pred == ref else 0.0


def tool_valid(prediction: str, reference: str) -> float:
    """100 when an answer that should call writes well-formed calls (valid JSON in the model's call syntax)."""
    pred, ref = _both(prediction, reference)
    return 100.0 if ref is None or pred is not None else 0.0


def tool_arguments(prediction: str, reference: str) -> float:
    """Share of the reference's arguments (name and value) that the answer's call of the same function has, over
    every reference call (100 for a reference that calls nothing, or a call without arguments, done right)."""
    pred, ref = _both(prediction, reference)
    if ref is None:
        return 100.0 if pred is None else 0.0
    made = {c["name"]: c.get("arguments") for c in pred or [] if isinstance(c.get("arguments"), dict)}
    wanted = [(c["name"], k, v) for c in ref for k, v in (c.get("arguments") or {}).items()]
    if not wanted:
        return tool_name(prediction, reference)
    return 100 * sum(made.get(name, {}).get(key, object()) == value for name, key, value in wanted) / len(wanted)


TOOL_METRICS = {
    "tool_exact": tool_exact,
    "tool_name": tool_name,
    "tool_valid": tool_valid,
    "tool_arguments": tool_arguments,
}
