"""report.html: one self-contained page (plots inline as PNG) a person opens offline and understands."""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from tunesmith.runs import RunFolder

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.5rem} .headline{font-size:1.3rem;background:#eef6ee;padding:.8rem;border-radius:6px}
.warning{background:#fdecea;padding:.8rem;border-radius:6px} table{border-collapse:collapse;width:100%;margin:1rem 0}
td,th{border:1px solid #ccc;padding:.4rem;vertical-align:top;text-align:left;font-size:.9rem}
td.text{white-space:pre-wrap;max-width:28rem} .win{color:#17692f} .loss{color:#a12622} img{max-width:100%}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:1rem}
pre{background:#f6f6f6;padding:.6rem}
"""


def png_img(figure: Figure) -> str:
    """A figure as an inline <img> (PNG, base64): the page needs no other file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _loss_plot(run_dir: Path) -> str:
    lines = RunFolder(run_dir).read_metrics()
    if not lines:
        return ""
    rewarded = any("reward" in d for d in lines if d["event"] == "step")  # grpo learns a reward, not a loss
    value, what = ("reward", "mean reward") if rewarded else ("loss", "loss")
    steps = [(d["step"], d[value]) for d in lines if d["event"] == "step"]
    evals = [(d["step"], d[f"eval_{value}"]) for d in lines if d["event"] == "eval" and f"eval_{value}" in d]
    figure = Figure(figsize=(5.5, 3.2))
    axes = figure.subplots()
    if steps:
        axes.plot(*zip(*steps), label=f"training {what}")
    if evals:
        axes.plot(*zip(*evals), "o-", label=f"held-out {what}")
    kept = RunFolder(run_dir).kept_step()
    if kept is not None:
        axes.axvline(kept, color="grey", linestyle=":", label=f"final/ (step {kept})")
    axes.set_xlabel("step")
    axes.set_ylabel(what)
    if not rewarded:
        axes.set_yscale("log")
    axes.set_title(what.capitalize())
    axes.legend()
    return png_img(figure)


def _metric_plot(report: dict[str, Any]) -> str:
    names = [m for m in report["metrics"] if m in report["tuned"]["metrics"]]
    if not names:
        return ""
    figure = Figure(figsize=(5.5, 3.2))
    axes = figure.subplots()
    x = range(len(names))
    if report["baseline"]:
        axes.bar([i - 0.2 for i in x], [report["baseline"]["metrics"][n] for n in names], 0.4, label="base")
    axes.bar([i + 0.2 for i in x], [report["tuned"]["metrics"][n] for n in names], 0.4, label="tuned")
    axes.set_xticks(list(x), names, rotation=30)
    axes.set_title("Mean scores (0-100; length ratio: 100 = reference length)")
    axes.legend()
    return png_img(figure)


def _delta_plot(rows: list[dict[str, Any]], metric: str | None) -> str:
    if metric is None or not rows or "baseline_scores" not in rows[0]:
        return ""
    deltas = sorted(_delta(r, metric) for r in rows if _delta(r, metric) is not None)
    figure = Figure(figsize=(5.5, 3.2))
    axes = figure.subplots()
    axes.bar(range(len(deltas)), deltas, color=["#a12622" if d < 0 else "#17692f" for d in deltas])
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xlabel("held-out example (sorted)")
    axes.set_title(f"{metric}: tuned minus base, per example")
    return png_img(figure)


PREFERENCE_ROWS = (
    ("preference accuracy %", "accuracy"),
    ("per-token preference accuracy %", "per_token_accuracy"),
    ("log-prob margin, chosen - rejected", "margin"),
)


def _numbers(report: dict[str, Any]) -> str:
    columns = [("tuned", report["tuned"])] + [(stage["name"], stage) for stage in reversed(report.get("stages", []))]
    columns += [("base", report["baseline"])] if report["baseline"] else []
    keys = [("held-out loss", "loss"), ("perplexity", "perplexity"), ("stopped at end token %", "stop_rate")]
    keys += [("style of all answers vs all references", "corpus_style"), ("general questions right %", "general")]
    head = "".join(f"<th>{escape(name)}</th>" for name, _ in columns)
    body = ""
    for label, key in keys:
        body += f"<tr><td>{label}</td>" + "".join(f"<td>{_fmt(c.get(key))}</td>" for _, c in columns) + "</tr>"
    for label, key in PREFERENCE_ROWS:
        values = [(c.get("preference") or {}).get(key) for _, c in columns]
        if any(v is not None for v in values):
            body += f"<tr><td>{label}</td>" + "".join(f"<td>{_fmt(v)}</td>" for v in values) + "</tr>"
    for metric in report["metrics"]:
        cells = "".join(f"<td>{_fmt(c['metrics'].get(metric))}</td>" for _, c in columns)
        body += f"<tr><td>{escape(metric)}</td>{cells}</tr>"
    for grader in report["tuned"].get("graders") or {}:
        cells = "".join(f"<td>{_fmt((c.get('graders') or {}).get(grader))}</td>" for _, c in columns)
        body += f"<tr><td>grader {escape(grader)}</td>{cells}</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else escape(str(value)) if value is not None else "-"


def _note(scores: dict[str, float | None], metric: str | None) -> str:
    value = scores[metric] if metric else None
    return f"<br><small>{escape(metric)} {value:.1f}</small>" if metric and value is not None else ""


def _delta(row: dict[str, Any], metric: str) -> float | None:
    """Tuned minus base on one example; None where the metric does not apply to it (a call's score on an answer)."""
    tuned, base = row["tuned_scores"][metric], row["baseline_scores"][metric]
    return None if tuned is None or base is None else tuned - base


def _sample_table(rows: list[dict[str, Any]], metric: str | None, title: str) -> str:
    if not rows:
        return ""
    with_base, pairs = "baseline" in rows[0], "rejected" in rows[0]
    head = "<th>prompt</th>" + ("<th>chosen</th><th>rejected</th>" if pairs else "<th>reference</th>")
    head += ("<th>base</th>" if with_base else "") + "<th>tuned</th>"
    body = ""
    for r in rows:
        prompt = r["prompt"][-1]["content"] if r["prompt"] else ""
        rejected = f'<td class="text">{escape(r["rejected"])}</td>' if pairs else ""
        cls = {"tuned": "win", "baseline": "loss"}.get(r.get("winner", ""), "")
        base = (
            f'<td class="text">{escape(r["baseline"])}{_note(r["baseline_scores"], metric)}</td>' if with_base else ""
        )
        body += (
            f'<tr><td class="text">{escape(prompt[:600])}</td>'
            f'<td class="text">{escape(r["reference"])}</td>{rejected}{base}'
            f'<td class="text {cls}">{escape(r["tuned"])}{_note(r["tuned_scores"], metric)}</td></tr>'
        )
    return f"<h3>{escape(title)}</h3><table><tr>{head}</tr>{body}</table>"


def _samples_section(rows: list[dict[str, Any]], metric: str | None) -> str:
    if metric is None or not rows or "baseline_scores" not in rows[0]:
        return _sample_table(rows[:20], metric, "Samples")
    ranked = sorted((r for r in rows if _delta(r, metric) is not None), key=lambda r: _delta(r, metric))
    worst, best = ranked[:5], ranked[::-1][:5]
    return (
        _sample_table(worst, metric, "Where tuning did worst (worst first)")
        + _sample_table(best, metric, "Where tuning did best (best first)")
        + f"<details><summary>All {len(rows)} samples</summary>{_sample_table(rows, metric, 'All samples')}</details>"
    )


def _run_files(run_dir: Path | None) -> str:
    if run_dir is None:
        return ""
    parts = []
    run = RunFolder(run_dir)
    for path in (run.config, run.data_report):
        if path.is_file():
            parts.append(f"<h3>{path.name}</h3><pre>{escape(path.read_text()[:20000])}</pre>")
    return "<h2>The run</h2>" + "".join(parts)


def render_html(report: dict[str, Any], rows: list[dict[str, Any]], run_dir: Path | None) -> str:
    """The whole page as one string: no external files, scripts or fonts."""
    warning = report["forgetting"]["warning"]
    plots = [_loss_plot(run_dir) if run_dir else "", _metric_plot(report), _delta_plot(rows, report["primary_metric"])]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>tunesmith evaluation: {escape(report['target'])}"
        f"</title><style>{STYLE}</style></head><body>"
        f"<h1>Did fine-tuning help? {escape(report['target'])}</h1>"
        f'<p class="headline" id="headline">{escape(report["headline"])}</p>'
        + (f'<p class="warning" id="forgetting">{escape(warning)}</p>' if warning else "")
        + f"<p>Held-out data: {escape(report['data'])} ({report['examples']} examples), {escape(report['created'])}</p>"
        + _numbers(report)
        + f'<div class="plots">{"".join(plots)}</div>'
        + _samples_section(rows, report["primary_metric"])
        + _run_files(run_dir)
        + "</body></html>"
    )
