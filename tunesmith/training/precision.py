"""How a run computes: the device, the autocast dtype, the fp16 loss scaler, and QLoRA's quantised base.

Master weights (and adapters) stay fp32. On CUDA, bf16 autocast where the GPU has bf16 (Ampere and later), else
fp16 autocast with a gradient scaler, so that small gradients do not flush to zero in fp16. On CPU, bf16 where it
measures fast (models/hardware.py), else fp32. Apple's mps computes in fp32 here (its bf16 depends on the OS).
QLoRA (a 4- or 8-bit frozen base) goes through bitsandbytes, which quantises on CUDA only.
"""

from __future__ import annotations

import importlib.util
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.errors import ConfigError
from tunesmith.models.load import pick_device, pick_dtype

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUANTIZE = ("none", "4bit", "8bit")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit")
NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
BY_NAME = {name: dtype for dtype, name in NAMES.items()}


@dataclass(frozen=True)
class Precision:
    """Where and in which dtype a run computes."""

    device: torch.device
    """Where the model lives."""
    compute: torch.dtype
    """fp32, or bf16 / fp16 under autocast."""

    @property
    def name(self) -> str:
        """fp32, bf16 or fp16."""
        return NAMES[self.compute]

    def autocast(self) -> AbstractContextManager[object]:
        if self.compute == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute)

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16's gradient scaler (None for fp32 and bf16, whose range needs none)."""
        return torch.amp.GradScaler(self.device.type) if self.compute == torch.float16 else None


def choose_precision(device: str = "auto", precision: str = "auto") -> Precision:
    """The settings' device and precision (RunConfig.device, RunConfig.precision), "auto" resolved on this machine."""
    chosen = pick_device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is unknown", hint=f"use one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and chosen.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"precision bf16: this GPU ({torch.cuda.get_device_name(chosen)}) has no bf16",
            hint="use --precision fp16 (with a loss scaler) or auto",
        )
    if precision != "auto":
        return Precision(chosen, BY_NAME[precision])
    if chosen.type == "mps":
        return Precision(chosen, torch.float32)
    return Precision(chosen, pick_dtype(chosen))  # cuda: bf16 or fp16; cpu: bf16 where fast, else fp32


def backward(scaler: torch.amp.GradScaler | None, loss: torch.Tensor) -> None:
    """Backpropagate a loss, scaled first under fp16 (the loop unscales the gradients before clipping)."""
    (loss if scaler is None else scaler.scale(loss)).backward()


def bitsandbytes_missing(device: torch.device) -> str | None:
    """Why bitsandbytes cannot quantise here (None when it can)."""
    if device.type != "cuda":
        return f"bitsandbytes quantises on CUDA GPUs only, and this run is on {device.type}"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    return None


def check_quantize(quantize: str, method: str, device: torch.device) -> None:
    """One line, before anything loads, where QLoRA cannot run as asked."""
    if quantize == "none":
        return
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize {quantize!r} is unknown", hint=f"use one of {', '.join(QUANTIZE)}")
    if method == "full":
        raise ConfigError(
            f"quantize {quantize} freezes the base in {quantize}, so it trains an adapter: not method full",
            hint="use --method lora or dora with --quantize",
        )
    missing = bitsandbytes_missing(device)
    if missing:
        raise ConfigError(
            f"quantize {quantize}: {missing}",
            hint="train without --quantize (LoRA on the full-precision base), or on a CUDA machine",
        )


def check_optimizer(optimizer: str, device: torch.device) -> None:
    """8-bit and paged AdamW are bitsandbytes': one line where they cannot run."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer {optimizer!r} is unknown", hint=f"use one of {', '.join(OPTIMIZERS)}")
    missing = bitsandbytes_missing(device) if optimizer != "adamw" else None
    if missing:
        raise ConfigError(f"optimizer {optimizer}: {missing}", hint="use --optimizer adamw")


def quantization_config(quantize: str, compute: torch.dtype) -> Any:
    """bitsandbytes' settings for the frozen base: NF4 with double quantisation computing in the run's dtype, or
    LLM.int8()."""
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute if compute != torch.float32 else torch.bfloat16,
    )
