"""Write an evaluation out: report.json (everything), samples.jsonl (every answer) and report.html."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from tunesmith import paths
from tunesmith.config import build_config, read_config_file
from tunesmith.data.schema import as_dicts
from tunesmith.errors import ConfigError
from tunesmith.evaluate.evaluation import EvalOptions, Evaluation, ModelResult, evaluate
from tunesmith.evaluate.metrics import corpus_style
from tunesmith.evaluate.pairs import preference_records
from tunesmith.runs import REPORT_FILES, RunFolder


def _pair_columns(evaluation: Evaluation) -> dict[int, dict[str, Any]]:
    """Per line of a preference pair: its rejected answer and each model's log-prob margin (chosen - rejected)."""
    columns: dict[int, dict[str, Any]] = {
        line: {"rejected": pair.rejected} for line, pair in preference_records(evaluation.held_out.records)
    }
    for name, result in (("tuned", evaluation.tuned), ("baseline", evaluation.baseline)):
        if result is not None and result.pairs is not None:
            for line, margin in zip(result.pairs.lines, result.pairs.margins):
                columns[line][f"{name}_margin"] = margin
    return columns


def samples(evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per held-out example: prompt, reference, both answers, their scores and the winner (and for a
    preference pair its rejected answer and each model's log-prob margin)."""
    pairs = _pair_columns(evaluation)
    rows = []
    for k, item in enumerate(evaluation.held_out.items):
        row: dict[str, Any] = {
            "line": item.line,
            "prompt": as_dicts(item.prompt),
            "reference": item.reference,
            "tuned": evaluation.tuned.answers[k].text,
            "tuned_scores": {m: evaluation.tuned.scores[m][k] for m in evaluation.metrics},
            "tuned_stopped": evaluation.tuned.answers[k].stopped,
        }
        if evaluation.tuned.grades:
            row["tuned_grades"] = {name: values[k] for name, values in evaluation.tuned.grades.items()}
        if evaluation.baseline is not None and evaluation.baseline.grades:
            row["baseline_grades"] = {name: values[k] for name, values in evaluation.baseline.grades.items()}
        if evaluation.baseline is not None:
            row["baseline"] = evaluation.baseline.answers[k].text
            row["baseline_scores"] = {m: evaluation.baseline.scores[m][k] for m in evaluation.metrics}
            row["winner"] = evaluation.winners[k]
        rows.append(row | pairs.get(item.line, {}))
    return rows


def _summary(evaluation: Evaluation, result: ModelResult) -> dict[str, Any]:
    """A model's numbers, with the style of all its answers against all the references when it answered."""
    summary = result.summary()
    if result.answers:
        references = [item.reference for item in evaluation.held_out.items]
        summary["corpus_style"] = corpus_style([a.text for a in result.answers], references)
    return summary


def report_dict(evaluation: Evaluation) -> dict[str, Any]:
    """The machine-readable report."""
    winners = evaluation.winners
    return {
        "created": evaluation.created,
        "target": evaluation.target,
        "data": evaluation.held_out.source,
        "kind": evaluation.held_out.kind,
        "examples": len(evaluation.held_out.items) or len(evaluation.held_out.records),
        "metrics": evaluation.metrics,
        "primary_metric": evaluation.primary,
        "headline": evaluation.headline(),
        "tuned": _summary(evaluation, evaluation.tuned),
        "baseline": _summary(evaluation, evaluation.baseline) if evaluation.baseline else None,
        "stages": [_summary(evaluation, result) for result in evaluation.stages],
        "comparison": {
            "wins": winners.count("tuned"),
            "ties": winners.count("tie"),
            "losses": winners.count("baseline"),
        }
        if winners
        else None,
        "forgetting": {
            "margin": evaluation.options.guard_margin,
            "warning": evaluation.guard_warning(),
        },
    }


def write_report(evaluation: Evaluation, out_dir: Path, run_dir: Path | None) -> Path:
    """eval/report.json, eval/samples.jsonl and eval/report.html, put in place together; returns the HTML file.

    The folder is written aside and renamed into place, so an interrupted or failed write leaves the previous
    report whole. A folder holding anything but a report is not replaced.
    """
    from tunesmith.evaluate.html import render_html

    if out_dir.is_dir() and any(p.name not in REPORT_FILES for p in out_dir.iterdir()):
        raise ConfigError(f"{out_dir} holds other files than a report", hint="choose an empty or new folder")
    report = report_dict(evaluation)
    rows = samples(evaluation)
    texts = (
        json.dumps(report, indent=2),
        "".join(json.dumps(r) + "\n" for r in rows),
        render_html(report, rows, run_dir),
    )
    try:
        with paths.atomic_folder(out_dir) as tmp:  # Ctrl-C too
            for name, text in zip(REPORT_FILES, texts):
                paths.write_text_atomic(tmp / name, text)
    except OSError as exc:
        raise ConfigError(
            f"{out_dir}: could not write the report ({exc.strerror or exc}); the previous one is kept",
            hint="free some disk space, or choose another --out",
        ) from None
    if run_dir is not None:
        _to_trackers(evaluation, run_dir, out_dir / REPORT_FILES[-1])
    return out_dir / REPORT_FILES[-1]


def _to_trackers(evaluation: Evaluation, run_dir: Path, html: Path) -> None:
    """The report's numbers, headline and page to the run's experiment trackers (report_to), when it has any."""
    from tunesmith.training.tracking import log_report

    config_file = RunFolder(run_dir).config
    config = build_config(read_config_file(config_file), str(config_file)) if config_file.is_file() else None
    if config is None or not config.report_to:
        return
    scores: dict[str, float] = {}
    for role, result in (("tuned", evaluation.tuned), ("base", evaluation.baseline)):
        summary = result.summary() if result is not None else {"metrics": {}}
        scores |= {f"report/{role}_{name}": float(value) for name, value in summary["metrics"].items()}
        scores |= {f"report/{role}_grade_{name}": float(v) for name, v in (summary.get("graders") or {}).items()}
        if summary.get("loss") is not None:
            scores[f"report/{role}_loss"] = float(summary["loss"])
    log_report(run_dir, config, scores, evaluation.headline(), html)


QUICK_EVAL_EXAMPLES = 50
"""Held-out examples the evaluation at the end of training looks at (`tunesmith eval` takes them all)."""


def after_training(run_dir: Path) -> EvalOptions | None:
    """The evaluation a finished run gets (from the CLI and from a job alike), or None when the run has no
    held-out data of its own."""
    from tunesmith.evaluate.items import has_held_out

    run = RunFolder(run_dir)
    if not has_held_out(run):
        return None
    config = run.read_config()
    if config.get("objective") == "grpo":  # answers as long as it learned them (`evaluate` takes its graders)
        return EvalOptions(limit=QUICK_EVAL_EXAMPLES, max_new_tokens=config["reinforcement"]["max_answer_tokens"])
    return EvalOptions(limit=QUICK_EVAL_EXAMPLES)


def evaluate_to_folder(target: str, options: EvalOptions, out_dir: Path | None = None) -> tuple[Evaluation, Path]:
    """Evaluate and write the report: into <run>/eval/ for a run, else into out_dir (default under home)."""
    evaluation = evaluate(target, options)
    run_dir = evaluation.run_dir
    if out_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = RunFolder(run_dir).eval if run_dir is not None else paths.home() / "evals" / stamp
    return evaluation, write_report(evaluation, out_dir, run_dir)
