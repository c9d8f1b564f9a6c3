"""How the CLI draws reports and examples with rich (the library itself never prints)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from transformers import PreTrainedTokenizerBase

from tunesmith.check import CheckReport
from tunesmith.data.validate import Problem
from tunesmith.models.load import cached_models
from tunesmith.models.sources import EMBEDDED
from tunesmith.tokenize.encode import Example
from tunesmith.tokenize.marks import marks

STAT_LABELS = {
    "format": "format",
    "examples": "examples",
    "rows": "rows trained",
    "tokens": "tokens",
    "supervised_tokens": "supervised tokens",
    "length_p10": "length p10",
    "length_p50": "length p50",
    "length_p90": "length p90",
    "length_max": "length max",
    "truncated": "truncated",
    "left_out": "left out",
}


def _problems(console: Console, title: str, style: str, problems: list[Problem]) -> None:
    if not problems:
        return
    table = Table(title=f"{title} ({len(problems)})", title_style=style, title_justify="left")
    for column in ("where", "code", "message"):
        table.add_column(column, overflow="fold")
    for p in problems:
        table.add_row(f"{p.file}:{p.line}" if p.line else p.file, p.code, p.message)
    console.print(table)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _memory_line(memory: dict[str, Any]) -> str:
    """Whether the run fits the device, with the settings that make it fit."""
    if not memory.get("planned", True):
        return f"Memory: not planned for this model's architecture ({memory['device']}, {memory['precision']})"
    settings = (
        f"{memory['batch_tokens']:,} batch tokens, {memory['precision']}, activation checkpointing "
        f"{'on' if memory['activation_checkpointing'] else 'off'}, quantize {memory['quantize']}"
    )
    free = "" if memory["available_gib"] is None else f" of {memory['available_gib']} GiB free"
    if memory["fits"]:
        return f"Memory: fits on {memory['device']}: about {memory['needed_gib']} GiB{free} ({settings})"
    return (
        f"[bold red]Memory: does not fit[/] on {memory['device']}: about {memory['needed_gib']} GiB{free} even with "
        f"{settings}; try --quantize 4bit on a CUDA GPU, a smaller --max-length, or a smaller model"
    )


def print_check_report(console: Console, report: CheckReport) -> None:
    """Errors, warnings, then statistics per data set and the training estimate."""
    _problems(console, "Errors", "bold red", report.errors)
    _problems(console, "Warnings", "bold yellow", report.warnings)
    sets = [name for name in ("train", "eval") if name in report.stats]
    table = Table(title="Statistics (tokens under the model's tokenizer and chat template)", title_justify="left")
    table.add_column("")
    for name in sets:
        table.add_column(f"{name}: {report.stats[name]['file']}", justify="right", overflow="fold")
    for key, label in STAT_LABELS.items():
        table.add_row(label, *(str(report.stats[name][key]) for name in sets))
    console.print(table)
    training = report.stats["training"]
    line = f"Training: {training['epochs']} epochs (auto), {training['tokens']:,} tokens"
    if "estimated_seconds" in training:
        line += (
            f", about {_duration(training['estimated_seconds'])} on this machine "
            f"at {training['tokens_per_second']:,.0f} tokens/s"
        )
    console.print(line)
    if "memory" in training:
        console.print(_memory_line(training["memory"]))
    advice = training.get("advice")
    if advice:
        console.print(f"Suggested: --objective {advice['objective']} --method {advice['method']}")
        for reason in advice["reasons"]:
            console.print(f"  {reason}")
    for choice in training.get("plan", []):
        console.print(f"  auto: {choice}")
    verdict = (
        "[bold green]OK[/]: ready to train"
        if report.ok
        else f"[bold red]{report.error_count:,} errors[/]: fix them first"
    )
    console.print(verdict)


def print_example(console: Console, source: str, example: Example, tokenizer: PreTrainedTokenizerBase) -> None:
    """One example with trained text highlighted and masked text dim."""
    text = Text()
    for mark in marks(example, tokenizer):
        text.append(mark.text, style="bold black on green" if mark.trained else "dim")
    console.rule(f"{source}:{example.line}  {len(example.input_ids)} tokens, {example.supervised} trained")
    console.print(text)
    console.print(Text.assemble(("trained", "bold black on green"), "  ", ("masked", "dim")))


def print_models(console: Console) -> None:
    """Embedded models, then converted ones in the cache."""
    table = Table(title="Models", title_justify="left")
    for column in ("name", "kind", "where", "about"):
        table.add_column(column, overflow="fold")
    cached = {p.name: p for p in cached_models()}
    for name, model in EMBEDDED.items():
        where = str(cached.pop(name)) if name in cached else "not converted yet (first use converts it)"
        table.add_row(name, "embedded (default)", where, model.description)
    for name, path in cached.items():
        table.add_row(name, "converted GGUF", str(path), "")
    console.print(table)
    console.print("Also accepted by --model: any hub id (org/name), a local model folder, a .gguf file.")


def print_mix(console: Console, rows: list[dict[str, Any]]) -> None:
    """A mix's sources and their share of each epoch."""
    table = Table(title="The mix: each epoch of training draws", title_justify="left")
    for column in ("source", "examples", "per epoch", "tokens per epoch", "token share %"):
        table.add_column(column, justify="left" if column == "source" else "right", overflow="fold")
    for row in rows:
        cells = (row["examples"], row["examples_per_epoch"], f"{row['tokens_per_epoch']:,}", row["token_share"])
        table.add_row(row["source"], *(str(c) for c in cells))
    console.print(table)
