"""A LoRA adapter as a GGUF file for llama.cpp's `--lora` (and Ollama's ADAPTER), laid out as llama.cpp's
convert_lora_to_gguf.py writes it: `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and for
each adapted weight its A and B as `<tensor>.lora_a` [r x in] and `<tensor>.lora_b` [out x r], under the base
model's GGUF tensor names (llama's q and k rows interleaved in B as in the base file). llama.cpp scales B @ A by
alpha / r: an rsLoRA adapter (alpha / sqrt(r)) is written with alpha x sqrt(r).

DoRA cannot be written: llama.cpp applies B @ A alone, without DoRA's per-column magnitudes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file
from transformers import AutoConfig

from tunesmith.errors import ExportError
from tunesmith.export.gguf_file import ARCHITECTURES, _permute
from tunesmith.runs import ADAPTER_WEIGHTS

GGUF_LORA_NAME = "adapter.gguf"
_PREFIX = "base_model.model."


def _alpha(config: dict) -> float:
    """The alpha that makes llama.cpp's alpha / r the adapter's own scale."""
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    return alpha * math.sqrt(rank) if config.get("use_rslora") else alpha


def _check(config: dict, kind: str) -> None:
    if config.get("use_dora"):
        raise ExportError(
            "a DoRA adapter cannot be a GGUF LoRA: llama.cpp applies B @ A without DoRA's magnitudes",
            hint="export --format gguf (merged) instead",
        )
    if config.get("modules_to_save"):
        raise ExportError(
            f"the adapter also trains whole modules ({', '.join(config['modules_to_save'])}), which a GGUF LoRA "
            "cannot hold",
            hint="export --format gguf (merged) instead",
        )
    if kind not in ARCHITECTURES:
        raise ExportError(
            f"GGUF export supports {', '.join(ARCHITECTURES)} models; this one is {kind!r}",
            hint="export --format adapter (PEFT) instead",
        )


def write_gguf_lora(final: Path, base: Path | str, path: Path) -> None:
    """The adapter in run folder `final` (PEFT) as a GGUF LoRA at `path`; `base`: its base model's folder (its
    config gives the architecture and head counts)."""
    config = json.loads((final / "adapter_config.json").read_text())
    model_config = AutoConfig.from_pretrained(base)
    kind = model_config.model_type
    _check(config, kind)
    arch = ARCHITECTURES[kind]
    names = gguf.get_tensor_name_map(arch, model_config.num_hidden_layers)
    weights = load_file(str(final / ADAPTER_WEIGHTS))
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, _alpha(config))
    for name in sorted(n for n in weights if ".lora_A." in n):
        module = name.removeprefix(_PREFIX).split(".lora_A.")[0]
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise ExportError(f"adapted weight {module} has no GGUF name for {kind}", hint="export --format gguf")
        a = weights[name].astype(np.float32)
        b = weights[name.replace(".lora_A.", ".lora_B.")].astype(np.float32)
        if arch == gguf.MODEL_ARCH.LLAMA and module.endswith("q_proj"):
            b = _permute(b, model_config.num_attention_heads)
        elif arch == gguf.MODEL_ARCH.LLAMA and module.endswith("k_proj"):
            b = _permute(b, model_config.num_key_value_heads)
        writer.add_tensor(target + ".lora_a", np.ascontiguousarray(a))
        writer.add_tensor(target + ".lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
