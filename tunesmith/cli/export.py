"""`tunesmith export`: adapter, merged safetensors, or GGUF with an Ollama Modelfile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.common import out, user_errors

Opt = typer.Option


def export(
    run: Annotated[str, typer.Argument(help="A run folder.")],
    format: Annotated[
        str,
        Opt(
            "--format",
            "-f",
            help="adapter, merged (safetensors), gguf (+ Ollama Modelfile) or gguf-lora (the adapter for llama.cpp's "
            "--lora).",
        ),
    ] = ("merged"),
    dtype: Annotated[
        str,
        Opt(
            help="Weights: f32, f16 (bf16 for merged); for gguf also llama.cpp's block types q8_0, q5_1, q5_0, q4_1, "
            "q4_0 (norms f32, the output head q8_0), and with llama-cpp-python q6_k, q5_k_m, q4_k_m."
        ),
    ] = "f32",
    out_dir: Annotated[Path | None, Opt("--out", help="Folder to write (default: RUN/export/FORMAT).")] = None,
    measure: Annotated[
        bool,
        Opt(help="gguf: the held-out perplexity of the file and of f16, by llama.cpp (where llama-cpp-python is)."),
    ] = True,
) -> None:
    """Export a run: its adapter, merged weights any transformers code loads, or GGUF for llama.cpp and Ollama."""
    from tunesmith.export.writer import ExportRequest, export

    with user_errors():
        folder = export(ExportRequest(run, format, dtype, out_dir, measure))  # type: ignore[arg-type]
    out.print(f"[green]exported[/] {format} to {folder}")
    if format == "gguf":
        _show_gguf(folder)
    elif format == "adapter":
        _show_adapter(folder)
    elif format == "gguf-lora":
        out.print(f"run it with llama.cpp: llama-server -m BASE.gguf --lora {folder}/adapter.gguf")


def _show_adapter(folder: Path) -> None:
    """How vLLM serves the adapter, or what in it vLLM refuses."""
    from tunesmith.export.vllm import adapter_modules, largest_rank, serve_command, vllm_problems

    config = json.loads((folder / "adapter_config.json").read_text())
    problems = vllm_problems(config, adapter_modules(folder))
    if problems:
        out.print(f"[yellow]vLLM cannot serve it:[/] {'; '.join(problems)}")
        return
    base = config.get("base_model_name_or_path") or "BASE"
    command = serve_command(base, folder.parent.parent.name, str(folder), largest_rank(config))
    out.print(f"serve it with vLLM: {command}")


def _show_gguf(folder: Path) -> None:
    """Each file's size and, where llama.cpp measured it, its held-out perplexity."""
    from tunesmith.export.quality import QUALITY_FILE

    quality = folder / QUALITY_FILE
    if quality.is_file():
        for row in json.loads(quality.read_text()):
            out.print(f"  {row['dtype']:>5}: {row['bytes'] / 1e6:8.1f} MB, held-out perplexity {row['perplexity']:.3f}")
    else:
        out.print(f"  model.gguf: {(folder / 'model.gguf').stat().st_size / 1e6:.1f} MB")
    out.print(f"run it with Ollama: cd {folder} && ollama create my-model -f Modelfile && ollama run my-model")
