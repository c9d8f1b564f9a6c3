"""`tunesmith eval` and `tunesmith compare`: did fine-tuning help?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tunesmith.cli.common import MaxTokens, RunOrModel, err, out, user_errors

Opt = typer.Option


def evaluate_and_print(target: str, options: Any, out_dir: Path | None, log_json: bool = False) -> None:
    from tunesmith.evaluate.report import evaluate_to_folder

    if not log_json:
        err.print("[dim]evaluating base and tuned on the held-out data...[/]")
    with user_errors():
        evaluation, html = evaluate_to_folder(target, options, out_dir)
    if log_json:
        event = {"event": "evaluation", "headline": evaluation.headline(), "report": str(html)}
        out.print(json.dumps(event | {"warning": evaluation.guard_warning()}), markup=False, soft_wrap=True)
        return
    out.print(f"[bold]{escape(evaluation.headline())}[/]")
    warning = evaluation.guard_warning()
    if warning:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}")
    out.print(f"report: {html}")


def evaluate_command(
    target: RunOrModel,
    data: Annotated[str | None, Opt(help="Held-out data (default: the run's).")] = None,
    baseline: Annotated[str, Opt(help="base (the run's base model), none, or another model or run.")] = "base",
    metric: Annotated[str, Opt(help="Comma-separated metrics, the first deciding who wins (default: by task).")] = "",
    limit: Annotated[int | None, Opt("-n", "--limit", help="At most this many examples.")] = None,
    max_tokens: Annotated[str, Opt("--max-tokens", help="The longest answer, or auto.")] = "auto",
    guard: Annotated[bool, Opt(help="Score general questions before and after, to catch forgetting.")] = True,
    dtype: Annotated[str, Opt(help="auto, float32 (batching never changes an answer) or bfloat16.")] = "auto",
    out_dir: Annotated[Path | None, Opt("--out", help="Report folder (default: RUN/eval).")] = None,
    grader: Annotated[
        list[str] | None,
        Opt(help="A grader file (OpenAI grader JSON, or .py with grade(sample, item)); repeatable. The first decides."),
    ] = None,
) -> None:
    """Did fine-tuning help? Held-out loss, answers and task metrics (or grades) of the tuned model and a baseline."""
    from tunesmith.evaluate.evaluation import EvalOptions

    with user_errors():
        options = EvalOptions(
            data=data,
            baseline=baseline,
            metrics=tuple(m.strip() for m in metric.split(",") if m.strip()),
            limit=limit,
            max_new_tokens="auto" if max_tokens == "auto" else int(max_tokens),
            guard=guard,
            dtype=dtype,
            graders=tuple(grader or ()),
        )
    evaluate_and_print(target, options, out_dir)


def compare(
    run: Annotated[str, typer.Argument(help="A run folder.")],
    data: Annotated[str | None, Opt(help="Held-out conversations (default: the run's last evaluation).")] = None,
    n: Annotated[int, Opt("-n", help="How many examples.")] = 3,
    max_tokens: MaxTokens = 256,
) -> None:
    """Base and tuned answers to held-out prompts, side by side with the reference answer."""
    from tunesmith.engine.sampling import Sampling
    from tunesmith.errors import DataError
    from tunesmith.evaluate.compare import Sample, from_samples_file, side_by_side
    from tunesmith.runs import RunFolder

    samples_file = RunFolder(Path(run)).samples
    with user_errors():
        if data is None and samples_file.is_file():
            samples: list[Sample] = from_samples_file(samples_file, n)
        elif data is None:
            raise DataError(
                f"{run} has no evaluation yet", hint=f"pass --data eval.jsonl, or run: tunesmith eval {run}"
            )
        else:
            samples = side_by_side(run, data, n, Sampling(max_tokens=max_tokens))
    for i, sample in enumerate(samples, start=1):
        table = Table(title=f"held-out example {i}", show_lines=True, expand=True)
        for header in ("reference (expert)", "base model", "fine-tuned"):
            table.add_column(header, ratio=1, overflow="fold")
        table.add_row(sample.reference, sample.base, sample.tuned)
        out.print(f"[dim]{escape(sample.prompt[-1].content[:300])}...[/]")
        out.print(table)
