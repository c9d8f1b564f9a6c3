"""`tunesmith train`: settings from RunConfig's fields, progress on the terminal, the result, a quick evaluation."""

from __future__ import annotations

import signal
from datetime import datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from tunesmith.cli.common import err, out, user_errors
from tunesmith.cli.evaluate import evaluate_and_print
from tunesmith.training.events import EventSink, StopFlag

Opt = typer.Option


def _on_signal(stop: StopFlag, signum: int, frame: FrameType | None) -> None:
    if stop:
        raise KeyboardInterrupt  # a second signal stops at once
    stop.request(signal.Signals(signum).name)


def _stop_on_signals() -> StopFlag:
    stop = StopFlag()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, partial(_on_signal, stop))
    return stop


def _overrides(given: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    from tunesmith.config import parse_assignment

    return {**given, **dict(parse_assignment(text) for text in assignments)}


def _sink(quiet: bool, log_json: bool) -> EventSink | None:
    from tunesmith.cli.progress import ConsoleProgress, JsonLines

    if log_json:
        return JsonLines(out)
    return None if quiet else ConsoleProgress(err)


def train(
    given: dict[str, Any],
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML file of settings; options override it.")] = None,
    out_dir: Annotated[Path | None, Opt("--out", help="Run folder (default: TUNESMITH_HOME/runs/<time>).")] = None,
    resume: Annotated[Path | None, Opt(help="Continue this run folder from its latest checkpoint.")] = None,
    force: Annotated[bool, Opt(help="Resume even though the settings or the data changed.")] = False,
    set_values: Annotated[
        list[str] | None, Opt("--set", help="Any setting as field=value (YAML), e.g. lora.targets=\\[q_proj]")
    ] = None,
    evaluate: Annotated[bool, Opt("--eval-report/--no-eval", help="Evaluate base vs tuned at the end.")] = True,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Print only the result.")] = False,
    log_json: Annotated[bool, Opt("--log-json", help="Print every event as a JSON line.")] = False,
    processes: Annotated[
        int, Opt(min=1, help="Train on N processes of this host (torchrun: gloo on CPU, one GPU each on CUDA).")
    ] = 1,
) -> None:
    """Fine-tune a model on your data: LoRA, DoRA or full; answers (sft) or plain text."""
    from tunesmith.config import build_config, merge_settings, read_config_file
    from tunesmith.training import distributed
    from tunesmith.training.runner import resume as resume_run
    from tunesmith.training.runner import train as train_run

    if processes > 1 and not distributed.started():
        _launch(processes, out_dir, resume)
    distributed.start()  # one of several ranks when torchrun started this process
    main = distributed.is_main()
    sink = _sink(quiet, log_json) if main else None
    stop = _stop_on_signals()
    with user_errors():
        overrides = _overrides(given, set_values or [])
        if resume is not None:
            result = resume_run(resume, overrides=overrides, force=force, sink=sink, stop=stop)
        else:
            settings = merge_settings(read_config_file(config) if config else {}, overrides)
            run_config = build_config(settings, str(config) if config else "command line")
            run_dir = out_dir or _new_run_dir()
            result = train_run(run_config, distributed.broadcast(run_dir), sink=sink, stop=stop)
    ranks = distributed.size()
    distributed.stop()
    if not main:  # rank 0 reports and evaluates
        raise typer.Exit(0 if result.final is not None else _stopped_code(result.reason))
    _print_summary(result, log_json, ranks)
    if evaluate:
        from tunesmith.evaluate.report import after_training

        options = after_training(result.run_dir)
        if options is not None:
            evaluate_and_print(str(result.run_dir), options, None, log_json)
        elif not log_json:
            err.print("[dim]no held-out data (under 20 examples and no --eval): not evaluated[/]")


def _launch(processes: int, out_dir: Path | None, resume: Path | None) -> None:
    """Start this same command on `processes` ranks and exit with their result."""
    import sys

    from tunesmith.cli.launch import command_args, launch

    args = command_args(sys.argv)
    run_dir = resume or out_dir
    if run_dir is None:  # one run folder for every rank, named here
        run_dir = _new_run_dir()
        args += ["--out", str(run_dir)]
    raise typer.Exit(launch(processes, args, str(run_dir)))


def _new_run_dir() -> Path:
    """TUNESMITH_HOME/runs/<time>: a run's folder when --out is not given."""
    from tunesmith import paths

    return paths.runs_dir() / datetime.now().strftime("%Y%m%d-%H%M%S")


def _stopped_code(reason: str) -> int:
    """The exit code of a run stopped by a signal: 128 + its number (SIGINT's for any other stop)."""
    return 128 + int(getattr(signal.Signals, reason, signal.SIGINT))


def _print_summary(result: Any, log_json: bool, ranks: int = 1) -> None:
    state = result.state
    if result.final is None:
        processes = f" --processes {ranks}" if ranks > 1 else ""
        err.print(
            f"stopped by {result.reason} after step {state.step}; checkpoint saved. "
            f"Continue with: tunesmith train --resume {result.run_dir}{processes}",
            soft_wrap=True,  # one line, a path never cut
        )
        raise typer.Exit(_stopped_code(result.reason))
    if log_json:
        return
    best = f"{state.best_eval_loss:.4f}" if state.best_eval_loss is not None else "-"
    how = "stopped early (no better held-out loss)" if result.reason == "early_stopping" else "done"
    err.print(
        f"{how}: {state.step} steps in {state.elapsed:.0f} s, {state.tokens:,} tokens "
        f"({state.tokens / max(state.elapsed, 1e-9):.0f} tok/s), best held-out loss {best}"
    )
    if result.kept_step != state.step:
        kept = f"final/ holds step {result.kept_step}, the lowest held-out loss ({best})"
        err.print(f"{kept}; --final last keeps the last step's weights")
    out.print(f"result: {result.final}")
