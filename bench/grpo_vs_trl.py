"""Reinforcement fine-tuning speed: tunesmith's grpo vs TRL's GRPOTrainer on the same job, side by side in one run.

Same model (the embedded SmolLM2-135M-Instruct), prompts (examples/command-names: which command a man page's NAME
line describes), grader (examples/command-names/grader.json, run by tunesmith's graders for both: TRL gets it as
its reward function), LoRA (r 16, alpha 32, all linear layers, no dropout), G answers per prompt, prompts per step,
answer length, temperature 1, beta (KL to the base, the adapter off), epsilon, token-level loss (TRL's dapo), the
learning rate with a cosine schedule after one warm-up step, and the number of steps. Each tool runs in a fresh
process. samples/s is answers sampled and learned per second of the training loop (TRL: trainer.train(); tunesmith:
its steps, held-out evaluations left out); final reward is the mean training reward of the last 5 steps.

Each adapter is then graded in another fresh process by the same code, fp32: greedy answers (tunesmith's engine)
to the 60 held-out prompts, graded by the same grader; the base model (adapter off) too.

Tools: tunesmith (its defaults: bf16 autocast where bf16 matmuls measure >= 2x fp32, else fp32), tunesmith-fp32,
trl (GRPOTrainer on CPU: fp32), trl-bf16 (bf16=True).

    .venv/bin/python -m bench.grpo_vs_trl [--steps 24] [--tools tunesmith,trl] [--json bench/results/grpo_vs_trl.json]
"""

from __future__ import annotations

import argparse
import json
import os
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
RECIPE = ROOT / "examples" / "command-names"
TOOLS = ("tunesmith", "tunesmith-fp32", "trl", "trl-bf16")
GROUP, PROMPTS, ANSWER_TOKENS, BETA, EPSILON = 4, 4, 16, 0.04, 0.2


def _run_tunesmith(args: argparse.Namespace, out: Path, tool: str) -> dict[str, float | str]:
    from tunesmith.config import LoraSettings, ReinforcementSettings, RunConfig
    from tunesmith.training.precision import choose_precision
    from tunesmith.training.runner import train

    held = out / "held.jsonl"  # a few prompts for the run's own evaluations (timed apart from the loop)
    held.write_text("".join((RECIPE / "eval.jsonl").read_text().splitlines(keepends=True)[:4]))
    config = RunConfig(
        data=str(RECIPE / "train.jsonl"),
        eval_data=str(held),
        objective="grpo",
        reinforcement=ReinforcementSettings(
            graders=(str(RECIPE / "grader.json"),), group_size=GROUP, prompts_per_step=PROMPTS,
            max_answer_tokens=ANSWER_TOKENS, beta=BETA, epsilon=EPSILON,
        ),
        method="lora",
        lora=LoraSettings(rank=16, alpha=32, dropout=0.0),
        max_steps=args.steps,
        learning_rate=args.lr,
        warmup_steps=1,
        eval_every=10**6,
        save_every=10**6,
        threads=torch.get_num_threads(),
        precision="auto" if tool == "tunesmith" else "fp32",
    )  # fmt: skip
    start = time.perf_counter()
    result = train(config, out / "run")
    seconds = time.perf_counter() - start
    (out / "adapter").symlink_to(result.final)
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [row["reward"] for row in rows if row["event"] == "step"]
    compute = str(choose_precision(config.device, config.precision).compute).removeprefix("torch.")
    return {"seconds": seconds, "loop_seconds": result.state.elapsed, "compute": compute, "rewards": rewards}


def _trl_reward(grader_file: Path):
    from tunesmith.graders.run import Runner, grade_all
    from tunesmith.graders.spec import load_grader
    from tunesmith.graders.template import Sample

    runner = Runner(load_grader(str(grader_file)))

    def command(completions: list, command: list[str], **_: object) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        items = [{"command": name} for name in command]
        return [g.score for g in grade_all(runner, [Sample(t.strip()) for t in texts], items)]

    return command


def _run_trl(args: argparse.Namespace, out: Path, bf16: bool) -> dict[str, float | str]:
    import datasets
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.models.load import load_tokenizer, local_path
    from tunesmith.models.sources import DEFAULT_MODEL

    start = time.perf_counter()
    rows = [json.loads(line) for line in (RECIPE / "train.jsonl").read_text().splitlines()]
    dataset = datasets.Dataset.from_list([{"prompt": r["messages"], "command": r["command"]} for r in rows])
    config = GRPOConfig(
        output_dir=str(out / "trl"), max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="cosine",
        warmup_steps=1, per_device_train_batch_size=GROUP * PROMPTS, num_generations=GROUP,
        max_completion_length=ANSWER_TOKENS, temperature=1.0, beta=BETA, epsilon=EPSILON, loss_type="dapo",
        use_cpu=not torch.cuda.is_available(), bf16=bf16, save_strategy="no", report_to="none", logging_steps=1,
        seed=42, disable_tqdm=True,
    )  # fmt: skip
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(
        model=local_path(DEFAULT_MODEL), reward_funcs=_trl_reward(RECIPE / "grader.json"), args=config,
        train_dataset=dataset, processing_class=load_tokenizer(DEFAULT_MODEL), peft_config=lora,
    )  # fmt: skip
    loop = time.perf_counter()
    trainer.train()
    end = time.perf_counter()
    trainer.model.save_pretrained(out / "adapter")
    rewards = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    return {"seconds": end - start, "loop_seconds": end - loop, "compute": "bfloat16" if bf16 else "float32",
            "rewards": rewards}  # fmt: skip


def _score(adapter: Path) -> dict[str, float]:
    """Greedy answers to the held-out prompts, fp32, through tunesmith's engine, graded by the recipe's grader."""
    from peft import PeftModel

    from tunesmith.engine.sampling import Sampling
    from tunesmith.evaluate.generate import Generator
    from tunesmith.evaluate.graded import grade_answers
    from tunesmith.evaluate.items import load_graded
    from tunesmith.graders.spec import load_grader
    from tunesmith.models.load import load_model, load_tokenizer
    from tunesmith.models.sources import DEFAULT_MODEL
    from tunesmith.tokenize.render import ChatRenderer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    held = load_graded(None, str(RECIPE / "eval.jsonl"), None)
    model = PeftModel.from_pretrained(load_model(DEFAULT_MODEL, dtype="float32"), str(adapter)).eval()
    renderer = ChatRenderer(tokenizer)
    generator = Generator(model, tokenizer, renderer, renderer.stop_token_ids())
    grader = load_grader(str(RECIPE / "grader.json"))

    def grade() -> float:
        answers = generator.generate([i.prompt for i in held.items], Sampling(max_tokens=ANSWER_TOKENS), 16)
        scores = grade_answers([grader], [a.text for a in answers], held.raw or [])[grader.name]
        return sum(scores) / len(scores)

    tuned = grade()
    with model.disable_adapter():
        base = grade()
    return {"held_out_grade": tuned, "base_held_out_grade": base}


def child(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    out = Path(args.out)
    if args.child == "score":
        result: dict = dict(_score(out / "adapter"))
    elif args.child.startswith("tunesmith"):
        result = _run_tunesmith(args, out, args.child)
    else:
        result = _run_trl(args, out, bf16=args.child == "trl-bf16")
    common.report(result)


def _spawn(args: argparse.Namespace, kind: str, out: Path) -> dict:
    command = [sys.executable, "-m", "bench.grpo_vs_trl", "--child", kind, "--out", str(out)]
    return common.spawn([*command, "--steps", str(args.steps), "--lr", str(args.lr)], kind)


def main(args: argparse.Namespace) -> None:
    from tunesmith.models.hardware import cpu_name

    answers = args.steps * GROUP * PROMPTS
    table = {}
    for tool in args.tools.split(","):
        with tempfile.TemporaryDirectory() as folder:
            run = _spawn(args, tool, Path(folder))
            score = _spawn(args, "score", Path(folder))
        score = {key: value for key, value in score.items() if key not in ("wall_seconds", "peak_rss_gb")}
        rewards = run.pop("rewards")
        table[tool] = (
            run
            | score
            | {
                "samples_per_second": answers / run["loop_seconds"],
                "final_reward": sum(rewards[-5:]) / len(rewards[-5:]),
                "first_reward": sum(rewards[:5]) / len(rewards[:5]),
            }
        )
        print(tool, json.dumps(table[tool]), flush=True)
    machine = {"cpu": cpu_name(), "threads": torch.get_num_threads()}
    report = {"steps": args.steps, "group": GROUP, "prompts_per_step": PROMPTS, "answer_tokens": ANSWER_TOKENS,
              "lr": args.lr, "machine": machine, "versions": common.versions(), "tools": table}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--tools", default="tunesmith,trl")
    parser.add_argument("--json", default="")
    parser.add_argument("--child", default="")
    parser.add_argument("--out", default="")
    parsed = parser.parse_args()
    child(parsed) if parsed.child else main(parsed)
