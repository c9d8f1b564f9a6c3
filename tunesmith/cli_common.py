"""What every CLI command shares: consoles, options, and the one-line error handler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tunesmith.errors import ConfigError, TunesmithError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Short name, hub id, local folder or .gguf file.")]
FormatOption = Annotated[str, typer.Option(help="Input format, or auto to detect it per file.")]
ColumnsOption = Annotated[str, typer.Option(help="Map fields to CSV/table columns: prompt=question,completion=answer")]
MaxLengthOption = Annotated[int, typer.Option("--max-length", help="Longest example in tokens.")]
SuperviseOption = Annotated[str, typer.Option(help="Which turns are learned: assistant, last or all.")]


class OneLineLog(logging.Handler):
    """Library log records on stderr, one line each ("warning: ..."), never wrapped: they are read by scripts too."""

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        colour = {"warning": "yellow", "error": "red"}.get(level, "dim")
        err.print(f"[{colour}]{level}:[/] {escape(self.format(record))}", soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Our errors become one line on stderr and exit code 2, never a traceback."""
    try:
        yield
    except TunesmithError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


def parse_columns(text: str) -> dict[str, str]:
    """'prompt=question,completion=answer' -> {'prompt': 'question', 'completion': 'answer'}."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise ConfigError(f"--columns: {part!r} is not field=column", hint="e.g. --columns prompt=question")
        mapping[field.strip()] = column.strip()
    return mapping
