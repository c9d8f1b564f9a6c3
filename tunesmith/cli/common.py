"""What every CLI command shares: consoles, options, and the one-line error handler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tunesmith.cli.settings import doc
from tunesmith.errors import ConfigError, TunesmithError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

# options of other commands that mean what a training setting means: its docstring is their help
ModelOption = Annotated[str, typer.Option("--model", "-m", help=doc("model"))]
FormatOption = Annotated[str, typer.Option(help=doc("format"))]
ColumnsOption = Annotated[str, typer.Option(help="Map fields to CSV/table columns: prompt=question,completion=answer")]
MaxLengthOption = Annotated[int, typer.Option("--max-length", help=doc("max_length"))]
SuperviseOption = Annotated[str, typer.Option(help=doc("supervise"))]
MethodOption = Annotated[str, typer.Option(help=doc("method"))]
QuantizeOption = Annotated[str, typer.Option(help=doc("quantize"))]
RunOrModel = Annotated[str, typer.Argument(help="A run folder, or a model: short name, hub id, folder, .gguf.")]
MaxTokens = Annotated[int, typer.Option("--max-tokens", help="The longest answer, in tokens.")]


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
