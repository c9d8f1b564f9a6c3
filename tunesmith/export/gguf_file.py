"""A GGUF file for llama.cpp and Ollama, written with the `gguf` package from a (merged) transformers model.

Layouts: llama (Llama 3.x with its llama3 rope as llama.cpp's `rope_freqs`; linear and YaRN rope scaling as
keys), mistral (written as llama, as llama.cpp does), qwen2, qwen3, gemma2, gemma3 (text), phi3, each as llama.cpp's
converter writes it (Gemma's norms stored as 1 + w, llama's q and k rows interleaved); the tokenizer as
export/gguf_vocab.py writes it.

Weights are f32, f16, or one of llama.cpp's block types that the `gguf` package quantises (q8_0, q4_0, q4_1, q5_0,
q5_1), with llama.cpp's rules (`tensor_type`). The file is streamed: every tensor's type and size go into the
header first, then each tensor is converted and written in turn, so exporting holds the model and one tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.errors import ExportError
from tunesmith.export.gguf_vocab import add_tokenizer, llama_cpp_name

ARCHITECTURES = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "mistral": gguf.MODEL_ARCH.LLAMA,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
    "gemma2": gguf.MODEL_ARCH.GEMMA2,
    "gemma3_text": gguf.MODEL_ARCH.GEMMA3,
    "phi3": gguf.MODEL_ARCH.PHI3,
}
NORM_PLUS_ONE = (gguf.MODEL_ARCH.GEMMA2, gguf.MODEL_ARCH.GEMMA3)
"""Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by w, so its converter stores 1 + w."""
Q = gguf.GGMLQuantizationType
FILE_TYPES = {
    "f32": (gguf.LlamaFileType.ALL_F32, Q.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
    "q5_1": (gguf.LlamaFileType.MOSTLY_Q5_1, Q.Q5_1),
    "q5_0": (gguf.LlamaFileType.MOSTLY_Q5_0, Q.Q5_0),
    "q4_1": (gguf.LlamaFileType.MOSTLY_Q4_1, Q.Q4_1),
    "q4_0": (gguf.LlamaFileType.MOSTLY_Q4_0, Q.Q4_0),
}
"""--dtype of a GGUF export: the file type it declares, the type of its 2-D weights."""
GGUF_DTYPES = tuple(FILE_TYPES)
_HEAD_NAMES = ("output.weight", "token_embd.weight")


def _rope(config: object) -> dict:
    """The rope parameters of full-attention layers (Gemma 3 keeps one set per layer type)."""
    rope = dict(getattr(config, "rope_parameters", None) or {})
    return dict(rope.get("full_attention", rope))


def _architecture(model: PreTrainedModel) -> gguf.MODEL_ARCH:
    kind = model.config.model_type
    if kind not in ARCHITECTURES:
        raise ExportError(
            f"GGUF export supports {', '.join(ARCHITECTURES)} models; this one is {kind!r}",
            hint="export it with --format merged (safetensors) instead",
        )
    rope_type = _rope(model.config).get("rope_type", "default")
    if rope_type not in ("default", "linear", "yarn") and not (kind == "llama" and rope_type == "llama3"):
        raise ExportError(
            f"GGUF export does not write {rope_type} rope scaling of {kind} models yet",
            hint="export it with --format merged (safetensors) instead",
        )
    return ARCHITECTURES[kind]


def _head_dim(config: object) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def llama3_rope_factors(config: object) -> np.ndarray:
    """llama.cpp's `rope_freqs` for Llama 3.1+'s rope: the divisor of each base frequency (HF's inv_freq is the base
    inv_freq divided by it), as its converter computes them."""
    rope = _rope(config)
    dim = _head_dim(config)
    freqs = 1.0 / (rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    wavelen = 2 * math.pi / freqs
    smooth = (old / wavelen - low) / (high - low)
    middle = 1 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old / high, 1.0, np.where(wavelen > old / low, factor, middle))
    return out.astype(np.float32)


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotary layout (halves) back to llama.cpp's (interleaved pairs), for q and k of llama models."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@dataclass(frozen=True)
class _Source:
    """One tensor of the file: its GGUF name, shape, and how to make it (float32) when its turn comes."""

    name: str
    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]


def _converted(tensor: torch.Tensor, hf_name: str, arch: gguf.MODEL_ARCH, config: object) -> np.ndarray:
    data = tensor.detach().to(torch.float32).cpu().numpy()
    if arch in NORM_PLUS_ONE and hf_name.endswith("norm.weight"):
        data = data + np.float32(1.0)
    if arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith("q_proj.weight"):
        data = _permute(data, config.num_attention_heads)  # type: ignore[attr-defined]
    elif arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith("k_proj.weight"):
        data = _permute(data, config.num_key_value_heads)  # type: ignore[attr-defined]
    return data


def _sources(model: PreTrainedModel, arch: gguf.MODEL_ARCH) -> list[_Source]:
    config = model.config
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out = []
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ExportError(f"tensor {name} has no GGUF name for {arch.name.lower()}", hint="use --format merged")
        make = partial(_converted, tensor, name, arch, config)
        out.append(_Source(target, tuple(tensor.shape), make))
    if _rope(config).get("rope_type") == "llama3":
        factors = llama3_rope_factors(config)
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        out.append(_Source(name, factors.shape, lambda: factors))
    return out


def tensor_type(name: str, shape: tuple[int, ...], dtype: str, tied: bool) -> gguf.GGMLQuantizationType:
    """A tensor's type in a `dtype` file, by llama.cpp's rules: 1-D tensors (norms, biases, rope factors) f32; under
    the 4- and 5-bit types the output head (the token embeddings when they are tied to it) q8_0, as llama-quantize
    keeps it higher (at Q6_K, which the `gguf` package cannot write); rows that are not whole blocks f16."""
    chosen = FILE_TYPES[dtype][1]
    if len(shape) < 2:
        return Q.F32
    if chosen in (Q.F32, Q.F16):
        return chosen
    head = name == "output.weight" or (tied and name == "token_embd.weight")
    if head and chosen != Q.Q8_0:
        chosen = Q.Q8_0
    block, _ = gguf.GGML_QUANT_SIZES[chosen]
    return Q.F16 if shape[-1] % block else chosen


def _encoded(data: np.ndarray, kind: gguf.GGMLQuantizationType) -> np.ndarray:
    if kind == Q.F32:
        return data.astype(np.float32, copy=False)
    if kind == Q.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, kind)


def _nbytes(shape: tuple[int, ...], kind: gguf.GGMLQuantizationType) -> int:
    return int(np.prod(gguf.quant_shape_to_byte_shape(shape, kind)))


def _add_rope_scaling(writer: gguf.GGUFWriter, config: object) -> None:
    """Linear and YaRN rope scaling as llama.cpp's converter writes them (Llama 3's is its rope_freqs tensor)."""
    rope = _rope(config)
    kind, factor = rope.get("rope_type"), rope.get("factor")
    if kind == "linear" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    elif kind == "yarn" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(factor)
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        if (attention := rope.get("attention_factor")) is not None:
            writer.add_rope_scaling_yarn_attn_factor(attention)
        for key, add in (
            ("extrapolation_factor", writer.add_rope_scaling_yarn_ext_factor),
            ("beta_fast", writer.add_rope_scaling_yarn_beta_fast),
            ("beta_slow", writer.add_rope_scaling_yarn_beta_slow),
        ):
            if rope.get(key) is not None:
                add(rope[key])


def _add_family_keys(writer: gguf.GGUFWriter, arch: gguf.MODEL_ARCH, config: object) -> None:
    """What a family's attention needs besides the common keys: head sizes, soft-capping, sliding windows."""
    writer.add_key_length(_head_dim(config))
    writer.add_value_length(_head_dim(config))
    if arch == gguf.MODEL_ARCH.GEMMA2:
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
    if arch in NORM_PLUS_ONE and getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
    if arch in (*NORM_PLUS_ONE, gguf.MODEL_ARCH.PHI3) and getattr(config, "sliding_window", None):
        writer.add_sliding_window(config.sliding_window)


def write_gguf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    dtype: str,
    name: str,
    sentencepiece: Path | None = None,
) -> None:
    """Write `model` with its tokenizer and chat template to `path`, its weights in `dtype` (GGUF_DTYPES); a
    SentencePiece vocabulary's pieces and scores from `sentencepiece` (the model's tokenizer.model) where given."""
    arch = _architecture(model)
    file_type = FILE_TYPES[dtype][0]
    config = model.config
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(llama_cpp_name(name, tokenizer))
    writer.add_file_type(file_type)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    _add_rope_scaling(writer, config)
    _add_family_keys(writer, arch, config)
    add_tokenizer(writer, tokenizer, model, sentencepiece)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    sources = _sources(model, arch)
    kinds = [tensor_type(source.name, source.shape, dtype, tied) for source in sources]
    for source, kind in zip(sources, kinds, strict=True):
        # a float32 placeholder dtype: with raw_dtype given, the shape stays the logical one
        writer.add_tensor_info(source.name, source.shape, np.dtype(np.float32), _nbytes(source.shape, kind), kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for source, kind in zip(sources, kinds, strict=True):
        writer.write_tensor_data(_encoded(source.make(), kind))
    writer.close()
