"""The prompts file of a collection: one prompt a line, read with the same rules and line numbers as `data check`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from tunesmith.data.formats import RecordError, parse_prompt
from tunesmith.data.load import read_rows
from tunesmith.data.schema import Message, as_dicts
from tunesmith.errors import DataError

PROMPT_HINT = 'write one prompt a line: a JSON string, {"prompt": "..."} or {"messages": [...]} without the answer'


@dataclass(frozen=True)
class Prompt:
    """One prompt and where it came from."""

    line: int
    """Its line in the prompts file."""
    messages: tuple[Message, ...]
    """The conversation so far; the teacher writes the next assistant turn."""

    def as_json(self) -> list[dict[str, str]]:
        return as_dicts(self.messages)


def read_prompts(source: str) -> list[Prompt]:
    """Every prompt of a JSONL/JSON/CSV/parquet file; the first bad line is a DataError naming it."""
    prompts = []
    for row in read_rows(source):
        if row.code:
            raise DataError(f"{source}:{row.line}: {row.message}", hint=PROMPT_HINT, code=row.code)
        try:
            prompts.append(Prompt(row.line, parse_prompt(row.value)))
        except RecordError as exc:
            raise DataError(f"{source}:{row.line}: {exc.message}", hint=PROMPT_HINT, code=exc.code) from None
    if not prompts:
        raise DataError(f"{source}: no prompts", hint=PROMPT_HINT, code="empty_file")
    return prompts


def prompt_key(prompt: Prompt, teacher: dict[str, object]) -> str:
    """What identifies one request: the prompt and every teacher setting that changes the answer."""
    text = json.dumps({"messages": prompt.as_json(), "teacher": teacher}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
