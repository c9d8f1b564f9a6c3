"""The distillation report as one self-contained page: quality, economics, a plot and answers side by side."""

from __future__ import annotations

from html import escape
from typing import Any

from matplotlib.figure import Figure

from tunesmith.evaluate.html import STYLE, png_img

NAMES = {"teacher": "teacher", "tuned": "tuned student", "base": "base student"}


def _number(value: float | None, form: str = ".1f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{form}}{unit}"


def headline(report: dict[str, Any]) -> str:
    """One sentence: how close the tuned student came, and what it saves."""
    quality, money = report["quality"]["vs_teacher"], report["economics"]
    tuned, base = quality["tuned"]["rougeL"], quality["base"]["rougeL"]
    text = f"ROUGE-L against the teacher's answers: base {base:.1f} -> tuned {tuned:.1f}."
    teacher_p50, tuned_p50 = money["teacher"]["latency_p50_s"], money["tuned"]["latency_p50_s"]
    text += f" Median latency: teacher {teacher_p50:.2f} s, tuned student {tuned_p50:.2f} s."
    teacher_cost, tuned_cost = money["teacher"]["cost_per_1000"], money["tuned"]["cost_per_1000"]
    if teacher_cost is not None and tuned_cost is not None:
        text += f" Per 1,000 requests: teacher ${teacher_cost:.4f}, tuned student ${tuned_cost:.4f}."
    return text


def _quality_table(quality: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{NAMES[role]}</td>"
        + "".join(f"<td>{_number(scores[m])}</td>" for m in ("rougeL", "chrf", "exact_match"))
        + f"<td>{_number(quality['vs_reference'].get(role, {}).get('rougeL'))}</td></tr>"
        for role, scores in quality["vs_teacher"].items()
    )
    teacher = quality["vs_reference"].get("teacher", {}).get("rougeL")
    rows += f"<tr><td>teacher</td><td colspan=3>-</td><td>{_number(teacher)}</td></tr>"
    wins = quality["wins"]
    against = (
        f"<p>Tuned student against the teacher on the references (ROUGE-L): {wins['win']} wins, {wins['tie']} ties, "
        f"{wins['loss']} losses.</p>"
        if wins
        else "<p>The held-out data has no reference answers: the teacher's answers are the yardstick.</p>"
    )
    head = "<tr><th></th><th>ROUGE-L vs teacher</th><th>chrF vs teacher</th><th>exact match vs teacher</th>"
    return f"<h2>Quality</h2><table id='quality'>{head}<th>ROUGE-L vs reference</th></tr>{rows}</table>{against}"


def _economics_table(report: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{NAMES[role]}</td><td>{_number(e['latency_p50_s'], '.2f')}</td>"
        f"<td>{_number(e['latency_p95_s'], '.2f')}</td><td>{_number(e['tokens_per_s'])}</td>"
        f"<td>{_number(e['prompt_tokens'], '.0f')} / {_number(e['answer_tokens'], '.0f')}</td>"
        f"<td>{_number(e['cost_per_1000'], '.4f', ' $')}</td></tr>"
        for role, e in report["economics"].items()
    )
    head = (
        "<tr><th></th><th>latency p50 s</th><th>latency p95 s</th><th>tokens/s per request</th>"
        "<th>tokens in / out</th><th>cost per 1,000 requests</th></tr>"
    )
    prices = report["prices"]
    note = (
        f"<p>{report['concurrency']} request(s) in flight. Teacher cost from its prices per 1M tokens (in "
        f"{_number(prices['in'], '.2f')}, out {_number(prices['out'], '.2f')}); students' from the machine's hourly "
        f"cost ({_number(prices['hourly'], '.2f')}) times the time a request holds it.</p>"
    )
    return f"<h2>Economics</h2><table id='economics'>{head}{rows}</table>{note}"


def _plot(report: dict[str, Any]) -> str:
    figure = Figure(figsize=(10, 3.4))
    quality_axes, latency_axes = figure.subplots(1, 2)
    vs_teacher = report["quality"]["vs_teacher"]
    metrics = ("rougeL", "chrf")
    for offset, role in ((-0.2, "base"), (0.2, "tuned")):
        values = [vs_teacher[role][m] or 0.0 for m in metrics]
        quality_axes.bar([i + offset for i in range(len(metrics))], values, width=0.4, label=NAMES[role])
    quality_axes.set_xticks(range(len(metrics)), ["ROUGE-L", "chrF"])
    quality_axes.set_ylabel("score vs the teacher's answers")
    quality_axes.set_title("How close to the teacher")
    quality_axes.legend()
    roles = list(report["economics"])
    for offset, key in ((-0.2, "latency_p50_s"), (0.2, "latency_p95_s")):
        values = [report["economics"][r][key] for r in roles]
        latency_axes.bar([i + offset for i in range(len(roles))], values, width=0.4, label=key[8:11])
    latency_axes.set_xticks(range(len(roles)), [NAMES[r] for r in roles])
    latency_axes.set_ylabel("seconds per request")
    latency_axes.set_title("Latency")
    latency_axes.legend()
    return png_img(figure)


def _samples(samples: list[dict[str, Any]]) -> str:
    head = "<tr><th>prompt</th><th>reference</th><th>teacher</th><th>tuned student</th><th>base student</th></tr>"
    rows = "".join(
        "<tr>"
        + "".join(f"<td class='text'>{escape(s[k] or '-')}</td>" for k in ("prompt", "reference", *NAMES))
        + "</tr>"
        for s in samples
    )
    return f"<h2>Answers side by side</h2><table id='samples'>{head}{rows}</table>"


def render_report(report: dict[str, Any]) -> str:
    """The whole page as one string: no external files, scripts or fonts."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>tunesmith distillation: {escape(report['run'])}"
        f"</title><style>{STYLE}</style></head><body>"
        f"<h1>Does the student do the teacher's job? {escape(report['run'])}</h1>"
        f"<p class='headline' id='headline'>{escape(headline(report))}</p>"
        f"<p>Teacher {escape(report['teacher']['model'])} at {escape(report['teacher']['url'])}; "
        f"{report['prompts']} held-out prompts from {escape(report['data'])}.</p>"
        + _quality_table(report["quality"])
        + _economics_table(report)
        + f"<div class='plots'>{_plot(report)}</div>"
        + _samples(report["samples"])
        + "</body></html>"
    )
