"""Which dtype this CPU computes fastest, measured once and cached, never guessed from its name or flags.

CPUs differ more than their flags say: with AMX, bf16 matmuls run about 4x fp32; with AVX512-BF16 alone they may run
2-3x (Zen 4) or, where oneDNN emulates them, 2x slower. So tunesmith times a bf16 and an fp32 matmul of a typical
layer's shape on first use and keeps the result in TUNESMITH_HOME/machine.json, per CPU, thread count, torch version
and oneDNN ISA limit.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from functools import lru_cache
from pathlib import Path

import torch

from tunesmith import paths

log = logging.getLogger(__name__)

BF16_MIN_SPEEDUP = 2.0
"""bf16 is chosen when its matmuls run at least this much faster than fp32. Below that a training step gains
nothing: autocast's casts, attention and element-wise work do not speed up (a 2.8x faster bf16 matmul gives a
1.5x faster LoRA step on a Zen 4 EPYC)."""
SHAPE = (1024, 576, 1536)
"""rows x in x out of the timed matmul: a 1k-token batch through a small model's MLP projection."""
REPEATS = 10


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key() -> str:
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    return f"{cpu_name()}|threads={torch.get_num_threads()}|torch={torch.__version__}|isa={isa}"


def _operands(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    rows, inner, out = SHAPE
    rng = torch.Generator().manual_seed(0)  # the global generator is left alone: runs stay reproducible
    return torch.randn(rows, inner, generator=rng).to(dtype), torch.randn(inner, out, generator=rng).to(dtype)


def _seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    start = time.perf_counter()
    a @ b
    return time.perf_counter() - start


CLEAR_MARGIN = 4.0
"""A first timing this many times below BF16_MIN_SPEEDUP decides alone: no noise turns it into a speedup."""


def measure_bf16_speedup() -> float:
    """fp32 matmul time / bf16 matmul time on this CPU (about 0.2 s to measure).

    The two are timed in turn, REPEATS times, and each keeps its best: other work on the machine slows both alike
    and the best times are the least disturbed. Where bf16 is emulated (100x slower on an AVX2-only EPYC, 2.5 s a
    matmul) the first timing is far below the threshold and is the answer: repeating it would cost half a minute.
    """
    fp32, bf16 = _operands(torch.float32), _operands(torch.bfloat16)
    _seconds(*fp32), _seconds(*bf16)  # the first calls prepare the kernels
    times = [(_seconds(*fp32), _seconds(*bf16))]
    if times[0][0] / times[0][1] > BF16_MIN_SPEEDUP / CLEAR_MARGIN:
        times += [(_seconds(*fp32), _seconds(*bf16)) for _ in range(REPEATS - 1)]
    return min(t for t, _ in times) / min(t for _, t in times)


@lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """measure_bf16_speedup, measured once per machine and cached in TUNESMITH_HOME/machine.json."""
    cache = paths.home() / "machine.json"
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):
        known = {}
    key = _key()
    if key not in known:
        known[key] = {"bf16_speedup": round(measure_bf16_speedup(), 3)}
        try:
            paths.write_text_atomic(cache, json.dumps(known, indent=2))
        except OSError as exc:  # a read-only home only costs the measurement next time
            log.warning("could not cache the CPU measurement in %s: %s", cache, exc)
    return float(known[key]["bf16_speedup"])


def cpu_prefers_bf16() -> bool:
    """bf16 matmuls here are at least BF16_MIN_SPEEDUP times faster than fp32."""
    return cpu_bf16_speedup() >= BF16_MIN_SPEEDUP


def attention_implementation(device: torch.device) -> str | None:
    """flash_attention_2 on CUDA where the flash-attn package is installed; else None, which leaves transformers
    its per-model default (sdpa where the model supports it, eager where it needs what sdpa lacks, such as Gemma 2's
    soft-capping)."""
    import importlib.util

    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def free_memory(device: torch.device) -> int | None:
    """Bytes a run may use on the device now: CUDA's free memory, or the system's available memory for CPU (None
    where neither can be read)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
    except OSError:
        return None
    available = fields.get("MemAvailable")
    return int(available.split()[0]) * 1024 if available else None
