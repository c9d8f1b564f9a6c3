"""Whether vLLM can serve an adapter export with `--enable-lora`, by the rules its LoRA loader applies
(vllm/lora/peft_helper.py, lora_model.py and its LoRA config, vLLM 0.34): no DoRA, no `modules_to_save` (but a
classifier's), no bias, no PEFT variant that changes the base weights or the layers (PiSSA/OLoRA/CorDA/LoftQ inits,
aLoRA, layer replication, BD-LoRA, QALoRA), linear target modules only, every rank (`rank_pattern` too) within
`--max-lora-rank` (which takes 1, 8, 16, 32, 64, 128, 256, 320 or 512; 16 by default).

vLLM's engine needs a GPU and its wheels bring a CUDA torch, so the suite checks these rules here; bench/vllm_adapter.py
runs vLLM's own loader code (PEFTHelper, LoRAModel.from_local_checkpoint) on CPU against them, with the verdicts and
the loaded weights compared (docs/export.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM's --max-lora-rank accepts."""
LINEAR_MODULES = {
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "qkv_proj",
    "gate_up_proj",
}
"""Module names vLLM's decoder models map LoRA onto (packed as qkv_proj and gate_up_proj where the model packs them)."""


PLAIN_INITS = {"gaussian", "eva", "orthogonal", "mica", "lora_ga"}
"""init_lora_weights values that only set the adapter's first weights, so that a saved adapter is a plain LoRA."""
VARIANTS = {
    "alora_invocation_tokens": "Activated LoRA (aLoRA)",
    "layer_replication": "layer_replication",
    "use_bdlora": "block-diagonal LoRA (BD-LoRA)",
    "use_qalora": "QALoRA",
}
"""PEFT features vLLM's loader refuses, by their adapter_config.json key."""


def vllm_problems(config: dict[str, Any], modules: Iterable[str] | None = None) -> list[str]:
    """What in an adapter (its adapter_config.json, and the modules its weights are for where given, as
    `adapter_modules` reads them) vLLM's loader refuses; empty: vLLM can serve it."""
    problems = []
    if config.get("use_dora"):
        problems.append("vLLM does not serve DoRA adapters")
    if saved := [m for m in config.get("modules_to_save") or [] if m not in ("classifier", "score")]:
        problems.append(f"vLLM refuses modules_to_save ({', '.join(saved)})")
    if config.get("bias", "none") != "none":
        problems.append(f"vLLM serves adapters without bias (this one has bias {config['bias']!r})")
    if config.get("lora_bias"):
        problems.append("vLLM serves adapters without bias (this one has lora_bias)")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in PLAIN_INITS:
        problems.append(f"vLLM refuses init_lora_weights={init!r} (it changes the base weights: convert it to LoRA)")
    if used := [name for key, name in VARIANTS.items() if config.get(key)]:
        problems.append(f"vLLM does not serve {', '.join(used)}")
    # vLLM reads the modules from the weights' names (the config's list or pattern only guided PEFT), by last part
    targets = modules if modules is not None else config.get("target_modules") or []
    if isinstance(targets, str):
        pass  # a pattern: only the weights' names say which modules it matched
    elif unknown := sorted({t.split(".")[-1] for t in targets} - LINEAR_MODULES - {"classifier", "score"}):
        problems.append(f"vLLM applies LoRA to linear layers only, not {', '.join(unknown)}")
    if largest_rank(config) > MAX_LORA_RANKS[-1]:
        problems.append(f"rank {largest_rank(config)} is above vLLM's largest --max-lora-rank ({MAX_LORA_RANKS[-1]})")
    return problems


def largest_rank(config: dict[str, Any]) -> int:
    """The largest rank of any module (`r`, or a `rank_pattern` override): what --max-lora-rank must hold."""
    return max([int(config.get("r", 0)), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def max_lora_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds an adapter of this rank."""
    return next(m for m in MAX_LORA_RANKS if m >= rank)


def serve_command(base: str, name: str, folder: str, rank: int) -> str:
    """The vllm serve command line for the base model with this adapter."""
    return f"vllm serve {base} --enable-lora --max-lora-rank {max_lora_rank(rank)} --lora-modules {name}={folder}"


def adapter_modules(folder: Path) -> list[str]:
    """The modules an adapter's weights are for, as vLLM names them from adapter_model.safetensors (each weight's
    name without PEFT's prefix and its lora_A/lora_B part)."""
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
    return sorted({name.removeprefix("base_model.model.").split(".lora_")[0] for name in names})
