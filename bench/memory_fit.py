"""The memory plan (tunesmith/training/fit.py) against the peak a real training step reaches: on CPU the peak
resident set above the process's size before the model loads, on CUDA torch.cuda.max_memory_allocated.

    python bench/memory_fit.py [--model M] [--device cpu|cuda] [--quantize 4bit] [--json OUT]

Each case runs in a child process (a fresh peak), three optimizer steps of random tokens; on CPU with glibc's
mmap threshold fixed (CPU_MMAP_THRESHOLD).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CPU_MMAP_THRESHOLD = 1024 * 1024
"""glibc serves larger blocks by mmap and returns them when freed, so the resident set is what the step holds; with
its default (dynamic) threshold freed activations stay resident and the peak RSS of a step runs 2-8x higher."""
CASES = [
    {"method": "lora", "precision": "fp32", "batch_tokens": 4096, "length": 512, "checkpointing": False},
    {"method": "lora", "precision": "fp32", "batch_tokens": 4096, "length": 128, "checkpointing": False},
    {"method": "lora", "precision": "fp32", "batch_tokens": 4096, "length": 512, "checkpointing": True},
    {"method": "lora", "precision": "bf16", "batch_tokens": 4096, "length": 512, "checkpointing": False},
    {"method": "full", "precision": "fp32", "batch_tokens": 1024, "length": 512, "checkpointing": False},
    {"method": "full", "precision": "bf16", "batch_tokens": 2048, "length": 512, "checkpointing": False},
]


def _resident() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_resident() -> int:
    """The resident set's high-water mark since the last reset (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(model: str, device: str, case: dict, quantize: str = "none") -> dict:
    """Run the case here (call in a fresh process): the measured peak and the plan's parts, in bytes."""
    import numpy as np
    import torch

    from tunesmith.models.load import local_path
    from tunesmith.tokenize.batches import collate
    from tunesmith.tokenize.encode import Example
    from tunesmith.training.fit import Shape, memory_needed
    from tunesmith.training.loss import supervised_loss
    from tunesmith.training.precision import backward, choose_precision
    from tunesmith.training.setup import ModelSpec, build_model, build_optimizer

    precision = choose_precision(device, case["precision"])
    model = local_path(model)  # a GGUF source is converted once, before the baseline: its memory is not the step's
    spec = ModelSpec(model, case["method"], device=device, quantize=quantize)
    spec = ModelSpec(**{**spec.__dict__, "activation_checkpointing": case["checkpointing"]})
    before = _resident()
    model_ = build_model(spec, precision)
    optimizer = build_optimizer(model_, 1e-5)
    scaler = precision.scaler()
    length = case["length"]
    rows = case["batch_tokens"] // length
    rng = np.random.default_rng(0)
    vocab = model_.config.vocab_size
    examples = [
        Example(i, rng.integers(0, vocab, length).astype(np.int32), rng.integers(0, vocab, length).astype(np.int32))
        for i in range(rows)
    ]
    batch = collate(examples, pad_id=0)
    if precision.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:  # loading may peak above a step with few activations: count from here (Linux resets VmHWM on "5")
        Path("/proc/self/clear_refs").write_text("5")
    for _ in range(case.get("steps", 3)):
        with precision.autocast():
            loss, count = supervised_loss(model_, batch)
        backward(scaler, loss / count)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    cuda = precision.device.type == "cuda"
    peak = torch.cuda.max_memory_allocated() if cuda else _peak_resident() - before
    plan = memory_needed(
        Shape.of(model_.config),
        method=case["method"],
        precision=case["precision"],
        quantize=quantize,
        batch_tokens=case["batch_tokens"],
        checkpointing=case["checkpointing"],
    )
    return {**case, "quantize": quantize, "measured": peak, "planned": plan.total, "parts": plan.__dict__}


def run_case(model: str, device: str, case: dict, quantize: str = "none") -> dict:
    """`measure` in a fresh child process (on CPU with CPU_MMAP_THRESHOLD), with planned / measured as ratio."""
    command = [sys.executable, __file__, "--model", model, "--device", device, "--case", json.dumps(case)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(CPU_MMAP_THRESHOLD)}
    done = subprocess.run([*command, "--quantize", quantize], capture_output=True, text=True, check=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result | {"ratio": result["planned"] / result["measured"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quantize", default="none")
    parser.add_argument("--precision", default=None, help="only the cases of this precision")
    parser.add_argument("--random", default=None, help="a random model of this bench.gpu_lora shape instead of --model")
    parser.add_argument("--first", type=int, default=None, help="only the first N cases (the script's dry run)")
    parser.add_argument("--case", default=None, help="one case as JSON (run here, in this process)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(measure(args.model, args.device, json.loads(args.case), args.quantize)))
        return
    model = args.model
    if args.random:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from bench.gpu_lora import make_model

        model = str(make_model(args.random, Path(tempfile.mkdtemp(prefix="memory-fit-")) / "model"))
    results = []
    for case in [c for c in CASES if args.precision in (None, c["precision"])][: args.first]:
        result = run_case(model, args.device, case, args.quantize)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "parts"}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
