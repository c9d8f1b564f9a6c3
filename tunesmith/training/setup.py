"""Model, adapter and optimiser for a run: LoRA, DoRA or every weight; precision chosen by device."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path

import torch
import torch._dynamo.config
import torch._functorch.config
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

from tunesmith.config import LoraSettings, RunConfig
from tunesmith.errors import ConfigError
from tunesmith.models.load import load_model
from tunesmith.runs import ADAPTER_WEIGHTS
from tunesmith.training.loss import causal_lm
from tunesmith.training.precision import Precision, check_optimizer, check_quantize, quantization_config

ACTIVATION_MEMORY_BUDGET = 0.8
"""Share of the saved activations compiled layers keep; the rest is recomputed in backward (36% less memory for
LoRA on SmolLM2-135M, and no slower)."""


@dataclass(frozen=True)
class ModelSpec:
    """What building the model to train reads of the settings (RunConfig's fields of the same names)."""

    model: str
    """The base model."""
    method: str = "lora"
    """lora, dora or full."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """The adapter of lora and dora."""
    device: str = "auto"
    """Where the model lives."""
    trust_remote_code: bool = False
    """Run the model repository's own code."""
    activation_checkpointing: bool = False
    """Recompute activations in backward."""
    compile: str = "off"
    """on compiles each decoder layer."""
    neftune_alpha: float = 0.0
    """NEFTune noise on the input embeddings while training."""
    quantize: str = "none"
    """none, or 4bit / 8bit: the frozen base through bitsandbytes (QLoRA)."""
    start_from: str | None = None
    """An earlier run's final/ to continue from."""

    @classmethod
    def of(cls, config: RunConfig) -> ModelSpec:
        values = {f.name: getattr(config, f.name) for f in fields(cls)}
        values["activation_checkpointing"] = config.activation_checkpointing is True  # auto: as resolve_plan chose
        return cls(**values)


def build_model(config: ModelSpec, precision: Precision) -> torch.nn.Module:
    """The model to train. Adapter runs keep the frozen base in the compute dtype (or quantised: QLoRA), the
    adapter in fp32."""
    adapter = config.method in ("lora", "dora")
    check_quantize(config.quantize, config.method, precision.device)
    dtype = str(precision.compute).removeprefix("torch.") if adapter else "float32"
    weights = config.start_from if config.start_from and not adapter else config.model
    quantized = quantization_config(config.quantize, precision.compute) if config.quantize != "none" else None
    model = load_model(
        weights,
        device=str(precision.device),
        dtype=dtype,
        trust_remote_code=config.trust_remote_code,
        quantization=quantized,
    )
    model.config.use_cache = False
    if quantized is not None and config.activation_checkpointing:
        # peft's prepare_model_for_kbit_training would also cast the embeddings and head to fp32 (4 GB more for a
        # 128k vocabulary): they stay in the compute dtype, frozen; checkpointing needs inputs that want gradients
        model.enable_input_require_grads()
    if config.activation_checkpointing:
        if config.compile == "on":
            raise ConfigError("compile on and activation_checkpointing cannot be used together", hint="--compile off")
        model.activation_checkpointing_enable()  # non-reentrant checkpoints around each decoder layer
    if not adapter:
        model.train()
        add_embedding_noise(model, config.neftune_alpha)
        return compile_layers(model) if config.compile == "on" else model
    targets: str | list[str] = "all-linear" if config.lora.targets == ("all-linear",) else list(config.lora.targets)
    lora = LoraConfig(
        r=config.lora.rank,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets,
        use_dora=config.method == "dora",
        use_rslora=config.lora.rslora,
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"lora.targets: {exc}", hint="use all-linear or names such as q_proj, v_proj") from None
    if config.start_from:
        load_adapter(peft_model, Path(config.start_from))
    peft_model.train()
    add_embedding_noise(peft_model, config.neftune_alpha)
    return compile_layers(peft_model) if config.compile == "on" else peft_model


def load_adapter(model: torch.nn.Module, folder: Path) -> None:
    """Put a saved adapter's weights (an earlier run's final/) into the adapter just made, which must have the same
    shape: same model, method, rank and targets."""
    file = folder / ADAPTER_WEIGHTS
    if not file.is_file():
        raise ConfigError(
            f"start_from {folder}: no {ADAPTER_WEIGHTS}, so it is not the final/ of a LoRA or DoRA run",
            hint="pass a run's final/ folder trained with the same method",
        )
    state = load_file(str(file))
    misfit = ConfigError(
        f"start_from {folder}: its adapter does not fit this run's (another model, method, rank or targets)",
        hint="use the same model, method, lora.rank and lora.targets as the run it comes from",
    )
    try:
        result = set_peft_model_state_dict(model, state)
    except RuntimeError:  # a tensor of another shape
        raise misfit from None
    if result.unexpected_keys or len(state) != len(get_peft_model_state_dict(model)):
        raise misfit


def _neftune_hook(alpha: float, module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
    if not module.training:
        return output
    scale = alpha / math.sqrt(output.shape[-2] * output.shape[-1])
    return output + torch.empty_like(output).uniform_(-scale, scale)


def add_embedding_noise(model: torch.nn.Module, alpha: float) -> None:
    """NEFTune: noise on the input embeddings in training mode only (evaluation and generation see none)."""
    if alpha > 0:
        causal_lm(model).get_input_embeddings().register_forward_hook(partial(_neftune_hook, alpha))


def compiler_available() -> bool:
    """torch.compile can build kernels here: a C++ compiler for CPU (inductor), or a CUDA device (triton)."""
    return torch.cuda.is_available() or shutil.which(os.environ.get("CXX", "g++")) is not None


@contextmanager
def compiler_settings() -> Iterator[None]:
    """The torch compiler's settings for a run, set for its duration only (they are process-wide in torch).

    Python floats in the layers (norm epsilons, adapter scales) are compiled in as constants: left symbolic,
    inductor restarts the first compile for them, which cost 4.5 s here. The partitioner may recompute cheap
    operations in backward instead of keeping their outputs (ACTIVATION_MEMORY_BUDGET).
    """
    with (
        torch._dynamo.config.patch(specialize_float=True),
        torch._functorch.config.patch(activation_memory_budget=ACTIVATION_MEMORY_BUDGET),
    ):
        yield


def compile_layers(model: torch.nn.Module) -> torch.nn.Module:
    """Compile each decoder layer in place ("regional" compilation: the layers share one compiled graph).

    Shapes are dynamic, so batches of other lengths do not recompile. The first layer's input is made to require a
    gradient like every other layer's, so it does not compile a graph of its own. Compiling happens at the first
    call: make it under `compiler_settings()`. Models without a `layers` list run as is.
    """
    lm = causal_lm(model)
    layers = getattr(lm.get_decoder(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        return model
    lm.enable_input_require_grads()
    for layer in layers:
        layer.compile(dynamic=True)
    return model


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters the optimiser updates, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float, lr_scale: float) -> list[dict]:
    decay = [p for _, p in params if p.ndim >= 2]
    rest = [p for _, p in params if p.ndim < 2]
    return [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale},
        {"params": rest, "weight_decay": 0.0, "lr_scale": lr_scale},
    ]


def build_optimizer(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float = 0.0,
    b_lr_ratio: float = 1.0,
    kind: str = "adamw",
) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and adapter magnitudes (1-d tensors); LoRA+ gives the B matrices
    `b_lr_ratio` times the learning rate (a group's `lr_scale`, applied by `set_learning_rate`). `kind` adamw_8bit
    and paged_adamw_8bit are bitsandbytes' (moments in 8 bits; paged: moved to CPU memory under pressure)."""
    params = list(trainable(model).items())
    if b_lr_ratio == 1.0:
        groups = _groups(params, weight_decay, 1.0)
    else:
        b_matrices = [(n, p) for n, p in params if ".lora_B." in n]
        others = [(n, p) for n, p in params if ".lora_B." not in n]
        groups = _groups(others, weight_decay, 1.0) + _groups(b_matrices, weight_decay, b_lr_ratio)
    if kind != "adamw":
        check_optimizer(kind, next(iter(trainable(model).values())).device)
        import bitsandbytes as bnb

        chosen = bnb.optim.PagedAdamW8bit if kind == "paged_adamw_8bit" else bnb.optim.AdamW8bit
        return chosen(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, foreach=True)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The step's learning rate on every group, times the group's scale (LoRA+)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints from before LoRA+ have no scale


def learning_rate_at(step: int, total: int, warmup: int, peak: float, schedule: str) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up, then cosine, linear or constant."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return peak * (1.0 - progress)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
