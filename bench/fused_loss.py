"""The output head and its cross-entropy, fused: tunesmith's (training/fused_ce.py) against Liger Kernel's
fused linear cross-entropy where it is installed (Triton: CUDA only), and the plain head + cross-entropy: time of a
forward and backward, and the peak memory it adds, on one shape (Llama-3.2-1B's head by default).

    python -m bench.fused_loss [--rows 16384] [--hidden 2048] [--vocab 128256] [--device cuda] [--json F]

bench/gpu_check.sh runs it; the faster where both run is what the GPU path should use (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F


def _ours(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from tunesmith.training.fused_ce import CHUNK_ROWS, linear_cross_entropy

    return linear_cross_entropy(hidden, weight, targets, CHUNK_ROWS, compiled=hidden.is_cuda)


def _plain(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((hidden @ weight.t()).float(), targets, reduction="sum")


def _liger() -> Callable[..., torch.Tensor] | None:
    if importlib.util.find_spec("liger_kernel") is None:
        return None
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    loss = LigerFusedLinearCrossEntropyLoss(reduction="sum")
    return lambda hidden, weight, targets: loss(weight, hidden, targets)


def _measure(fn: Callable[..., torch.Tensor], args: argparse.Namespace) -> dict[str, float]:
    device, dtype = torch.device(args.device), torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    hidden = torch.randn(args.rows, args.hidden, device=device, dtype=dtype, requires_grad=True)
    weight = torch.randn(args.vocab, args.hidden, device=device, dtype=dtype) * 0.02
    targets = torch.randint(0, args.vocab, (args.rows,), device=device)
    times = []
    for _ in range(4):  # the first warms up (and compiles)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        start = time.perf_counter()
        loss = fn(hidden, weight, targets)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        hidden.grad = None
    peak = (torch.cuda.max_memory_allocated() - base) / 1024**3 if device.type == "cuda" else None
    return {"seconds": sorted(times[1:])[1], "peak_gib": peak, "loss": float(loss.detach())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    kernels: dict[str, Callable[..., torch.Tensor] | None] = {"tunesmith": _ours, "plain": _plain, "liger": _liger()}
    results = {}
    for name, fn in kernels.items():
        if fn is None:
            print(f"{name:10} not installed here")
            continue
        results[name] = _measure(fn, args)
        peak = results[name]["peak_gib"]
        print(f"{name:10} {results[name]['seconds'] * 1000:8.1f} ms  " + (f"{peak:.2f} GiB" if peak else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "shape": vars(args), "results": results}))


if __name__ == "__main__":
    main()
