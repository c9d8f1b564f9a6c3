"""Fine-tuning speed: tunesmith vs TRL's SFTTrainer on the same LoRA job, side by side in one run.

Same model (the embedded SmolLM2-135M-Instruct), data, LoRA (r 16, alpha 32, all linear layers, no dropout),
learning rate and epochs. Only the answers are learned: TRL gets the conversations as prompt-completion pairs,
so its defaults (completion_only_loss) supervise the same tokens as tunesmith. Each tool runs in a fresh process,
alternating (A B C A B C ...); the table gives medians. Each trained adapter is then scored in another fresh
process by the same code: the mean loss per answer token on the held-out set, fp32, base + adapter.

MFU counts model FLOPs per real token: 4N for LoRA (forward, and the backward to activations; no weight
gradients), plus attention, 12 * layers * hidden * (context seen by the token). N is every matmul weight a token
passes through, the output head included (tunesmith skips the head where nothing is learned; MFU still counts
it). The peak is a 2048x2048 fp32 matmul on this machine, measured in the same run.

Tools: tunesmith (its defaults: bf16 autocast where bf16 matmuls measure >= 2x fp32, else fp32), tunesmith-fp32,
trl (SFTTrainer defaults, fp32 on CPU), trl-packing (packing=True), trl-bf16 (bf16=True, autocast).

    .venv/bin/python -m bench.train_vs_trl [--repeat 3] [--tools tunesmith,trl,trl-packing] [--json FILE]
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
DATA = ROOT / "examples" / "call-summaries"
TOOLS = ("tunesmith", "tunesmith-fp32", "trl", "trl-packing", "trl-bf16")


def _matmul_peak(dtype: torch.dtype, size: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a square matmul: the median of `reps` after a warm-up."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def _run_tunesmith(args: argparse.Namespace, out: Path, precision: str) -> dict[str, float | str]:
    from tunesmith.config import LoraSettings, RunConfig
    from tunesmith.training.precision import choose_precision
    from tunesmith.training.runner import train

    config = RunConfig(
        data=str(args.data),
        eval_data=str(args.eval),
        method="lora",
        lora=LoraSettings(rank=16, alpha=32, dropout=0.0),
        epochs=args.epochs,
        learning_rate=args.lr,
        eval_every=10**6,
        save_every=10**6,
        threads=torch.get_num_threads(),
        batch_tokens=args.batch_tokens or "auto",
        precision=precision,  # type: ignore[arg-type]
    )
    start = time.perf_counter()
    result = train(config, out / "run")
    train_seconds = time.perf_counter() - start
    (out / "adapter").symlink_to(result.final)
    compute = str(choose_precision(config.device, config.precision).compute).removeprefix("torch.")
    return {
        "tokens": result.state.tokens,
        "seconds": result.state.elapsed,
        "train_call_seconds": train_seconds,
        "compute": compute,
    }


def as_prompt_completion(path: Path) -> list[dict[str, object]]:
    rows = []
    for line in path.read_text().splitlines():
        messages = json.loads(line)["messages"]
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return rows


def _run_trl(args: argparse.Namespace, out: Path, packing: bool, bf16: bool) -> dict[str, float]:
    import datasets
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tunesmith.models.load import local_path
    from tunesmith.models.sources import DEFAULT_MODEL

    dataset = datasets.Dataset.from_list(as_prompt_completion(args.data))
    config = SFTConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        packing=packing,
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
        save_strategy="no",
        report_to="none",
        logging_steps=10**6,
        seed=42,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=local_path(DEFAULT_MODEL), args=config, train_dataset=dataset, peft_config=lora)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * args.epochs
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(out / "adapter")
    compute = "bfloat16" if bf16 else "float32"
    return {"tokens": tokens, "seconds": seconds, "train_call_seconds": seconds, "compute": compute}


def _eval_loss(args: argparse.Namespace, adapter: Path) -> float:
    """Mean loss per answer token on the held-out set: fp32 base + adapter, tunesmith's tokenisation."""
    from peft import PeftModel

    from tunesmith.config import RunConfig
    from tunesmith.models.load import load_model, load_tokenizer
    from tunesmith.models.sources import DEFAULT_MODEL
    from tunesmith.tokenize.batches import ordered_batches
    from tunesmith.training.loss import mean_loss
    from tunesmith.training.objectives import load_run_data
    from tunesmith.training.precision import Precision

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    data = load_run_data(RunConfig(data=str(args.data), eval_data=str(args.eval)), tokenizer)
    model = PeftModel.from_pretrained(load_model(DEFAULT_MODEL, dtype="float32"), str(adapter))
    lengths = [len(e.input_ids) for e in data.held_out]
    batches = ordered_batches(torch.tensor(lengths).numpy(), 4096)
    precision = Precision(torch.device("cpu"), torch.float32)
    loss = mean_loss(model, data.held_out, batches, data.pad_id, precision.autocast)
    assert loss is not None
    return loss


def _model_flops_per_token(args: argparse.Namespace) -> tuple[float, float]:
    """(4N for LoRA training, attention FLOPs per real token of the training set)."""
    from tunesmith.config import RunConfig
    from tunesmith.models.load import load_model, load_tokenizer
    from tunesmith.models.sources import DEFAULT_MODEL
    from tunesmith.training.objectives import load_run_data

    model = load_model(DEFAULT_MODEL, dtype="float32")
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    config = model.config
    data = load_run_data(RunConfig(data=str(args.data), eval_data=str(args.eval)), load_tokenizer(DEFAULT_MODEL))
    seen = sum(n * (n + 1) / 2 for n in (len(e.input_ids) for e in data.train))  # causal: token t sees t tokens
    tokens = sum(len(e.input_ids) for e in data.train)
    attention = 12 * config.num_hidden_layers * config.hidden_size * seen / tokens
    return 4.0 * matmul, attention


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    torch.manual_seed(0)
    out = Path(args.out)
    if args.child == "peak":
        torch.set_num_threads(torch.get_num_threads())
        result = {"fp32": _matmul_peak(torch.float32), "bf16": _matmul_peak(torch.bfloat16)}
    elif args.child == "flops":
        lora, attention = _model_flops_per_token(args)
        result = {"lora": lora, "attention": attention}
    elif args.child == "eval":
        result = {"eval_loss": _eval_loss(args, out / "adapter")}
    elif args.child in ("tunesmith", "tunesmith-fp32"):
        result = _run_tunesmith(args, out, "fp32" if args.child == "tunesmith-fp32" else "auto")
    else:
        result = _run_trl(args, out, packing=args.child == "trl-packing", bf16=args.child == "trl-bf16")
    common.report(result)


def _spawn(args: argparse.Namespace, kind: str, out: Path) -> dict:
    command = [sys.executable, "-m", "bench.train_vs_trl", "--child", kind, "--out", str(out), "--data", str(args.data)]
    command += ["--eval", str(args.eval), "--epochs", str(args.epochs), "--lr", str(args.lr)]
    command += ["--batch-size", str(args.batch_size), "--batch-tokens", str(args.batch_tokens)]
    return common.spawn(command, kind)


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main(args: argparse.Namespace) -> None:
    tools = [t for t in args.tools.split(",") if t]
    runs: dict[str, list[dict[str, float]]] = {tool: [] for tool in tools}
    with tempfile.TemporaryDirectory() as tmp:
        flops = _spawn(args, "flops", Path(tmp))
        peaks = []
        for repeat in range(args.repeat):
            peaks.append(_spawn(args, "peak", Path(tmp)))
            for tool in tools:
                out = Path(tmp) / f"{tool}-{repeat}"
                out.mkdir()
                run = _spawn(args, tool, out)
                run |= {"eval_loss": _spawn(args, "eval", out)["eval_loss"]}
                run["tokens_per_second"] = run["tokens"] / run["seconds"]
                runs[tool].append(run)
                print(f"{tool} #{repeat + 1}: " + json.dumps(run), file=sys.stderr, flush=True)
    peak = statistics.median(p["fp32"] for p in peaks)
    bf16_peak = statistics.median(p["bf16"] for p in peaks)
    per_token = flops["lora"] + flops["attention"]
    table = {}
    for tool in tools:
        speed = _median(runs[tool], "tokens_per_second")
        table[tool] = {
            "tokens_per_second": speed,
            "compute": runs[tool][0]["compute"],
            "mfu_fp32_peak": speed * per_token / (peak * 1e9),
            "mfu_own_peak": speed * per_token / ((bf16_peak if runs[tool][0]["compute"] == "bfloat16" else peak) * 1e9),
            "peak_rss_gb": _median(runs[tool], "peak_rss_gb"),
            "eval_loss": _median(runs[tool], "eval_loss"),
            "train_seconds": _median(runs[tool], "seconds"),
            "wall_seconds": _median(runs[tool], "wall_seconds"),
        }
    report = {
        "machine": {"threads": torch.get_num_threads(), "fp32_gflops": peak},
        "bf16_gflops": bf16_peak,
        "flops_per_token": {"lora_4n": flops["lora"], "attention": flops["attention"]},
        "versions": common.versions(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "table": table,
        "runs": runs,
    }
    _print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def _print_table(report: dict) -> None:
    table = report["table"]
    ours = table.get("tunesmith")
    print(f"fp32 matmul peak {report['machine']['fp32_gflops']:.0f} GFLOP/s, bf16 {report['bf16_gflops']:.0f}")
    print(
        "| tool | matmuls | real tokens/s | MFU (fp32 peak) | MFU (peak of its dtype) | peak RSS GB | eval loss "
        "| train s | wall s | tunesmith speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tool, row in table.items():
        ratio = f"{ours['tokens_per_second'] / row['tokens_per_second']:.2f}x" if ours and tool != "tunesmith" else "-"
        print(
            f"| {tool} | {row['compute']} | {row['tokens_per_second']:.0f} | {100 * row['mfu_fp32_peak']:.0f}% "
            f"| {100 * row['mfu_own_peak']:.0f}% | {row['peak_rss_gb']:.2f} "
            f"| {row['eval_loss']:.4f} | {row['train_seconds']:.1f} | {row['wall_seconds']:.1f} | {ratio} |"
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "train.jsonl")
    parser.add_argument("--eval", type=Path, default=DATA / "eval.jsonl")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=8, help="TRL's examples per step")
    parser.add_argument("--batch-tokens", type=int, default=0, help="tunesmith's token budget per batch (0: auto)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--json", default="")
    parser.add_argument("--child", choices=(*TOOLS, "eval", "peak", "flops"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    child(arguments) if arguments.child else main(arguments)
