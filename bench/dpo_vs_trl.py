"""Preference tuning speed: tunesmith's DPO vs TRL's DPOTrainer on the same LoRA job, side by side in one run.

Same model (the embedded SmolLM2-135M-Instruct), pairs (examples/brand-voice), LoRA (r 16, alpha 32, all linear
layers, no dropout), sigmoid DPO with beta 0.1 against the base model (the adapter off), learning rate and one
epoch. TRL gets the pairs in its conversational format, so both render them with the model's chat template.
Each tool runs in a fresh process, alternating (A B C A B C ...); the table gives medians. A run's time is the
whole job: loading the model, tokenising, the reference log-probs (precomputed or not) and the epoch.

Each adapter is then scored in another fresh process by the same code, fp32, on the held-out pairs: reward
accuracy (the tuned model's log-prob margin, chosen - rejected, above the base model's: what DPO optimises and
what TRL logs as rewards/accuracies) and per-token preference accuracy (the tuned model alone prefers the chosen
answer per answer token).

Tools: tunesmith (its defaults: bf16 autocast where bf16 matmuls measure >= 2x fp32, else fp32), tunesmith-fp32,
tunesmith-fp32-ckpt (fp32 with activation checkpointing: less memory, one more forward per step),
trl (DPOTrainer defaults: fp32 on CPU, gradient checkpointing on, a reference forward every step),
trl-precompute (precompute_ref_log_probs=True), trl-bf16 (bf16=True).

    .venv/bin/python -m bench.dpo_vs_trl [--repeat 3] [--tools tunesmith,tunesmith-fp32,trl,trl-precompute]
        [--json bench/results/dpo_vs_trl.json] [--add-to bench/results/dpo_vs_trl.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

from bench import common

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "brand-voice"
TOOLS = ("tunesmith", "tunesmith-fp32", "tunesmith-fp32-ckpt", "trl", "trl-precompute", "trl-bf16")
BETA = 0.1
SCORES = ("reward_accuracy", "per_token_accuracy", "base_per_token_accuracy")


def _pairs(path: Path, count: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[:count]]


def _run_tunesmith(args: argparse.Namespace, out: Path, tool: str) -> dict[str, float | str]:
    from tunesmith.config import LoraSettings, PreferenceSettings, RunConfig
    from tunesmith.training.precision import choose_precision
    from tunesmith.training.runner import train

    data = out / "train.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in _pairs(args.data, args.pairs)))
    config = RunConfig(
        data=str(data),
        eval_data=str(args.eval),
        objective="dpo",
        preference=PreferenceSettings(loss="dpo", beta=BETA),
        method="lora",
        lora=LoraSettings(rank=16, alpha=32, dropout=0.0),
        epochs=1,
        learning_rate=args.lr,
        eval_every=10**6,
        save_every=10**6,
        threads=torch.get_num_threads(),
        precision="auto" if tool == "tunesmith" else "fp32",
        activation_checkpointing=tool.endswith("-ckpt"),
    )
    start = time.perf_counter()
    result = train(config, out / "run")
    seconds = time.perf_counter() - start
    (out / "adapter").symlink_to(result.final)
    compute = str(choose_precision(config.device, config.precision).compute).removeprefix("torch.")
    return {"seconds": seconds, "loop_seconds": result.state.elapsed, "compute": compute}


def as_trl_pairs(rows: list[dict]) -> list[dict]:
    """{prompt: messages, chosen: str, rejected: str} -> TRL's conversational preference format."""
    return [
        {
            "prompt": row["prompt"],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }
        for row in rows
    ]


def _run_trl(args: argparse.Namespace, out: Path, precompute: bool, bf16: bool) -> dict[str, float | str]:
    import datasets
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from tunesmith.models.load import load_tokenizer, local_path
    from tunesmith.models.sources import DEFAULT_MODEL

    start = time.perf_counter()
    dataset = datasets.Dataset.from_list(as_trl_pairs(_pairs(args.data, args.pairs)))
    config = DPOConfig(
        output_dir=str(out / "trl"),
        num_train_epochs=1,
        learning_rate=args.lr,
        beta=BETA,
        precompute_ref_log_probs=precompute,
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
        save_strategy="no",
        report_to="none",
        logging_steps=10**6,
        seed=42,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=local_path(DEFAULT_MODEL),
        args=config,
        train_dataset=dataset,
        processing_class=load_tokenizer(DEFAULT_MODEL),
        peft_config=lora,
    )
    loop = time.perf_counter()
    trainer.train()
    end = time.perf_counter()
    trainer.model.save_pretrained(out / "adapter")
    return {"seconds": end - start, "loop_seconds": end - loop, "compute": "bfloat16" if bf16 else "float32"}


def _score(args: argparse.Namespace, adapter: Path) -> dict[str, float]:
    """Held-out pairs, fp32, tunesmith's tokenisation: reward accuracy against the base, per-token accuracy."""
    from peft import PeftModel

    from tunesmith.data.validate import read_dataset
    from tunesmith.evaluate.pairs import pair_scores, preference_records
    from tunesmith.models.load import load_model, load_tokenizer
    from tunesmith.models.sources import DEFAULT_MODEL

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    records = preference_records(read_dataset(str(args.eval)).records)
    model = PeftModel.from_pretrained(load_model(DEFAULT_MODEL, dtype="float32"), str(adapter))
    tuned = pair_scores(model, tokenizer, records, 1024)
    with model.disable_adapter():
        base = pair_scores(model, tokenizer, records, 1024)
    moved = [t > b for t, b in zip(tuned.margins, base.margins, strict=True)]
    return {
        "reward_accuracy": 100 * sum(moved) / len(moved),
        "per_token_accuracy": tuned.summary()["per_token_accuracy"],
        "base_per_token_accuracy": base.summary()["per_token_accuracy"],
    }


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    torch.manual_seed(0)
    out = Path(args.out)
    if args.child == "score":
        result: dict[str, float | str] = dict(_score(args, out / "adapter"))
    elif args.child.startswith("tunesmith"):
        result = _run_tunesmith(args, out, args.child)
    else:
        result = _run_trl(args, out, precompute=args.child == "trl-precompute", bf16=args.child == "trl-bf16")
    common.report(result)


def _spawn(args: argparse.Namespace, kind: str, out: Path) -> dict:
    command = [sys.executable, "-m", "bench.dpo_vs_trl", "--child", kind, "--out", str(out), "--data", str(args.data)]
    command += ["--eval", str(args.eval), "--pairs", str(args.pairs), "--lr", str(args.lr)]
    return common.spawn(command, kind)


def _row(runs: list[dict], pairs: int) -> dict[str, float | str]:
    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    return {
        "compute": runs[0]["compute"],
        "runs": len(runs),
        "pairs_per_second": pairs / median("seconds"),
        "seconds": median("seconds"),
        "loop_seconds": median("loop_seconds"),
        "peak_rss_gb": median("peak_rss_gb"),
        "reward_accuracy": median("reward_accuracy"),
        "per_token_accuracy": median("per_token_accuracy"),
    }


def _earlier_runs(path: str, tools: list[str]) -> dict[str, list[dict]]:
    """The runs an earlier report holds, per tool (all of its tools kept), to which this run's repeats are added."""
    if not path:
        return {tool: [] for tool in tools}
    earlier: dict[str, list[dict]] = json.loads(Path(path).read_text())["runs"]
    return earlier | {tool: earlier.get(tool, []) for tool in tools}


def main(args: argparse.Namespace) -> None:
    tools = [t for t in args.tools.split(",") if t]
    runs = _earlier_runs(args.add_to, tools)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeat):
            for tool in tools:
                out = Path(tmp) / f"{tool}-{repeat}"
                out.mkdir()
                run = _spawn(args, tool, out)
                scores = _spawn(args, "score", out)  # its own process: its memory and time are not the run's
                run |= {key: scores[key] for key in SCORES}
                runs[tool].append(run)
                print(f"{tool} #{repeat + 1}: " + json.dumps(run), file=sys.stderr, flush=True)
    report = {
        "machine": {"threads": torch.get_num_threads()},
        "versions": common.versions(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "table": {tool: _row(tool_runs, args.pairs) for tool, tool_runs in runs.items()},
        "runs": runs,
    }
    _print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def _against_trl(table: dict, tool: str) -> str:
    """A tunesmith row against TRL's defaults when both compute in the same dtype: speed and peak RSS ratios."""
    trl = table.get("trl")
    if not tool.startswith("tunesmith") or trl is None or trl["compute"] != table[tool]["compute"]:
        return "-"
    row = table[tool]
    return f"{row['pairs_per_second'] / trl['pairs_per_second']:.2f}x, {row['peak_rss_gb'] / trl['peak_rss_gb']:.2f}x"


def _print_table(report: dict) -> None:
    table = report["table"]
    print(
        "| tool | runs | matmuls | pairs/s | whole job s | training loop s | peak RSS GB | held-out reward accuracy % "
        "| per-token preference accuracy % | against TRL's defaults in the same dtype: speed, RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tool, row in table.items():
        print(
            f"| {tool} | {row['runs']} | {row['compute']} | {row['pairs_per_second']:.2f} | {row['seconds']:.1f} "
            f"| {row['loop_seconds']:.1f} | {row['peak_rss_gb']:.2f} | {row['reward_accuracy']:.0f} "
            f"| {row['per_token_accuracy']:.0f} | {_against_trl(table, tool)} |"
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "train.jsonl")
    parser.add_argument("--eval", type=Path, default=DATA / "eval.jsonl")
    parser.add_argument("--pairs", type=int, default=320, help="training pairs (the first N)")
    parser.add_argument("--lr", type=float, default=1.3e-4, help="tunesmith's auto rate for DPO on this model")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tools", default="tunesmith,tunesmith-fp32,tunesmith-fp32-ckpt,trl,trl-precompute")
    parser.add_argument("--json", default="")
    parser.add_argument("--add-to", default="", help="an earlier --json report: its runs join this run's medians")
    parser.add_argument("--child", choices=(*TOOLS, "score"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    child(arguments) if arguments.child else main(arguments)
