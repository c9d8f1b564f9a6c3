"""A GGUF file for llama.cpp and Ollama, written with the `gguf` package from a (merged) transformers model.

Llama-family layouts only: llama, mistral (written as llama, as llama.cpp does) and qwen2. Tokenizers must be
byte-level BPE (SmolLM2, Llama 3, Qwen2), written as `gpt2` with their merges, special tokens and chat template.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.errors import ExportError
from tunesmith.tokenize.encode import plain_backend

ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA, "mistral": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}
FILE_TYPES = {"f32": (gguf.LlamaFileType.ALL_F32, np.float32), "f16": (gguf.LlamaFileType.MOSTLY_F16, np.float16)}
PRE_TOKENIZERS = {"qwen2": "qwen2", "smollm": "smollm"}


def _architecture(model: PreTrainedModel) -> gguf.MODEL_ARCH:
    kind = model.config.model_type
    if kind not in ARCHITECTURES:
        raise ExportError(
            f"GGUF export supports {', '.join(ARCHITECTURES)} models; this one is {kind!r}",
            hint="export it with --format merged (safetensors) instead",
        )
    rope = dict(getattr(model.config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ExportError(
            f"GGUF export does not write rope scaling ({rope['rope_type']}) yet",
            hint="export it with --format merged (safetensors) instead",
        )
    return ARCHITECTURES[kind]


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotary layout (halves) back to llama.cpp's (interleaved pairs), for q and k of llama models."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tensors(model: PreTrainedModel, arch: gguf.MODEL_ARCH, dtype: type) -> list[tuple[str, np.ndarray]]:
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
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if arch == gguf.MODEL_ARCH.LLAMA and name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif arch == gguf.MODEL_ARCH.LLAMA and name.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        out.append((target, data.astype(dtype) if data.ndim == 2 else data))  # norms and biases stay f32
    return out


def _token_types(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    tokens, types = [], []
    added = tokenizer.added_tokens_decoder
    known = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for i in range(vocab_size):
        if i >= len(known) or known[i] is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(known[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    backend = plain_backend(tokenizer)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    if spec.get("model", {}).get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise ExportError(
            "GGUF export supports byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen2); this one is not",
            hint="export it with --format merged (safetensors) instead",
        )
    vocab_size = model.config.vocab_size
    tokens, types = _token_types(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZERS.get(_family(model, tokenizer), "default"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    special.add_to_gguf(writer, quiet=True)


def _family(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    if model.config.model_type == "qwen2":
        return "qwen2"
    return "smollm" if "<|im_start|>" in tokenizer.get_vocab() and model.config.vocab_size == 49152 else "default"


def write_gguf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path, dtype: str, name: str) -> None:
    """Write `model` with its tokenizer and chat template to `path` (f32 or f16 weights)."""
    arch = _architecture(model)
    file_type, numpy_dtype = FILE_TYPES[dtype]
    config = model.config
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    _add_tokenizer(writer, tokenizer, model)
    for tensor_name, data in _tensors(model, arch, numpy_dtype):
        writer.add_tensor(tensor_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
