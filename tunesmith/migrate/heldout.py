"""Which prompts the old model answers: the validation file's, else a seeded held-out share of the training file
(kept out of the training a `--run` does), or the user's own prompts file.

A preference line (OpenAI's input / preferred_output) is held out as its input and its preferred answer, the
reference; every other line goes as it is (a conversation ending with the answer, or a prompt).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import paths
from tunesmith.data.load import read_rows
from tunesmith.errors import DataError
from tunesmith.migrate.source import JobFolder

SHARE = 0.1
"""The share of the training file held out when a job has no validation file."""


@dataclass(frozen=True)
class Split:
    """The data of a migrated job: what trains, what the old and the new model answer."""

    train: Path
    """The training data of a --run."""
    held_out: Path | None
    """The held-out data of a --run (None: the run holds out its own share)."""
    prompts: Path
    """What the old model is asked: conversations whose last message is the reference answer, or prompts."""


def _as_conversation(value: Any) -> Any:
    """A preference line as its prompt and its preferred answer (the reference); any other line as it is."""
    if isinstance(value, dict) and isinstance(value.get("input"), dict) and value.get("preferred_output"):
        given = value["input"]
        return {k: v for k, v in given.items() if k in ("messages", "tools")} | {
            "messages": list(given.get("messages") or []) + list(value["preferred_output"])[:1]
        }
    return value


def _write_lines(path: Path, values: list[Any]) -> None:
    paths.write_text_atomic(path, "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values))


def _held_out_share(folder: JobFolder, seed: int, limit: int) -> None:
    """Split the training file once into train-split.jsonl and held-out.jsonl (a pure function of the seed)."""
    if folder.held_out.is_file() and folder.train_split.is_file():
        return
    rows = list(read_rows(str(folder.training)))
    bad = next((r for r in rows if r.code), None)
    if bad is not None:
        raise DataError(f"{folder.training}:{bad.line}: {bad.message}", code=bad.code)
    if len(rows) < 2:
        raise DataError(f"{folder.training}: {len(rows)} lines: too few to hold any out", code="too_few_examples")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    count = min(limit, max(1, round(SHARE * len(rows))))
    chosen = set(order[:count])
    _write_lines(folder.held_out, [_as_conversation(rows[i].value) for i in sorted(chosen)])
    _write_lines(folder.train_split, [rows[i].value for i in range(len(rows)) if i not in chosen])


def split(folder: JobFolder, prompts: Path | None, seed: int, limit: int) -> Split:
    """The data of a saved job: from its validation file, a held-out share of its training file, or `prompts`."""
    if not folder.training.is_file():
        raise DataError(f"{folder.root.name}: its training file is gone from the source", code="missing_file")
    validation = folder.validation if folder.validation.is_file() else None
    if prompts is not None:
        return Split(folder.training, validation, prompts)
    if validation is not None:
        converted = folder.root / "validation-prompts.jsonl"
        if not converted.is_file():
            _write_lines(converted, [_as_conversation(r.value) for r in read_rows(str(validation)) if not r.code])
        return Split(folder.training, validation, converted)
    _held_out_share(folder, seed, limit)
    return Split(folder.train_split, folder.held_out, folder.held_out)
