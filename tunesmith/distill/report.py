"""`tunesmith distill report`: does the student do the teacher's job, and what does it save?

On held-out prompts the teacher, the tuned student and the base student each answer through the same client
(`distill collect`): the teacher at its endpoint, the students served by `tunesmith serve` on this machine. The
answers are scored against the teacher's (and against the reference answers when the data has them), and each
model's latency, tokens/s and cost per 1,000 requests are put side by side.

The teacher's answers are kept in the report folder and never asked for twice (a rerun costs nothing at the
teacher); the students are asked afresh each time, since the run may have changed.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith import paths
from tunesmith.distill.collect import CollectSettings, TeacherSettings, collect
from tunesmith.distill.prompts import Prompt, read_held_out
from tunesmith.distill.report_html import headline, render_report
from tunesmith.distill.student import servers_for, serving
from tunesmith.errors import ModelError
from tunesmith.evaluate.metrics import METRICS

TIE_POINTS = 1.0
"""Against the reference, the student wins a prompt when its ROUGE-L is this many points above the teacher's,
loses when it is this many below, and ties in between."""
SIMILARITY = ("rougeL", "chrf", "exact_match")
"""How close a student's answer is to the teacher's."""
SAMPLES = 5
"""Prompts shown side by side."""
ROLES = ("teacher", "tuned", "base")


@dataclass(frozen=True)
class ReportSettings:
    """What `distill report` compares, and the prices that turn it into money."""

    run: str
    """The student's run folder."""
    data: str
    """Held-out prompts: conversations whose last (assistant) message is the reference answer, or prompts."""
    teacher: TeacherSettings
    """The teacher, asked as the answers were collected (its system message goes to the teacher only)."""
    api_key: str
    """The teacher endpoint's key."""
    out: Path
    """The report folder."""
    price_in: float | None = None
    """The teacher's price per 1M prompt tokens."""
    price_out: float | None = None
    """The teacher's price per 1M answer tokens."""
    hourly_cost: float | None = None
    """What the student's machine costs per hour."""
    concurrency: int = 1
    """Requests in flight at once, for the teacher and the students alike (1: each request's latency alone)."""
    limit: int | None = None
    """Use only the first N held-out prompts."""
    dtype: str = "auto"
    """The students' serving dtype (as `tunesmith serve --dtype`)."""


Answers = dict[int, dict[str, Any]]
"""Line in prompts.jsonl -> {text, latency_s, prompt_tokens, completion_tokens}."""


def _read_answers(path: Path) -> Answers:
    out: Answers = {}
    for text in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        record = json.loads(text)
        meta = record["teacher"]
        out[meta["line"]] = {"text": _answer_text(record["messages"][-1])} | {
            k: meta[k] for k in ("latency_s", "prompt_tokens", "completion_tokens")
        }
    return out


def _answer_text(message: dict[str, Any]) -> str:
    """An answer as the text it is scored by: its content, or the calls it makes as compact JSON."""
    calls = [
        {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in message.get("tool_calls") or []
    ]
    return json.dumps(calls, ensure_ascii=False) if calls else str(message.get("content") or "")


def _ask(role: str, prompts: Path, out: Path, teacher: TeacherSettings, settings: ReportSettings) -> Answers:
    """Every prompt answered by one model (failures stop the report: rerun it to retry them)."""
    path = teacher_answers(out) if role == "teacher" else out / f"{role}.jsonl"
    key = settings.api_key if role == "teacher" else "local"
    asked = CollectSettings(teacher, key, settings.concurrency, empty_ok=role != "teacher")
    summary = collect(str(prompts), path, asked)
    if summary.failed:
        first = summary.failed[0]
        raise ModelError(
            f"{len(summary.failed)} of {summary.total} prompts failed for the {role} (first: {first['error']})",
            hint="run the same command again: answers already kept are not asked for again",
        )
    return _read_answers(path)


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def _quality(answers: dict[str, Answers], references: dict[int, str | None]) -> dict[str, Any]:
    """Students against the teacher; everyone against the references; the tuned student's wins over the teacher."""
    lines = sorted(references)
    out: dict[str, Any] = {"vs_teacher": {}, "vs_reference": {}}
    for role in ("tuned", "base"):
        out["vs_teacher"][role] = {
            m: _mean([METRICS[m](answers[role][i]["text"], answers["teacher"][i]["text"]) for i in lines])
            for m in SIMILARITY
        }
    judged = [i for i in lines if references[i] is not None]
    if not judged:
        return out | {"wins": None}
    scores = {r: [METRICS["rougeL"](answers[r][i]["text"], references[i]) for i in judged] for r in ROLES}  # type: ignore[arg-type]
    out["vs_reference"] = {r: {"rougeL": _mean(scores[r])} for r in ROLES}
    margins = np.array(scores["tuned"]) - np.array(scores["teacher"])
    out["wins"] = {
        "win": int((margins > TIE_POINTS).sum()),
        "tie": int((abs(margins) <= TIE_POINTS).sum()),
        "loss": int((margins < -TIE_POINTS).sum()),
    }
    return out


def _economics(role: str, answers: Answers, settings: ReportSettings) -> dict[str, Any]:
    """Latency percentiles, tokens/s per request, tokens per request and the cost of 1,000 requests."""
    rows = list(answers.values())
    latency = [r["latency_s"] for r in rows]
    speed = [r["completion_tokens"] / r["latency_s"] for r in rows if r["latency_s"] > 0]
    prompt_tokens = _mean([r["prompt_tokens"] for r in rows]) or 0.0
    answer_tokens = _mean([r["completion_tokens"] for r in rows]) or 0.0
    cost = None
    if role == "teacher" and (settings.price_in is not None or settings.price_out is not None):
        cost = 1000 * (prompt_tokens * (settings.price_in or 0) + answer_tokens * (settings.price_out or 0)) / 1e6
    if role != "teacher" and settings.hourly_cost is not None:  # the machine busy with `concurrency` requests
        cost = 1000 * settings.hourly_cost / 3600 * float(np.mean(latency)) / settings.concurrency
    return {
        "latency_p50_s": float(np.percentile(latency, 50)),
        "latency_p95_s": float(np.percentile(latency, 95)),
        "tokens_per_s": float(np.median(speed)) if speed else None,
        "prompt_tokens": prompt_tokens,
        "answer_tokens": answer_tokens,
        "cost_per_1000": cost,
    }


def _samples(held: list[tuple[Prompt, str | None]], answers: dict[str, Answers]) -> list[dict[str, Any]]:
    return [
        {"prompt": prompt.messages[-1].content, "reference": reference}
        | {role: answers[role][i]["text"] for role in ROLES}
        for i, (prompt, reference) in enumerate(held[:SAMPLES], start=1)
    ]


def _distinct(held: list[tuple[Prompt, str | None]]) -> list[tuple[Prompt, str | None]]:
    """The first of each distinct prompt (a prompt is asked once)."""
    seen: set[str] = set()
    out = []
    for prompt, reference in held:
        text = json.dumps(prompt.as_json(), sort_keys=True)
        if text not in seen:
            seen.add(text)
            out.append((prompt, reference))
    return out


def held_out_prompts(data: str, limit: int | None, out: Path) -> tuple[list[tuple[Prompt, str | None]], Path]:
    """The distinct held-out prompts (the first `limit`) with their references, written to out/prompts.jsonl: the
    file the teacher is asked from (`tunesmith migrate` records an old model's answers from the same file, so a
    report finds them all answered)."""
    held = _distinct(read_held_out(data))[:limit]
    out.mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.jsonl"
    paths.write_text_atomic(prompts, "".join(json.dumps(p.as_line()) + "\n" for p, _ in held))
    return held, prompts


def teacher_answers(out: Path) -> Path:
    """Where a report folder keeps the teacher's answers (a chat data set: distillation data as it is)."""
    return out / "teacher.jsonl"


def distill_report(settings: ReportSettings, on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Ask, score, write report.json and report.html into settings.out; the report as a dict."""
    stage = on_stage or (lambda _: None)
    servers = servers_for(settings.run)  # a wrong run folder fails before the teacher is paid
    out = settings.out
    held, prompts = held_out_prompts(settings.data, settings.limit, out)
    stage(f"the teacher answers {len(held)} held-out prompts")
    answers = {"teacher": _ask("teacher", prompts, out, settings.teacher, settings)}
    student = replace(settings.teacher, system=None, logprobs=0)
    for server in servers:
        with serving(server, settings.dtype, max(1, settings.concurrency), out / "server.log") as url:
            for role, model_id in server.ids.items():
                stage(f"the {role} student answers, served at {url}")
                (out / f"{role}.jsonl").unlink(missing_ok=True)
                answers[role] = _ask(role, prompts, out, replace(student, base_url=url, model=model_id), settings)
    report = {
        "run": settings.run,
        "data": settings.data,
        "prompts": len(held),
        "teacher": {"url": settings.teacher.base_url, "model": settings.teacher.model},
        "concurrency": settings.concurrency,
        "quality": _quality(answers, {i: ref for i, (_, ref) in enumerate(held, start=1)}),
        "economics": {role: _economics(role, answers[role], settings) for role in ROLES},
        "prices": {"in": settings.price_in, "out": settings.price_out, "hourly": settings.hourly_cost},
        "samples": _samples(held, answers),
    }
    report["headline"] = headline(report)
    paths.write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    paths.write_text_atomic(out / "report.html", render_report(report))
    return report
