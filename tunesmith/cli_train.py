"""`tunesmith train`, `generate`, `chat` and `compare`: parse, call the library, print."""

from __future__ import annotations

import json
import signal
from datetime import datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tunesmith.cli_common import err, out, user_errors
from tunesmith.train.events import EventSink, StopFlag

Opt = typer.Option

# command-line option -> config field; None means "not given", so the config file's value stands
FLAG_FIELDS = {
    "data": "data",
    "eval_data": "eval_data",
    "model": "model",
    "method": "method",
    "objective": "objective",
    "format": "format",
    "supervise": "supervise",
    "max_length": "max_length",
    "epochs": "epochs",
    "max_steps": "max_steps",
    "lr": "learning_rate",
    "schedule": "schedule",
    "warmup_steps": "warmup_steps",
    "batch_tokens": "batch_tokens",
    "grad_accum": "grad_accum",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "lora_rank": "lora.rank",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "eval_every": "eval_every",
    "save_every": "save_every",
    "keep_checkpoints": "keep_checkpoints",
    "early_stopping": "early_stopping",
    "seed": "seed",
    "device": "device",
    "precision": "precision",
    "threads": "threads",
}


def _on_signal(stop: StopFlag, signum: int, frame: FrameType | None) -> None:
    if stop:
        raise KeyboardInterrupt  # a second signal stops at once
    stop.request(signal.Signals(signum).name)


def _stop_on_signals() -> StopFlag:
    stop = StopFlag()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, partial(_on_signal, stop))
    return stop


def _overrides(flags: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    from tunesmith.config import parse_assignment

    values = {FLAG_FIELDS[name]: value for name, value in flags.items() if value is not None}
    values.update(parse_assignment(text) for text in assignments)
    return values


def _sink(quiet: bool, log_json: bool) -> EventSink | None:
    from tunesmith.cli_progress import ConsoleProgress, JsonLines

    if log_json:
        return JsonLines(out)
    return None if quiet else ConsoleProgress(err)


def _auto_int(text: str | None) -> int | str | None:
    return text if text in (None, "auto") else int(text)  # type: ignore[arg-type]


def train(
    data: Annotated[str | None, Opt(help="Training data: file, folder or hub data set id.")] = None,
    eval_data: Annotated[str | None, Opt("--eval", help="Held-out data (default: 10% of the training data).")] = None,
    model: Annotated[str | None, Opt("--model", "-m", help="Short name, hub id, local folder or .gguf.")] = None,
    method: Annotated[str | None, Opt(help="lora, dora or full.")] = None,
    objective: Annotated[str | None, Opt(help="sft (learn the answers) or text (continued pre-training).")] = None,
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML file of settings; options override it.")] = None,
    out_dir: Annotated[Path | None, Opt("--out", help="Run folder (default: TUNESMITH_HOME/runs/<time>).")] = None,
    resume: Annotated[Path | None, Opt(help="Continue this run folder from its latest checkpoint.")] = None,
    force: Annotated[bool, Opt(help="Resume even though the settings or the data changed.")] = False,
    format: Annotated[str | None, Opt(help="Input format, or auto.")] = None,
    supervise: Annotated[str | None, Opt(help="assistant, last or all.")] = None,
    max_length: Annotated[int | None, Opt(help="Longest example in tokens.")] = None,
    epochs: Annotated[str | None, Opt(help="Passes over the data, or auto.")] = None,
    max_steps: Annotated[int | None, Opt(help="Stop after this many optimizer steps.")] = None,
    lr: Annotated[float | None, Opt("--lr", help="Peak learning rate (default: by method).")] = None,
    schedule: Annotated[str | None, Opt(help="cosine, linear or constant.")] = None,
    warmup_steps: Annotated[str | None, Opt(help="Warm-up steps, or auto (5%).")] = None,
    batch_tokens: Annotated[str | None, Opt(help="Tokens per micro-batch, padding included, or auto.")] = None,
    grad_accum: Annotated[int | None, Opt(help="Micro-batches per optimizer step.")] = None,
    weight_decay: Annotated[float | None, Opt(help="AdamW weight decay.")] = None,
    max_grad_norm: Annotated[float | None, Opt(help="Clip gradients to this norm.")] = None,
    lora_rank: Annotated[int | None, Opt(help="Adapter rank.")] = None,
    lora_alpha: Annotated[float | None, Opt(help="Adapter alpha (scale alpha/rank).")] = None,
    lora_dropout: Annotated[float | None, Opt(help="Adapter dropout.")] = None,
    eval_every: Annotated[str | None, Opt(help="Steps between held-out evaluations, or auto.")] = None,
    save_every: Annotated[str | None, Opt(help="Steps between checkpoints, or auto.")] = None,
    keep_checkpoints: Annotated[int | None, Opt(help="How many checkpoints to keep.")] = None,
    early_stopping: Annotated[int | None, Opt(help="Stop after N evaluations without improvement.")] = None,
    seed: Annotated[int | None, Opt(help="Random seed.")] = None,
    device: Annotated[str | None, Opt(help="cpu, cuda or auto.")] = None,
    precision: Annotated[str | None, Opt(help="auto, fp32 or bf16.")] = None,
    threads: Annotated[str | None, Opt(help="CPU threads, or auto.")] = None,
    set_values: Annotated[
        list[str] | None, Opt("--set", help="Any setting as field=value, e.g. lora.targets=[q_proj]")
    ] = None,
    evaluate: Annotated[bool, Opt("--eval-report/--no-eval", help="Evaluate base vs tuned at the end.")] = True,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Print only the result.")] = False,
    log_json: Annotated[bool, Opt("--log-json", help="Print every event as a JSON line.")] = False,
) -> None:
    """Fine-tune a model on your data: LoRA, DoRA or full; answers (sft) or plain text."""
    from tunesmith import paths
    from tunesmith.config import build_config, merge, read_config_file
    from tunesmith.train.runner import resume as resume_run
    from tunesmith.train.runner import train as train_run

    flags = {
        "data": data, "eval_data": eval_data, "model": model, "method": method, "objective": objective,
        "format": format, "supervise": supervise, "max_length": max_length, "epochs": _auto_int(epochs),
        "max_steps": max_steps, "lr": lr, "schedule": schedule, "warmup_steps": _auto_int(warmup_steps),
        "batch_tokens": _auto_int(batch_tokens), "grad_accum": grad_accum, "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm, "lora_rank": lora_rank, "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout, "eval_every": _auto_int(eval_every), "save_every": _auto_int(save_every),
        "keep_checkpoints": keep_checkpoints, "early_stopping": early_stopping, "seed": seed, "device": device,
        "precision": precision, "threads": _auto_int(threads),
    }  # fmt: skip
    sink = _sink(quiet, log_json)
    stop = _stop_on_signals()
    with user_errors():
        overrides = _overrides(flags, set_values or [])
        if resume is not None:
            result = resume_run(resume, overrides=overrides, force=force, sink=sink, stop=stop)
        else:
            settings = merge(read_config_file(config) if config else {}, overrides)
            run_config = build_config(settings, str(config) if config else "command line")
            run_dir = out_dir or paths.runs_dir() / datetime.now().strftime("%Y%m%d-%H%M%S")
            result = train_run(run_config, run_dir, sink=sink, stop=stop)
    _print_summary(result, log_json)
    if evaluate:
        from tunesmith.evaluate.evaluation import EvalOptions
        from tunesmith.evaluate.items import has_held_out
        from tunesmith.runs import RunFolder

        if has_held_out(RunFolder(result.run_dir)):
            _evaluate_and_print(str(result.run_dir), EvalOptions(limit=QUICK_EVAL_EXAMPLES), None, log_json)
        elif not log_json:
            err.print("[dim]no held-out data (under 20 examples and no --eval): not evaluated[/]")


def _print_summary(result: Any, log_json: bool) -> None:
    state = result.state
    if result.final is None:
        err.print(
            f"stopped by {result.reason} after step {state.step}; checkpoint saved. "
            f"Continue with: tunesmith train --resume {result.run_dir}"
        )
        raise typer.Exit(128 + int(getattr(signal.Signals, result.reason, signal.SIGINT)))
    if log_json:
        return
    best = f"{state.best_eval_loss:.4f}" if state.best_eval_loss is not None else "-"
    how = "stopped early (no better held-out loss)" if result.reason == "early_stopping" else "done"
    err.print(
        f"{how}: {state.step} steps in {state.elapsed:.0f} s, {state.tokens:,} tokens "
        f"({state.tokens / max(state.elapsed, 1e-9):.0f} tok/s), best held-out loss {best}"
    )
    out.print(f"result: {result.final}")


QUICK_EVAL_EXAMPLES = 50


def _evaluate_and_print(target: str, options: Any, out_dir: Path | None, log_json: bool = False) -> None:
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


RunOrModel = Annotated[str, typer.Argument(help="A run folder, or a model: short name, hub id, folder, .gguf.")]
MaxTokens = Annotated[int, Opt("--max-tokens", help="The longest answer, in tokens.")]
Temperature = Annotated[float, Opt(help="0 answers greedily; higher varies more.")]


def _conversation(system: str | None, prompt: str) -> tuple[Any, ...]:
    from tunesmith.data.schema import Message

    return (*([Message("system", system)] if system else []), Message("user", prompt))


def generate(
    model: Annotated[str, Opt("--model", "-m", help="A run folder, or a model name, folder or .gguf.")],
    prompt: Annotated[str, Opt(help="The user message.")],
    system: Annotated[str | None, Opt(help="A system message.")] = None,
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.0,
) -> None:
    """Answer one prompt with a model or a run's result, under its chat template."""
    from tunesmith.evaluate.generate import Sampling, load_generator

    with user_errors():
        generator = load_generator(model)
        sampling = Sampling(max_new_tokens=max_tokens, temperature=temperature)
        for piece in generator.stream(_conversation(system, prompt), sampling):
            out.print(piece, end="", markup=False, highlight=False)
    out.print()


def chat(
    model: RunOrModel,
    system: Annotated[str | None, Opt(help="A system message.")] = None,
    max_tokens: MaxTokens = 512,
    temperature: Temperature = 0.0,
) -> None:
    """Talk to a model or a run's result; answers stream as they are made. /reset starts over, /exit ends."""
    from tunesmith.data.schema import Message
    from tunesmith.evaluate.generate import Sampling, load_generator

    with user_errors():
        generator = load_generator(model)
    sampling = Sampling(max_new_tokens=max_tokens, temperature=temperature)
    history: list[Message] = [Message("system", system)] if system else []
    err.print("[dim]/reset starts over, /exit or Ctrl-D ends[/]")
    while True:
        try:
            text = out.input("[bold cyan]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if text == "/exit":
            break
        if text == "/reset":
            history = history[:1] if system else []
            continue
        if not text:
            continue
        history.append(Message("user", text))
        pieces: list[str] = []
        for piece in generator.stream(history, sampling):
            pieces.append(piece)
            out.print(piece, end="", markup=False, highlight=False)
        out.print()
        history.append(Message("assistant", "".join(pieces).strip()))


def evaluate_command(
    target: Annotated[str, typer.Argument(help="A run folder, or a model: short name, hub id, folder, .gguf.")],
    data: Annotated[str | None, Opt(help="Held-out data (default: the run's).")] = None,
    baseline: Annotated[str, Opt(help="base (the run's base model), none, or another model or run.")] = "base",
    metric: Annotated[str, Opt(help="Comma-separated metrics, the first deciding who wins (default: by task).")] = "",
    limit: Annotated[int | None, Opt("-n", "--limit", help="At most this many examples.")] = None,
    max_tokens: Annotated[str, Opt("--max-tokens", help="The longest answer, or auto.")] = "auto",
    guard: Annotated[bool, Opt(help="Score general questions before and after, to catch forgetting.")] = True,
    dtype: Annotated[str, Opt(help="auto, float32 (batching never changes an answer) or bfloat16.")] = "auto",
    out_dir: Annotated[Path | None, Opt("--out", help="Report folder (default: RUN/eval).")] = None,
) -> None:
    """Did fine-tuning help? Held-out loss, answers and task metrics of the tuned model and a baseline."""
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
        )
    _evaluate_and_print(target, options, out_dir)


def compare(
    run: Annotated[str, typer.Argument(help="A run folder.")],
    data: Annotated[str | None, Opt(help="Held-out conversations (default: the run's last evaluation).")] = None,
    n: Annotated[int, Opt("-n", help="How many examples.")] = 3,
    max_tokens: MaxTokens = 256,
) -> None:
    """Base and tuned answers to held-out prompts, side by side with the reference answer."""
    from tunesmith.errors import DataError
    from tunesmith.evaluate.compare import Sample, from_samples_file, side_by_side
    from tunesmith.evaluate.generate import Sampling
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
            samples = side_by_side(run, data, n, Sampling(max_new_tokens=max_tokens))
    for i, sample in enumerate(samples, start=1):
        table = Table(title=f"held-out example {i}", show_lines=True, expand=True)
        for header in ("reference (expert)", "base model", "fine-tuned"):
            table.add_column(header, ratio=1, overflow="fold")
        table.add_row(sample.reference, sample.base, sample.tuned)
        out.print(f"[dim]{escape(sample.prompt[-1].content[:300])}...[/]")
        out.print(table)
