"""Quality on real data: base model, tunesmith's defaults, TRL's SFTTrainer defaults and a learning-rate x epochs grid.

The sets are built by `bench/quality_data.py` (data nobody in this project wrote, from the numpy wheel and Debian's
manpages-dev and fortunes; committed under bench/data/quality with their sources). Each arm runs in a fresh process:

- `base`: the default model as it is.
- `defaults`: `tunesmith train --data train.jsonl --eval eval.jsonl` and nothing else.
- `trl`: TRL's SFTTrainer with its defaults (learning rate 2e-5, 3 epochs, 8 examples a step), the same model and
  LoRA shape as ours (r 16, alpha 32, all linear layers, no dropout); chats as prompt-completion pairs, so the same
  answer tokens are learned.
- `grid-lrX-epN`: tunesmith with that learning rate and epochs, every other setting its default. The best cell is
  the "tuned by hand" reference.
- `variant-NAME`: the defaults with one LoRA choice changed (rank, rsLoRA, LoRA+, NEFTune; `VARIANTS`).
- `probe-NAME`: the defaults with more held-out evaluations (`PROBES`), asked for by name.

Each arm is scored by the same code: the held-out loss per supervised token (fp32, tunesmith's tokenisation), and the
task metric: ROUGE-L of greedy answers (`tunesmith eval`'s generation and scoring) for the chat sets, perplexity for
the text set. tunesmith's rows also keep the run's held-out losses as it went (`evals`: [step, loss] pairs) and the
step final/ holds. Results are appended to a JSON Lines file as each arm ends, so that a long benchmark is done in
parts: an arm already there is skipped unless --fresh. `--table` prints docs/quality.md's table from that file.

    .venv/bin/python -m bench.quality [--sets numpy-summaries,man-descriptions,fortunes] [--arms base,defaults,grid,...]
    .venv/bin/python -m bench.quality --table        # or --write docs/quality.md: into the page, between its markers
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunesmith.config import RunConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "quality"
RESULTS = ROOT / "bench" / "results" / "quality.jsonl"
SETS = ("numpy-summaries", "man-descriptions", "fortunes")
TEXT_SETS = ("fortunes",)
"""Plain text, trained with --objective text (the one flag such data needs) and judged by perplexity."""
GRID_LEARNING_RATES = (2e-4, 6e-4, 1.8e-3)
"""From the old default (2e-4) to a little above Tinker's rule for this model (5e-4 x (2000 / 576)^0.781 = 1.3e-3);
1.8e-3 was the best column on every set and is the automatic rate since 2026-12-02."""
GRID_EPOCHS = (1, 2, 3)
TRL_LEARNING_RATE, TRL_EPOCHS, TRL_BATCH = 2e-5, 3, 8
"""SFTConfig's defaults."""


def grid_arms() -> list[str]:
    """Epochs first: the cheap cells of every learning rate come before the long ones."""
    return [f"grid-lr{lr:g}-ep{epochs}" for epochs in GRID_EPOCHS for lr in GRID_LEARNING_RATES]


VARIANTS: dict[str, dict[str, object]] = {
    "rank-8": {"lora": {"rank": 8}},
    "rank-32": {"lora": {"rank": 32}},
    "rslora-32": {"lora": {"rank": 32, "rslora": True}},
    "rslora-32-lr6.4e-4": {"lora": {"rank": 32, "rslora": True}, "learning_rate": 6.4e-4},
    "lora-plus-16": {"lora": {"b_lr_ratio": 16.0}},
    "neftune-5": {"neftune_alpha": 5.0},
    "attention-only": {"lora": {"targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}},
}
"""LoRA choices re-checked against the defaults (`variant-NAME` arms), every other setting auto. rsLoRA at rank 32
scales the adapter 2.8x more than alpha / rank does at 16 (alpha / sqrt(32) against alpha / 16), which acts like a
larger rate: `rslora-32-lr6.4e-4` divides the auto rate (1.8e-3 on the default model) by that factor."""

PROBES: dict[str, dict[str, object]] = {
    "evals-22": {"eval_every": 22},
}
"""The defaults with more held-out evaluations (`probe-NAME` arms, asked for by name): the same training path,
seen at more points. On numpy-summaries the defaults evaluate twice (steps 88 and 176 of 176: its held-out set is a
third of the training set's size, and evaluations are kept to ~10% of a run); every 22 steps shows the held-out loss
between, and what keeping the best of more checkpoints would gain."""


def _settings(arm: str) -> dict[str, object]:
    """The settings an arm of tunesmith changes from the defaults."""
    if arm.startswith("grid-lr"):
        lr, epochs = arm.removeprefix("grid-lr").split("-ep")
        return {"learning_rate": float(lr), "epochs": int(epochs)}
    if arm.startswith("variant-"):
        return VARIANTS[arm.removeprefix("variant-")]
    if arm.startswith("probe-"):
        return PROBES[arm.removeprefix("probe-")]
    return {}


def _paths(name: str) -> tuple[Path, Path]:
    return DATA / name / "train.jsonl", DATA / name / "eval.jsonl"


def _objective(name: str) -> str:
    return "text" if name in TEXT_SETS else "sft"


def run_config(name: str, settings: dict[str, object]) -> RunConfig:
    """What an arm of tunesmith trains with on a set: the set's files and objective, and the arm's settings."""
    from tunesmith.config import RunConfig

    train_path, eval_path = _paths(name)
    values = {"data": str(train_path), "eval_data": str(eval_path), "objective": _objective(name), **settings}
    return RunConfig.model_validate(values)


def _train_tunesmith(name: str, out: Path, settings: dict[str, object]) -> dict[str, object]:
    import yaml

    from tunesmith.runs import RunFolder
    from tunesmith.training.runner import train

    result = train(run_config(name, settings), out / "run")
    resolved = yaml.safe_load((out / "run" / "config.yaml").read_text())
    chosen = {key: resolved[key] for key in ("learning_rate", "epochs")}
    run = RunFolder(out / "run")
    evals = [[row["step"], round(row["eval_loss"], 4)] for row in run.read_metrics() if row.get("event") == "eval"]
    steps = {"steps": result.state.step, "kept_step": run.kept_step(), "tokens": result.state.tokens, "evals": evals}
    return {"final": str(result.final), **steps, **chosen}


def _precision() -> str:
    """What tunesmith computes in on this machine (auto): bf16 where it is fast, else fp32. Every arm of a row runs
    in it, TRL's included, so that rows measured on different machines are never compared with each other."""
    import torch

    from tunesmith.models.load import pick_device, pick_dtype

    return "bf16" if pick_dtype(pick_device()) == torch.bfloat16 else "fp32"


def _train_trl(name: str, out: Path) -> dict[str, object]:
    import datasets
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from bench.train_vs_trl import as_prompt_completion
    from tunesmith.models.load import local_path
    from tunesmith.models.sources import DEFAULT_MODEL
    from tunesmith.runs import write_run_file

    train_path, _ = _paths(name)
    first = json.loads(train_path.read_text().splitlines()[0])
    rows = as_prompt_completion(train_path) if "messages" in first else [json.loads(x) for x in train_path.open()]
    config = SFTConfig(
        output_dir=str(out / "trl"),
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        report_to="none",
        seed=42,
        disable_tqdm=True,
        bf16=_precision() == "bf16",  # SFTConfig defaults to True: emulated bf16 on a CPU without it is 100x slower
    )
    assert (config.learning_rate, config.num_train_epochs) == (TRL_LEARNING_RATE, TRL_EPOCHS), "TRL's defaults moved"
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=local_path(DEFAULT_MODEL), args=config, train_dataset=datasets.Dataset.from_list(rows), peft_config=lora
    )
    trainer.train()
    final = out / "adapter"
    trainer.model.save_pretrained(final)
    trainer.processing_class.save_pretrained(final)  # a run's final/ holds its tokenizer: evaluation loads it there
    write_run_file(final, DEFAULT_MODEL, "lora", _objective(name))  # so that tunesmith's evaluation loads it like a run
    return {"final": str(final), "steps": trainer.state.global_step}


def _held_out_loss(name: str, final: str | None) -> float:
    """Mean loss per supervised held-out token: fp32, base (+ adapter), tunesmith's tokenisation."""
    import numpy as np
    import torch
    from peft import PeftModel

    from tunesmith.config import RunConfig
    from tunesmith.models.load import load_model, load_tokenizer
    from tunesmith.models.sources import DEFAULT_MODEL
    from tunesmith.tokenize.batches import ordered_batches
    from tunesmith.training.loss import mean_loss
    from tunesmith.training.objectives import load_run_data
    from tunesmith.training.precision import Precision

    train_path, eval_path = _paths(name)
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    config = RunConfig(data=str(train_path), eval_data=str(eval_path), objective=_objective(name))
    data = load_run_data(config, tokenizer)
    model = load_model(DEFAULT_MODEL, dtype="float32")
    if final is not None:
        model = PeftModel.from_pretrained(model, final)
    batches = ordered_batches(np.array([len(e.input_ids) for e in data.held_out]), 4096)
    precision = Precision(torch.device("cpu"), torch.float32)
    loss = mean_loss(model, data.held_out, batches, data.pad_id, precision.autocast)
    assert loss is not None
    return loss


def _task_metric(name: str, target: str) -> dict[str, object]:
    """ROUGE-L of greedy answers on the held-out chats, as `tunesmith eval` scores them."""
    from tunesmith.evaluate.evaluation import EvalOptions, evaluate

    _, eval_path = _paths(name)
    result = evaluate(target, EvalOptions(data=str(eval_path), baseline="none", guard=False, metrics=("rougeL",)))
    summary = result.tuned.summary()
    items = [round(float(score), 2) for score in result.tuned.scores["rougeL"]]
    return {"rougeL": summary["metrics"]["rougeL"], "stop_rate": summary["stop_rate"], "rougeL_items": items}


def child(name: str, arm: str, out: Path) -> dict[str, object]:
    """One arm in this fresh process: train (timed), then score."""
    import math

    import torch

    from tunesmith.models.hardware import cpu_name
    from tunesmith.models.sources import DEFAULT_MODEL

    commit = _commit()  # the code this arm runs, read before it starts: the checkout may move while it trains
    start = time.perf_counter()
    if arm == "base":
        trained: dict[str, object] = {"final": None}
    elif arm == "trl":
        trained = _train_trl(name, out)
    else:
        trained = _train_tunesmith(name, out, _settings(arm))
    train_seconds = time.perf_counter() - start
    final = trained["final"]
    loss = _held_out_loss(name, str(final) if final else None)
    result: dict[str, object] = {"train_seconds": round(train_seconds, 1), "held_out_loss": loss}
    if name in TEXT_SETS:
        result["perplexity"] = math.exp(loss)
    else:
        result |= _task_metric(name, str(final) if final else DEFAULT_MODEL)
    result["score_seconds"] = round(time.perf_counter() - start - train_seconds, 1)
    result |= {"precision": _precision(), "cpu": cpu_name(), "isa": torch.backends.cpu.get_cpu_capability()}
    result |= {"commit": commit, "threads": torch.get_num_threads()}
    return result | {k: v for k, v in trained.items() if k != "final"}


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def _done(results: Path, precision: str) -> set[tuple[str, str]]:
    """The (set, arm) pairs already measured in this precision."""
    if not results.is_file():
        return set()
    rows = map(json.loads, results.read_text().splitlines())
    return {(row["set"], row["arm"]) for row in rows if row["precision"] == precision}


def _spawn(name: str, arm: str, out: Path) -> dict[str, object] | None:
    """The arm's result, or None when it failed (its error goes to stderr; the arms after it still run)."""
    command = [sys.executable, "-m", "bench.quality", "--child", f"{name}:{arm}", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"{name} {arm} failed:\n{done.stderr[-3000:]}", file=sys.stderr, flush=True)
        return None
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def run(sets: list[str], arms: list[str], results: Path, fresh: bool) -> None:
    import tempfile

    done = set() if fresh else _done(results, _precision())
    failed = []
    for name in sets:
        if not _paths(name)[0].is_file():
            sys.exit(f"{_paths(name)[0]} is missing: build it with .venv/bin/python -m bench.quality_data")
        for arm in arms:
            if (name, arm) in done:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                result = _spawn(name, arm, Path(tmp))
            if result is None:
                failed.append(f"{name}:{arm}")
                continue
            row = {"set": name, "arm": arm, **result, "wall_seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps(row), flush=True)
            results.parent.mkdir(parents=True, exist_ok=True)
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    if failed:
        sys.exit(f"failed (errors above): {', '.join(failed)}")


def _metric(row: dict[str, object]) -> tuple[str, float, bool]:
    """(name, value, higher is better) of a result row's task metric."""
    if "perplexity" in row:
        return "perplexity", float(row["perplexity"]), False  # type: ignore[arg-type]
    return "ROUGE-L", float(row["rougeL"]), True  # type: ignore[arg-type]


def defaults_cell(name: str) -> str:
    """The grid cell whose settings are the defaults' on a set (the learning rate and epochs their config resolves
    to; neither depends on the examples' lengths): the same run, so its row stands for the defaults until they are
    run under today's rule."""
    import numpy as np

    from tunesmith.training.plan import resolve_plan

    train, held_out = (np.ones(len(path.read_text().splitlines()), dtype=int) for path in _paths(name))
    resolved = resolve_plan(run_config(name, {}), train, held_out)[0]
    return f"grid-lr{resolved.learning_rate:g}-ep{resolved.epochs}"


def _verdict(rows: dict[str, dict[str, object]], stand_in: str) -> str:
    """Defaults (or the grid cell `stand_in` with their settings) against TRL and the grid's best cell, in the
    targets' terms."""
    ours_arm = "defaults" if "defaults" in rows else stand_in
    if ours_arm not in rows:
        return "no defaults row yet: nothing to compare"
    verdict = _compare(rows, rows[ours_arm])
    if ours_arm != "defaults":
        verdict = f"{stand_in} has the defaults' settings and stands for them: {verdict}"
    variants = [row for arm, row in sorted(rows.items()) if arm.startswith("variant-")]
    if not variants:
        return verdict
    gaps = "; ".join(_variant_gap(row, rows[ours_arm]) for row in variants)
    signs = "the metric better if positive, the loss if negative"
    return f"{verdict}\n\nLoRA choices against the defaults ({ours_arm}), {signs}: {gaps}"


def _variant_gap(variant: dict[str, object], defaults: dict[str, object]) -> str:
    """A variant's task-metric gap to the defaults, and its held-out loss against theirs (the steadier measure: the
    loss of every answer token, where the metric scores 100 greedy answers)."""
    loss = float(variant["held_out_loss"]) - float(defaults["held_out_loss"])  # type: ignore[arg-type]
    return f"{str(variant['arm']).removeprefix('variant-')} {_gap(variant, defaults)}, held-out loss {loss:+.3f}"


def _compare(rows: dict[str, dict[str, object]], defaults: dict[str, object]) -> str:
    _, ours, higher = _metric(defaults)
    sign = 1 if higher else -1
    parts = []
    if "trl" in rows:
        parts.append(f"defaults {'>=' if sign * (ours - _metric(rows['trl'])[1]) >= 0 else '<'} TRL")
    cells = [row for arm, row in rows.items() if arm.startswith("grid-")]
    if cells:
        best = max(cells, key=lambda row: sign * _metric(row)[1])
        parts.append(f"defaults against the best grid cell so far ({best['arm']}): {_gap(defaults, best)}")
    return "; ".join(parts) or "no TRL or grid row yet: nothing to compare the defaults with"


def _gap(ours: dict[str, object], other: dict[str, object]) -> str:
    """How much better `ours` scored than `other`: points of ROUGE-L, or per cent of perplexity (lower is better),
    with the paired standard error where both rows kept per-item scores."""
    name, value, higher = _metric(ours)
    gap = (value - _metric(other)[1]) * (1 if higher else -1)
    text = f"{100 * gap / _metric(other)[1]:+.1f}%" if name == "perplexity" else f"{gap:+.1f} points"
    return text + _paired_error(ours, other)


def _paired_error(ours: dict[str, object], other: dict[str, object]) -> str:
    """The standard error of the mean per-item difference between two arms scored on the same held-out items: how
    far the gap could move with another draw of items ("" for rows recorded before per-item scores were)."""
    import numpy as np

    a, b = ours.get("rougeL_items"), other.get("rougeL_items")
    if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b) or len(a) < 2:
        return ""
    differences = np.array(a, dtype=float) - np.array(b, dtype=float)
    return f" (paired standard error {differences.std(ddof=1) / np.sqrt(len(differences)):.1f})"


def tables(results: Path) -> dict[str, str]:
    """docs/quality.md's tables, keyed "SET, PRECISION": each its heading (the CPUs it ran on), an arm a row (the
    last run of each arm), and the verdict under it.

    bf16 runs keep the frozen base in bf16, fp32 runs in fp32: a different computation, so rows of different
    precisions are never compared."""
    rows: dict[tuple[str, str], dict[str, dict[str, object]]] = {}
    for row in map(json.loads, results.read_text().splitlines()):
        rows.setdefault((row["set"], row["precision"]), {})[row["arm"]] = row
    blocks = {}
    for (name, precision), arms in sorted(rows.items()):
        metric = _metric(next(iter(arms.values())))[0]
        cpus = ", ".join(sorted({str(row["cpu"]) for row in arms.values()}))
        lines = [f"{name}, {precision} ({cpus})", ""]
        lines += [f"| arm | lr | epochs | kept / steps | {metric} | held-out loss | train s | wall s | commit |"]
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for arm, row in sorted(arms.items(), key=lambda item: _arm_order(item[0])):
            lr, epochs = row.get("learning_rate", "-"), row.get("epochs", "-")
            lines.append(
                f"| {arm} | {lr} | {epochs} | {_kept(row)} | {_metric(row)[1]:.2f} | {float(row['held_out_loss']):.4f} "  # type: ignore[arg-type]
                f"| {_seconds(row, 'train_seconds')} | {_seconds(row, 'wall_seconds')} | {row['commit']} |"
            )
        blocks[f"{name}, {precision}"] = "\n".join([*lines, "", _verdict(arms, defaults_cell(name))])
    return blocks


def table(results: Path) -> str:
    """The tables as `--table` prints them, each under a "###" heading."""
    return "\n".join(f"### {block}\n" for block in tables(results).values())


def write_tables(doc: Path, results: Path) -> None:
    """Put each set's table and verdict into `doc` between its markers ("<!-- table SET, PRECISION -->" and
    "<!-- end of table -->"), leaving the text around them as it is."""
    from tunesmith.paths import write_text_atomic

    text = doc.read_text()
    end = "<!-- end of table -->"
    for key, block in tables(results).items():
        start = f"<!-- table {key} -->"
        head, found, rest = text.partition(start)
        if not found or end not in rest:
            sys.exit(f"{doc}: no '{start}' marker with '{end}' after it: put both where this table goes")
        text = f"{head}{start}\n#### {block}\n{end}{rest.split(end, 1)[1]}"
    write_text_atomic(doc, text)


def _seconds(row: dict[str, object], key: str) -> str:
    """A row's seconds, marked with the vector instructions its machine had (recorded since 2026-12-02: one model
    name covers CPUs of different speeds) and when its arm ran on one thread (two arms side by side)."""
    notes = [str(row["isa"])] if "isa" in row else []
    notes += ["1 thread"] if row.get("threads") == 1 else []
    return f"{row[key]} ({', '.join(notes)})" if notes else str(row[key])


def _kept(row: dict[str, object]) -> str:
    """The step final/ holds, of the run's steps (recorded since the column was added; TRL keeps its last)."""
    if "kept_step" not in row:
        return "-"
    kept = row["steps"] if row["kept_step"] is None else row["kept_step"]
    return f"{kept} / {row['steps']}"


def _arm_order(arm: str) -> tuple[int, str]:
    """Base, TRL, earlier defaults (`old-defaults-*`: rows renamed when a default changed), defaults, the rest."""
    rank = 2 if arm.startswith("old-defaults-") else {"base": 0, "trl": 1, "defaults": 3}.get(arm, 4)
    return (rank, arm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--arms", default="base,defaults,grid,trl,variants", help="base, defaults, trl, grid, variants")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--fresh", action="store_true", help="run arms already in the results again")
    parser.add_argument("--table", action="store_true", help="print the table of the results and stop")
    parser.add_argument("--write", type=Path, help="put the tables into this page (docs/quality.md) and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, arm = args.child.split(":")
        print("RESULT " + json.dumps(child(name, arm, args.out)), flush=True)
    elif args.write:
        write_tables(args.write, args.results)
    elif args.table:
        print(table(args.results))
    else:
        groups = {"grid": grid_arms(), "variants": [f"variant-{name}" for name in VARIANTS]}
        arms = [a for arm in args.arms.split(",") for a in groups.get(arm, [arm])]
        run(args.sets.split(","), arms, args.results, args.fresh)


if __name__ == "__main__":
    main()
