"""`tunesmith migrate`: move fine-tuning jobs, their data and their models' behaviour from an OpenAI-compatible
source (OpenAI itself, another tunesmith) to this machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.common import err, out, user_errors
from tunesmith.errors import ConfigError

Opt = typer.Option


def _verdict(entry: dict) -> str:
    line = f"{entry['id']}: {entry['status']}"
    if entry.get("answered") is not None:
        line += f", {entry['answered']}/{entry.get('prompts')} answers recorded"
    if entry.get("agreement_rougeL") is not None:
        line += f", agreement ROUGE-L {entry['agreement_rougeL']:.1f} (base {entry['base_agreement_rougeL']:.1f})"
        if entry.get("wins"):
            wins = entry["wins"]
            line += f", vs the old model on the references {wins['win']}/{wins['tie']}/{wins['loss']} (w/t/l)"
    if entry.get("reason"):
        line += f" - {entry['reason']}"
    return line


def migrate(
    source: Annotated[str, Opt("--from", help="The source's OpenAI base URL, e.g. https://api.openai.com/v1.")],
    api_key: Annotated[str | None, Opt(help="The source's API key; default: $OPENAI_API_KEY.")] = None,
    jobs: Annotated[
        list[str] | None, Opt("--job", help="Only this job (repeat for more); default: every succeeded one.")
    ] = None,
    prompts: Annotated[
        Path | None, Opt(help="Prompts the old models answer, instead of each job's held-out data.")
    ] = None,
    model: Annotated[
        str | None,
        Opt("--model", "-m", help="Base model trained here; default: the job's if known here, else the default."),
    ] = None,
    out_dir: Annotated[Path, Opt("--out", help="Where each job's folder and migration.json go.")] = Path("migration"),
    run: Annotated[bool, Opt("--run", help="Train each recorded job here and compare it with the old model.")] = False,
    max_prompts: Annotated[int, Opt(min=1, help="Held-out prompts each old model answers, at most.")] = 100,
    max_tokens: Annotated[int, Opt(min=1, help="The longest recorded answer, in tokens.")] = 512,
    concurrency: Annotated[int, Opt(min=1, help="Requests to the source in flight at once.")] = 4,
    max_requests_per_minute: Annotated[float | None, Opt(help="Rate limit across requests.")] = None,
    price_in: Annotated[float | None, Opt(help="The source's price per 1M prompt tokens, for the cost line.")] = None,
    price_out: Annotated[float | None, Opt(help="The source's price per 1M answer tokens, for the cost line.")] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Print only the result.")] = False,
) -> None:
    """Save a source's jobs (files, events, checkpoints), record its fine-tuned models' answers, and with --run train
    each here and compare; run the same command again to continue a stopped migration."""
    from tunesmith.cli.distill import dollars
    from tunesmith.cli.train import _sink
    from tunesmith.migrate.migration import MigrateSettings
    from tunesmith.migrate.migration import migrate as run_migration
    from tunesmith.migrate.source import SourceSettings

    with user_errors():
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ConfigError("no API key", hint="pass --api-key or set OPENAI_API_KEY (any text for a local server)")
        settings = MigrateSettings(
            SourceSettings(source.rstrip("/"), key),
            out_dir,
            tuple(jobs or ()),
            prompts,
            model,
            run,
            max_prompts,
            max_tokens,
            concurrency,
            max_requests_per_minute,
        )
        stage = (lambda _: None) if quiet else (lambda text: err.print(f"[dim]{text}[/]", soft_wrap=True))
        result = run_migration(settings, stage, _sink(quiet, False))
    tokens_in = sum(e.get("tokens_in", 0) for e in result["jobs"])
    tokens_out = sum(e.get("tokens_out", 0) for e in result["jobs"])
    for entry in result["jobs"]:
        out.print(_verdict(entry), soft_wrap=True)
    cost = ""
    if price_in is not None or price_out is not None:
        cost = f", ${dollars(tokens_in, tokens_out, price_in, price_out):.4f}"
    out.print(
        f"source tokens this run: {tokens_in:,} in, {tokens_out:,} out{cost}; state: {out_dir / 'migration.json'}"
    )
    if any(e["status"] == "failed" for e in result["jobs"]):
        raise typer.Exit(1)
