"""OpenAI's grader templates: `{{ item.field.sub }}` and `{{ sample.output_text }}` replaced by the value at that
path (objects and lists as JSON, a path that leads nowhere as empty text)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PLACE = re.compile(r"\{\{\s*(item|sample)((?:\.[A-Za-z0-9_\-]+|\[\d+\])*)\s*\}\}")
STEP = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Sample:
    """What the graded model wrote: the `sample` namespace."""

    output_text: str
    """The answer's text."""
    output_tools: list[dict[str, Any]] = field(default_factory=list)
    """The answer's function calls, as OpenAI writes tool_calls."""

    @property
    def output_json(self) -> Any:
        """The answer parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.output_text)
        except (json.JSONDecodeError, RecursionError):
            return None

    def namespace(self) -> dict[str, Any]:
        return {
            "output_text": self.output_text,
            "output_json": self.output_json,
            "output_tools": self.output_tools,
            "choices": [{"message": {"role": "assistant", "content": self.output_text}}],
        }


def lookup(namespace: Any, path: str) -> Any:
    """The value at a JSON path like `.a.b[0]`, or None."""
    value = namespace
    for key, index in STEP.findall(path):
        if key and isinstance(value, Mapping):
            value = value.get(key)
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        elif key.isdigit() and isinstance(value, list) and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def render(template: str, sample: Sample, item: Mapping[str, Any]) -> str:
    """The template with every {{ namespace.path }} replaced."""
    spaces = {"item": item, "sample": sample.namespace()}
    return PLACE.sub(lambda m: _text(lookup(spaces[m.group(1)], m.group(2))), template)
