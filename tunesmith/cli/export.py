"""`tunesmith export`: adapter, merged safetensors, or GGUF with an Ollama Modelfile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.common import out, user_errors

Opt = typer.Option


def export(
    run: Annotated[str, typer.Argument(help="A run folder.")],
    format: Annotated[
        str, Opt("--format", "-f", help="adapter, merged (safetensors) or gguf (+ Ollama Modelfile).")
    ] = ("merged"),
    dtype: Annotated[str, Opt(help="Weights of merged and gguf exports: f32 or f16 (bf16 for merged).")] = "f32",
    out_dir: Annotated[Path | None, Opt("--out", help="Folder to write (default: RUN/export/FORMAT).")] = None,
) -> None:
    """Export a run: its adapter, merged weights any transformers code loads, or GGUF for llama.cpp and Ollama."""
    from tunesmith.export.writer import ExportRequest, export

    with user_errors():
        folder = export(ExportRequest(run, format, dtype, out_dir))  # type: ignore[arg-type]
    out.print(f"[green]exported[/] {format} to {folder}")
    if format == "gguf":
        out.print(f"run it with Ollama: cd {folder} && ollama create my-model -f Modelfile && ollama run my-model")
