"""`tunesmith serve`: a base model and tuned runs behind an OpenAI-compatible API."""

from __future__ import annotations

import os
import subprocess
import sys
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
    worker: Annotated[bool, Opt(help="Start the jobs worker beside the server (one per TUNESMITH_HOME).")] = True,
    max_upload: Annotated[int, Opt(help="Largest file upload (POST /v1/files), in MB; more gets 413.")] = 512,
    requests_per_minute: Annotated[
        int | None, Opt(min=1, help="Requests a key may make per minute; more get 429 (a key's own limit wins).")
    ] = None,
    jobs_per_project: Annotated[
        int | None, Opt(min=1, help="Jobs a project may have running or waiting at once; more get 429.")
    ] = None,
) -> None:
    """Serve a base model and fine-tuned runs behind an OpenAI-compatible API (chat, completions, models), with
    OpenAI's files and fine-tuning jobs API."""
    import uvicorn

    from tunesmith.server.app import ServerSettings, build_server

    with user_errors():
        settings = ServerSettings(
            model,
            tuple(adapter or ()),
            api_key,
            dtype,
            max_batch,
            max_waiting,
            max_upload,
            requests_per_minute,
            jobs_per_project,
        )
        server = build_server(settings)
    for served in server.models.served.values():
        out.print(f"serving [bold]{served.id}[/]")
    out.print(f"OpenAI base URL: http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    child = _start_worker() if worker else None
    uvicorn.run(server.app, host=host, port=port, log_level="warning")
    # uvicorn ends the process with the signal that stopped it; the worker then finishes its job and exits
    if child is not None:
        child.terminate()


def _start_worker() -> subprocess.Popen[bytes]:
    """`tunesmith jobs worker` as a process of its own: training never runs in the server's process."""
    command = [sys.executable, "-m", "tunesmith", "jobs", "worker", "--parent", str(os.getpid())]
    return subprocess.Popen(command)
