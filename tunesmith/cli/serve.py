"""`tunesmith serve`: a base model and tuned runs behind an OpenAI-compatible API."""

from __future__ import annotations

from typing import Annotated

import typer

from tunesmith.cli.common import out, user_errors

Opt = typer.Option


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
