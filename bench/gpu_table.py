"""docs/gpu.md's table: memory from the plan function (tunesmith/training/fit.py) per model size and method, and a
projected speed on one H100 from FLOPs per token at an assumed MFU (a projection, not a measurement).

    .venv/bin/python -m bench.gpu_table [--mfu 0.4] [--peak 989e12]
"""

from __future__ import annotations

import argparse

from tunesmith.training.fit import GIB, Shape, choose_fit

MODELS = {
    "Qwen2.5-0.5B": Shape(24, 896, 4864, 151936, heads=14, kv_heads=2, head_dim=64, tied=True),
    "Llama-3.2-1B": Shape(16, 2048, 8192, 128256, heads=32, kv_heads=8, head_dim=64, tied=True),
    "Llama-3.2-3B": Shape(28, 3072, 8192, 128256, heads=24, kv_heads=8, head_dim=128, tied=True),
    "Qwen2.5-7B": Shape(28, 3584, 18944, 152064, heads=28, kv_heads=4, head_dim=128, tied=False),
    "Llama-3.1-8B": Shape(32, 4096, 14336, 128256, heads=32, kv_heads=8, head_dim=128, tied=False),
}
RUNS = (("LoRA bf16", "lora", "none"), ("QLoRA 4-bit", "lora", "4bit"), ("full bf16", "full", "none"))
GPUS = (("24 GB", 24), ("80 GB", 80))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mfu", type=float, default=0.4)
    parser.add_argument("--peak", type=float, default=989e12)
    args = parser.parse_args()
    head = "| model | run | " + " | ".join(f"on {name}: batch tokens, checkpointing, GiB" for name, _ in GPUS)
    print(head + " | projected tokens/s on one H100 |")
    print("|---|---|" + "---|" * len(GPUS) + "---|")
    for model, shape in MODELS.items():
        for label, method, quantize in RUNS:
            cells = []
            for _, gib in GPUS:
                fit = choose_fit(shape, method=method, precision="bf16", available=gib * GIB, quantize=quantize)
                where = "" if fit.fits else " (does not fit)"
                cells.append(f"{fit.batch_tokens}, {'on' if fit.checkpointing else 'off'}, "
                             f"{fit.resident / GIB:.1f}{where}")  # fmt: skip
            flops = (6 if method == "full" else 4) * shape.params
            print(f"| {model} | {label} | " + " | ".join(cells) + f" | {args.peak * args.mfu / flops:,.0f} |")


if __name__ == "__main__":
    main()
