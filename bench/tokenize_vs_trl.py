"""Data preparation speed: tunesmith vs TRL's SFTTrainer on the same 10k chat examples, same tokenizer, same run.

Both go from the JSONL file to token ids and labels. TRL runs twice: with its default (every token trained) and with
assistant_only_loss=True (the same job as tunesmith's default), for which its template needs {% generation %}
markers; we give it SmolLM2's own template with those markers added, which renders identically.

    .venv/bin/python bench/tokenize_vs_trl.py [--examples 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import datasets
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from tunesmith.check import DataOptions, prepare_data
from tunesmith.models.load import load_tokenizer
from tunesmith.models.sources import DEFAULT_MODEL

GENERATION_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = (
    "order",
    "account",
    "refund",
    "delivery",
    "invoice",
    "router",
    "signal",
    "battery",
    "warranty",
    "password",
    "upgrade",
    "plan",
    "charge",
    "technician",
    "appointment",
    "cancel",
    "balance",
    "transfer",
    "screen",
    "update",
)


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_data(path: Path, count: int) -> None:
    rng = random.Random(0)
    with path.open("w") as handle:
        for _ in range(count):
            messages = [{"role": "system", "content": "You are a support agent."}] if rng.random() < 0.5 else []
            for _ in range(rng.choice((1, 1, 2, 3))):
                messages.append(
                    {"role": "user", "content": " ".join(sentence(rng, rng.randint(6, 30)) for _ in range(2))}
                )
                messages.append(
                    {"role": "assistant", "content": " ".join(sentence(rng, rng.randint(8, 40)) for _ in range(3))}
                )
            handle.write(json.dumps({"messages": messages}) + "\n")


def run_tunesmith(path: Path, tokenizer) -> tuple[float, list]:
    """What a training run does with its data: read, check (errors, duplicates, statistics) and tokenise."""
    start = time.perf_counter()
    examples = prepare_data(str(path), tokenizer, DataOptions(max_length=4096)).train
    return time.perf_counter() - start, examples


def run_trl(path: Path, tokenizer, trainer: SFTTrainer, assistant_only: bool) -> tuple[float, datasets.Dataset]:
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(), max_length=4096, assistant_only_loss=assistant_only, report_to=[], use_cpu=True
    )
    start = time.perf_counter()
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    prepared = trainer._prepare_dataset(dataset, tokenizer, args, False, None, "train")
    return time.perf_counter() - start, prepared


def tiny_trainer(tokenizer, template: str | None) -> SFTTrainer:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    tokenizer.chat_template = template or tokenizer.chat_template
    small = datasets.Dataset.from_list(
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    )
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(),
        report_to=[],
        use_cpu=True,
        max_length=4096,
        assistant_only_loss=template is not None,
    )
    return SFTTrainer(model=LlamaForCausalLM(config), args=args, train_dataset=small, processing_class=tokenizer)


def agreement(ours: list, theirs: datasets.Dataset) -> float:
    same = sum(
        a.input_ids.tolist() == b["input_ids"] and a.labels.tolist() == b["labels"] for a, b in zip(ours, theirs)
    )
    return same / len(ours)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    datasets.disable_caching()
    transformers.utils.logging.set_verbosity_error()
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    trl_tokenizer = load_tokenizer(DEFAULT_MODEL)
    folder = Path(tempfile.mkdtemp())
    path = folder / "chat.jsonl"
    make_data(path, options.examples)
    plain, masked = tiny_trainer(trl_tokenizer, None), None
    results: dict[str, list[float]] = {"tunesmith": [], "trl (all tokens)": [], "trl (assistant_only_loss)": []}
    for _ in range(options.repeat):
        seconds, ours = run_tunesmith(path, tokenizer)
        results["tunesmith"].append(seconds)
        results["trl (all tokens)"].append(run_trl(path, trl_tokenizer, plain, False)[0])
        masked = masked or tiny_trainer(load_tokenizer(DEFAULT_MODEL), GENERATION_TEMPLATE)
        seconds, theirs = run_trl(path, masked.processing_class, masked, True)
        results["trl (assistant_only_loss)"].append(seconds)
    base = statistics.median(results["tunesmith"])
    print(
        f"{options.examples} chat examples, torch {torch.__version__} threads {torch.get_num_threads()}, "
        f"median of {options.repeat}"
    )
    print("| pipeline | seconds | examples/s | tunesmith speed-up |")
    print("|---|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {options.examples / median:,.0f} | {median / base:.1f}x |")
    print(f"identical ids and labels vs TRL assistant_only_loss: {agreement(ours, theirs):.1%} of examples")


if __name__ == "__main__":
    main()
