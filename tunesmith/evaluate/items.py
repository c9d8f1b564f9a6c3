"""What an evaluation runs on: held-out prompts with reference answers, and the records for the held-out loss."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.graded import read_graded
from tunesmith.data.schema import Message, PreferencePair, Record, TextDoc, Tool, ToolCall
from tunesmith.data.validate import data_error, read_dataset
from tunesmith.errors import DataError
from tunesmith.evaluate.tool_metrics import calls_text
from tunesmith.runs import RunFolder
from tunesmith.tokenize.encode import conversation_of
from tunesmith.training.stages import stages_of

GENERAL_QUESTIONS = Path(__file__).with_name("general.jsonl")
"""The forgetting guard: everyday questions with one- or two-word answers, written for tunesmith."""


@dataclass(frozen=True)
class Item:
    """One held-out prompt and the answer it should get."""

    line: int
    """Line of the example in its file."""
    prompt: tuple[Message, ...]
    """The conversation up to the last answer."""
    reference: str
    """The last answer in the data (calls written as tool_metrics.calls_text)."""
    tools: tuple[Tool, ...] = ()
    """The functions the prompt offers."""
    calls: tuple[ToolCall, ...] = ()
    """The calls the last answer makes."""


@dataclass(frozen=True)
class HeldOut:
    """The held-out data of an evaluation."""

    source: str
    """The file it came from."""
    records: list[tuple[int, Record]]
    """(line, record): for the held-out loss."""
    items: list[Item]
    """Prompts with references (plain texts: the first half, and the words that follow it)."""
    kind: str
    """chat; text for continued pre-training data; pairs for preference pairs (their reference is the chosen
    answer); tools for conversations with function calls (scored as calls)."""
    cut: bool = False
    """Only the first `limit` examples of the data are used."""
    raw: list[dict[str, Any]] | None = None
    """Each item's data line, as graders read it ({{item.*}}); None unless graders score the answers."""


def items_of(records: list[tuple[int, Record]]) -> list[Item]:
    """Every conversation that ends with an assistant answer becomes a prompt and its reference."""
    items = []
    for line, record in records:
        conversation = conversation_of(record)
        if conversation is not None and conversation.messages[-1].role == "assistant":
            last = conversation.messages[-1]
            reference = calls_text(last.tool_calls) if last.tool_calls else last.content
            items.append(Item(line, conversation.messages[:-1], reference, conversation.tools, last.tool_calls))
    return items


CONTINUATION_WORDS = 100
"""Words of a held-out text that its continuation is compared with."""


def text_items(records: list[tuple[int, Record]]) -> list[Item]:
    """Plain texts: the first half is the prompt, the next words the reference continuation."""
    items = []
    for line, record in records:
        if not isinstance(record, TextDoc):
            continue
        starts = [m.start() for m in re.finditer(r"\S+", record.text)]
        if len(starts) < 8:
            continue
        cut = min(len(starts) // 2, 256)
        end = starts[cut + CONTINUATION_WORDS] if cut + CONTINUATION_WORDS < len(starts) else len(record.text)
        prefix, continuation = record.text[: starts[cut]].rstrip(), record.text[starts[cut] : end].strip()
        items.append(Item(line, (Message("user", prefix),), continuation))
    return items


def _held_out_of_run(run: RunFolder) -> tuple[str, set[int] | None]:
    """The eval data of a run, the windows of plain text it held out, or its training data and the lines it held
    out."""
    stages = stages_of(run)
    if stages:  # the last stage's held-out data: the task the run ends on
        return _held_out_of_run(RunFolder(stages[-1]))
    config = run.read_config()
    if config.get("eval_data"):
        return str(config["eval_data"]), None
    if run.held_out_texts.is_file():
        return str(run.held_out_texts), None
    report = run.read_data_report()
    held = report.get("held_out", {})
    if not held.get("lines"):
        raise DataError(f"{run.root}: the run has no held-out data", hint="pass --data with held-out examples")
    return str(held["source"]), set(held["lines"])


def has_held_out(run: RunFolder) -> bool:
    """The run has held-out data of its own to evaluate on (eval data, or examples it held out)."""
    try:
        _held_out_of_run(run)
    except DataError:
        return False
    return True


def _kind(records: list[tuple[int, Record]]) -> str:
    for kind, cls in (("text", TextDoc), ("pairs", PreferencePair)):
        if records and all(isinstance(r, cls) for _, r in records):
            return kind
    return "chat"


def load_held_out(run: RunFolder | None, data: str | None, limit: int | None) -> HeldOut:
    """--data when given, else the run's eval data or the lines it held out; at most `limit` examples."""
    if data is None and run is None:
        raise DataError("no held-out data: a model that is not a run needs --data", hint="e.g. --data eval.jsonl")
    source, lines = (data, None) if data is not None else _held_out_of_run(run)  # type: ignore[arg-type]
    dataset = read_dataset(source)
    if dataset.errors:
        raise data_error(dataset.errors, len(dataset.errors), source)
    chosen = [(line, r) for line, r in dataset.records if lines is None or line in lines]
    records = chosen[:limit]
    kind = _kind(records)
    items = text_items(records) if kind == "text" else items_of(records)
    if kind == "chat" and any(i.calls for i in items):
        kind = "tools"
    if kind != "text" and not items:
        raise DataError(f"{source}: no conversation ends with an assistant answer to compare against")
    return HeldOut(source, records, items, kind, cut=len(records) < len(chosen))


def load_graded(run: RunFolder | None, data: str | None, limit: int | None) -> HeldOut:
    """Held-out prompts for graders, each with its data line (the {{item.*}} namespace): --data, else the run's eval
    data or the lines it held out. Lines need no answer (reinforcement data); a last assistant message is the
    reference the text metrics use when every line has one."""
    if data is None and run is None:
        raise DataError("no held-out data: a model that is not a run needs --data", hint="e.g. --data eval.jsonl")
    source, lines = (data, None) if data is not None else _held_out_of_run(run)  # type: ignore[arg-type]
    graded, total = read_graded(source, lines, limit)
    items = [Item(g.line, g.messages, g.reference, g.tools) for g in graded]
    kind = "chat" if all(i.reference for i in items) else "prompts"
    return HeldOut(source, [], items, kind, cut=len(items) < total, raw=[g.value for g in graded])


def general_questions() -> list[Item]:
    return items_of(read_dataset(str(GENERAL_QUESTIONS)).records)
