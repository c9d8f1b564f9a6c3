"""`tunesmith distill collect`: a teacher's answers to a prompts file, as a chat data set."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tunesmith.cli.common import err, out, user_errors
from tunesmith.distill import collect as collecting
from tunesmith.errors import ConfigError
from tunesmith.runs import RunFolder

distill_app = typer.Typer(help="Teach a small model a large model's job.", no_args_is_help=True)

PRICE_HELP = "Price of the teacher per 1M {} tokens, for the cost line (e.g. 2.5)."


class _Bar:
    """A rich progress bar over the prompts still to ask."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("collect", total=None, info="")

    def __call__(self, state: collecting.Progress) -> None:
        seconds = max(1e-9, time.monotonic() - state.started)
        info = (
            f"done {state.done}  failed {state.failed}  tokens in {state.tokens_in:,} out {state.tokens_out:,}  "
            f"{(state.done + state.failed) / seconds:.1f} req/s"
        )
        self.progress.update(
            self.task, total=state.total - state.already, completed=state.done + state.failed, info=info
        )


def dollars(tokens_in: int, tokens_out: int, price_in: float | None, price_out: float | None) -> float:
    """What the tokens cost at prices per 1M tokens (a price not given counts as 0)."""
    return (tokens_in * (price_in or 0.0) + tokens_out * (price_out or 0.0)) / 1e6


def _cost(summary: collecting.CollectSummary, price_in: float | None, price_out: float | None) -> str:
    if price_in is None and price_out is None:
        return "cost: pass --price-in and --price-out (per 1M tokens) to see it"
    spent = dollars(summary.tokens_in, summary.tokens_out, price_in, price_out)
    per_1000 = 1000 * spent / max(1, summary.answered)
    return f"cost: ${spent:.4f} this run, ${per_1000:.4f} per 1,000 requests"


def _print_summary(summary: collecting.CollectSummary, price_in: float | None, price_out: float | None) -> None:
    out.print(
        f"{summary.answered} answered now, {summary.already} already there, {len(summary.failed)} failed, "
        f"of {summary.total} prompts in {summary.seconds:.1f} s -> {summary.answers}"
    )
    if summary.latency_p50 is not None:
        out.print(
            f"teacher tokens: {summary.tokens_in:,} in, {summary.tokens_out:,} out; latency p50 "
            f"{summary.latency_p50:.2f} s, p95 {summary.latency_p95:.2f} s"
        )
    out.print(_cost(summary, price_in, price_out))
    for failure in summary.failed[:5]:
        err.print(f"[red]failed:[/] line {failure['line']}: {failure['error']}", soft_wrap=True, markup=True)


@distill_app.command("collect")
def collect(
    teacher: Annotated[str, typer.Option(help="The teacher's OpenAI-compatible base URL, e.g. http://host:8000/v1")],
    teacher_model: Annotated[str, typer.Option(help="The teacher model's name at that endpoint.")],
    prompts: Annotated[str, typer.Option(help="Prompts: JSONL of strings, {prompt} or {messages} without answer.")],
    out_file: Annotated[Path, typer.Option("--out", help="The answers file (a chat data set); appended to.")],
    api_key: Annotated[str | None, typer.Option(help="API key; default: $OPENAI_API_KEY.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 4,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature of the teacher.")] = 0.0,
    max_tokens: Annotated[int, typer.Option(min=1, help="The longest answer, in tokens.")] = 512,
    system: Annotated[str | None, typer.Option(help="A system message for the teacher only.")] = None,
    logprobs: Annotated[int, typer.Option(min=0, max=20, help="Top log-probs to keep per answer token.")] = 0,
    max_requests_per_minute: Annotated[float | None, typer.Option(help="Rate limit across requests.")] = None,
    retries: Annotated[int, typer.Option(min=0, help="Retries of a request (backoff, Retry-After).")] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = 120.0,
    price_in: Annotated[float | None, typer.Option(help=PRICE_HELP.format("prompt"))] = None,
    price_out: Annotated[float | None, typer.Option(help=PRICE_HELP.format("answer"))] = None,
) -> None:
    """Ask a teacher model to answer every prompt; rerun the same command to finish an interrupted collection."""
    with user_errors():
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ConfigError("no API key", hint="pass --api-key or set OPENAI_API_KEY (any text for a local server)")
        settings = collecting.CollectSettings(
            teacher=collecting.TeacherSettings(teacher, teacher_model, temperature, max_tokens, system, logprobs),
            api_key=key,
            concurrency=concurrency,
            max_requests_per_minute=max_requests_per_minute,
            retries=retries,
            timeout=timeout,
        )
        columns = (TextColumn("[bold]collect"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"))
        with Progress(*columns, TextColumn("ETA"), TimeRemainingColumn(), console=err) as bar:
            summary = collecting.collect(prompts, out_file, settings, _Bar(bar))
    _print_summary(summary, price_in, price_out)
    if summary.failed:
        failed = len(summary.failed)
        err.print(f"{failed} prompts failed (kept in {summary.errors}): run the same command to retry them")
        raise typer.Exit(1)


def _print_report(report: dict, folder: Path) -> None:
    from tunesmith.distill.report_html import NAMES, headline

    out.print(f"[bold]{headline(report)}[/]")
    vs_teacher, money = report["quality"]["vs_teacher"], report["economics"]
    for role in ("tuned", "base"):
        scores = vs_teacher[role]
        out.print(
            f"{NAMES[role]} vs teacher: ROUGE-L {scores['rougeL']:.1f}, chrF {scores['chrf']:.1f}, "
            f"exact match {scores['exact_match']:.1f}"
        )
    if report["quality"]["wins"]:
        wins = report["quality"]["wins"]
        out.print(f"tuned student vs teacher on the references: {wins['win']} wins, {wins['tie']} ties, "
                  f"{wins['loss']} losses")  # fmt: skip
    for role, e in money.items():
        cost = "-" if e["cost_per_1000"] is None else f"${e['cost_per_1000']:.4f}"
        speed = "-" if e["tokens_per_s"] is None else f"{e['tokens_per_s']:.1f}"
        out.print(
            f"{NAMES[role]}: latency p50 {e['latency_p50_s']:.2f} s, p95 {e['latency_p95_s']:.2f} s, "
            f"{speed} tokens/s, {cost} per 1,000 requests"
        )
    out.print(f"report: {folder / 'report.html'}")


@distill_app.command("report")
def report(
    run: Annotated[str, typer.Argument(help="The student's run folder.")],
    teacher: Annotated[str, typer.Option(help="The teacher's OpenAI-compatible base URL.")],
    teacher_model: Annotated[str, typer.Option(help="The teacher model's name at that endpoint.")],
    data: Annotated[str, typer.Option(help="Held-out conversations (last message: the reference) or prompts.")],
    api_key: Annotated[str | None, typer.Option(help="The teacher's API key; default: $OPENAI_API_KEY.")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature, teacher and students.")] = 0.0,
    max_tokens: Annotated[int, typer.Option(min=1, help="The longest answer, in tokens.")] = 512,
    system: Annotated[str | None, typer.Option(help="A system message for the teacher only.")] = None,
    price_in: Annotated[float | None, typer.Option(help=PRICE_HELP.format("prompt"))] = None,
    price_out: Annotated[float | None, typer.Option(help=PRICE_HELP.format("answer"))] = None,
    hourly_cost: Annotated[float | None, typer.Option(help="What the student's machine costs per hour.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once, for every model.")] = 1,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N held-out prompts.")] = None,
    dtype: Annotated[str, typer.Option(help="The students' serving dtype: auto, float32 or bfloat16.")] = "auto",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder; default RUN/distill-report.")] = None,
) -> None:
    """Student vs teacher on held-out prompts: quality, latency, tokens/s and cost per 1,000 requests."""
    from tunesmith.distill.report import ReportSettings, distill_report

    with user_errors():
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ConfigError("no API key", hint="pass --api-key or set OPENAI_API_KEY (any text for a local server)")
        folder = out_dir or RunFolder(Path(run)).distill_report
        settings = ReportSettings(
            run=run,
            data=data,
            teacher=collecting.TeacherSettings(teacher, teacher_model, temperature, max_tokens, system),
            api_key=key,
            out=folder,
            price_in=price_in,
            price_out=price_out,
            hourly_cost=hourly_cost,
            concurrency=concurrency,
            limit=limit,
            dtype=dtype,
        )
        result = distill_report(settings, lambda text: err.print(f"[dim]{text}[/]"))
    _print_report(result, folder)
