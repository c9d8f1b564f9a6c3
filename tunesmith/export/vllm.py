"""Whether vLLM can serve an adapter export with `--enable-lora`, by the rules its LoRA loader applies
(vllm/lora/peft_helper.py and its LoRA config): no DoRA, no `modules_to_save`, no bias, linear target modules only,
a rank within `--max-lora-rank` (which takes 1, 8, 16, 32, 64, 128, 256, 320 or 512; 16 by default).

vLLM itself does not install on these machines (its wheels bring CUDA builds of torch), so these are its rules
restated and tested here, not vLLM run.
"""

from __future__ import annotations

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


def vllm_problems(config: dict[str, Any]) -> list[str]:
    """What in an adapter_config.json vLLM's loader refuses (empty: vLLM can serve it)."""
    problems = []
    if config.get("use_dora"):
        problems.append("vLLM does not serve DoRA adapters")
    if config.get("modules_to_save"):
        problems.append(f"vLLM refuses modules_to_save ({', '.join(config['modules_to_save'])})")
    if config.get("bias", "none") != "none":
        problems.append(f"vLLM serves adapters without bias (this one has bias {config['bias']!r})")
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        problems.append(f"vLLM needs target_modules as a list of names, not the pattern {targets!r}")
    elif unknown := sorted({t.split(".")[-1] for t in targets} - LINEAR_MODULES):  # vLLM reads the last part
        problems.append(f"vLLM applies LoRA to linear layers only, not {', '.join(unknown)}")
    if int(config.get("r", 0)) > MAX_LORA_RANKS[-1]:
        problems.append(f"rank {config['r']} is above vLLM's largest --max-lora-rank ({MAX_LORA_RANKS[-1]})")
    return problems


def max_lora_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds an adapter of this rank."""
    return next(m for m in MAX_LORA_RANKS if m >= rank)


def serve_command(base: str, name: str, folder: str, rank: int) -> str:
    """The vllm serve command line for the base model with this adapter."""
    return f"vllm serve {base} --enable-lora --max-lora-rank {max_lora_rank(rank)} --lora-modules {name}={folder}"
