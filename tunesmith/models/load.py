"""Load models and tokenizers; convert GGUF sources once into a safetensors cache; pick a dtype per device."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from peft import PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tunesmith import paths, runs
from tunesmith.errors import ModelError
from tunesmith.models import hardware
from tunesmith.models.sources import ModelSource, model_source

log = logging.getLogger(__name__)

SOURCE_FILE = "tunesmith-source.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
"""Weights dtypes by name; float64 is for exact checks (batching must never change an answer)."""


def pick_device(device: str = "auto") -> torch.device:
    """cuda when present, else cpu; an explicit value is taken as it is."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """bf16 where the hardware computes it fast (recent GPUs; CPUs whose bf16 matmuls measure at least twice as
    fast as fp32, e.g. with AMX), else fp32."""
    if dtype != "auto":
        try:
            return DTYPES[dtype]
        except KeyError:
            raise ModelError(f"dtype {dtype!r} is unknown", hint=f"use auto or one of {', '.join(DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if hardware.cpu_prefers_bf16() else torch.float32


def _convert_gguf(source: ModelSource) -> Path:
    """Dequantize a GGUF file once into a safetensors folder with tokenizer and chat template."""
    assert source.cache_dir is not None
    return _once(source.cache_dir, source, _write_conversion)


def _light_folder(source: ModelSource) -> Path:
    """A GGUF source's tokenizer and config: from the converted folder when there is one, else converted alone
    (seconds, where the weights take half a minute), so that checking data or a small model's tests need not wait
    for the weights. Kept in models/.light/, which `cached_models` does not list."""
    assert source.cache_dir is not None
    if (source.cache_dir / SOURCE_FILE).is_file():
        return source.cache_dir
    return _once(source.cache_dir.parent / ".light" / source.cache_dir.name, source, _write_light)


def _once(folder: Path, source: ModelSource, write: Callable[[ModelSource, Path], None]) -> Path:
    """`folder`, written by `write` unless it is complete already; two processes asking first write it once."""
    if (folder / SOURCE_FILE).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.with_name(f".{folder.name}.lock")):
        if not (folder / SOURCE_FILE).is_file():
            try:
                with paths.atomic_folder(folder) as tmp:
                    write(source, tmp)
                    (tmp / SOURCE_FILE).write_text(json.dumps({"name": source.name, "gguf": source.location}, indent=2))
            except ModelError:
                raise  # the light folder's own, already one line
            except Exception as exc:
                raise ModelError(
                    f"model {source.name!r}: could not convert {source.location}: {exc}",
                    hint="is it a llama-family GGUF?",
                ) from exc
    return folder


def _write_light(source: ModelSource, folder: Path) -> None:
    gguf = Path(source.location)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)


def _write_conversion(source: ModelSource, folder: Path) -> None:
    gguf = Path(source.location)
    log.info("converting %s into %s (once)", gguf, source.cache_dir)
    light = _light_folder(source)  # its config spares transformers one more reading of the file
    config = AutoConfig.from_pretrained(light)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config, dtype=torch.float32)
    _drop_quantizer(model)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(light).save_pretrained(folder)


def _drop_quantizer(model: PreTrainedModel) -> None:
    """The weights are already dequantized: forget the GGUF quantization so the folder loads as plain weights."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = ""


def local_path(name: str) -> str:
    """The folder or hub id that transformers should load for `name`, converting a GGUF source first."""
    source = model_source(name)
    if source.kind in ("embedded", "gguf"):
        return str(_convert_gguf(source))
    return source.location


def _light_path(name: str) -> str:
    """Where a model's tokenizer and config load from, without converting a GGUF source's weights."""
    source = model_source(name)
    return str(_light_folder(source)) if source.kind in ("embedded", "gguf") else source.location


def _load_error(name: str, exc: Exception) -> ModelError:
    source = model_source(name)
    if source.kind == "hub":
        return ModelError(
            f"model {name!r}: not a short name, local folder or .gguf file, and the hub could not provide it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            hint="check the id and your network or HF_TOKEN, or pass a local folder",
        )
    return ModelError(f"model {name!r}: could not load {source.location}: {exc}", hint="is the folder complete?")


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of a model, with its chat template and a pad token."""
    location = _light_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from exc
    return _with_pad(tokenizer)


def _with_pad(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Batches need a pad token: eos stands in when the tokenizer has none (labels mask the padding)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_config(name: str, *, trust_remote_code: bool = False) -> Any:
    """A model's config (its text model's, for multimodal ones), read without loading weights."""
    try:
        config = AutoConfig.from_pretrained(_light_path(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from exc
    return getattr(config, "text_config", None) or config


def model_width(name: str, *, trust_remote_code: bool = False) -> int | None:
    """The hidden size of a model (from its config, without loading weights); None when its config has none."""
    width = getattr(model_config(name, trust_remote_code=trust_remote_code), "hidden_size", None)
    return int(width) if isinstance(width, int) else None


def load_model(
    name: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    quantization: Any = None,
) -> PreTrainedModel:
    """A causal LM on the chosen device, in the dtype that device computes fastest (`quantization`: a
    transformers quantization config, e.g. bitsandbytes' for QLoRA; the weights are then placed as loaded)."""
    location = local_path(name)
    target = pick_device(device)
    extra: dict[str, Any] = {}
    if (attention := hardware.attention_implementation(target)) is not None:
        extra["attn_implementation"] = attention
    if quantization is not None:
        extra |= {"quantization_config": quantization, "device_map": {"": target}}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=pick_dtype(target, dtype), trust_remote_code=trust_remote_code, **extra
        )
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from exc
    return model if quantization is not None else model.to(target)


def load_for_inference(
    name: str, *, device: str = "auto", dtype: str = "auto", base: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model by name (short name, hub id, folder, .gguf) or a run's result, in eval mode, with the tokenizer it was
    trained with. An adapter is merged into its base, so its layers run as fast as the base model's (the adapter
    files are unchanged); base=True takes the run's base model instead."""
    final = runs.result_folder(name)
    if final is None:
        model, tokenizer = load_model(name, device=device, dtype=dtype), load_tokenizer(name)
    else:
        tokenizer = _with_pad(AutoTokenizer.from_pretrained(final))
        base_model = runs.base_model_of(final)
        if base:
            model = load_model(base_model, device=device, dtype=dtype)
        elif runs.is_adapter(final):
            adapted = PeftModel.from_pretrained(load_model(base_model, device=device, dtype=dtype), final)
            model = adapted.merge_and_unload()
        else:
            model = load_model(str(final), device=device, dtype=dtype)
    model.eval()
    return model, tokenizer


def cached_models() -> list[Path]:
    """Converted model folders under TUNESMITH_HOME/models."""
    root = paths.models_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / SOURCE_FILE).is_file())
