"""`tunesmith export` and `tunesmith serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli_common import out, user_errors

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


def serve(
    model: Annotated[str | None, Opt(help="The base model (default: the adapters' base, else the default model).")] = (
        None
    ),
    adapter: Annotated[list[str] | None, Opt(help="A LoRA run folder to serve on the base; repeat for more.")] = None,
    host: Annotated[str, Opt(help="Address to bind; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, Opt(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None, Opt(envvar="TUNESMITH_API_KEY", help="Require this key (Bearer) on every route.")
    ] = (None),
    dtype: Annotated[str, Opt(help="auto (bf16 where fast), float32 or bfloat16.")] = "auto",
    max_batch: Annotated[int, Opt(help="The most answers generated together.")] = 8,
    max_waiting: Annotated[int, Opt(help="Requests that may wait for room; more get 429 (Retry-After).")] = 64,
) -> None:
    """Serve a base model and fine-tuned runs behind an OpenAI-compatible API (chat, completions, models)."""
    import uvicorn

    from tunesmith.serve.app import create_app
    from tunesmith.serve.engine import Engine
    from tunesmith.serve.loaded import default_base, load_models

    with user_errors():
        runs = adapter or []
        models = load_models(model or default_base(runs), runs, dtype=dtype)
    for served in models.served.values():
        out.print(f"serving [bold]{served.id}[/]")
    out.print(f"OpenAI base URL: http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    engine = Engine(models, max_batch, max_waiting)
    uvicorn.run(create_app(models, engine, api_key), host=host, port=port, log_level="warning")
