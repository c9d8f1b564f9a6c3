"""Export a run's result: its adapter, merged safetensors weights, or a GGUF file with an Ollama Modelfile."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith import paths
from tunesmith.errors import ExportError
from tunesmith.export import llama_cpp
from tunesmith.export.gguf_file import GGUF_DTYPES, write_gguf
from tunesmith.export.gguf_lora import GGUF_LORA_NAME, write_gguf_lora
from tunesmith.export.llama_cpp import K_QUANTS
from tunesmith.export.ollama import write_modelfile
from tunesmith.export.quality import measure, write_quality
from tunesmith.models.load import load_for_inference, local_path
from tunesmith.models.sources import model_file
from tunesmith.runs import RunFolder, base_model_of, is_adapter, result_folder, trained_quantized

ExportFormat = Literal["adapter", "merged", "gguf", "gguf-lora"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("adapter", "merged", "gguf", "gguf-lora")
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
GGUF_NAME = "model.gguf"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportRequest:
    """What to export and where."""

    run: str
    """The run folder (or its final/)."""
    format: ExportFormat = "merged"
    """adapter: the PEFT adapter as trained; merged: full safetensors weights; gguf: one file for llama.cpp/Ollama;
    gguf-lora: the adapter alone as a GGUF LoRA for llama.cpp's --lora over the base model's GGUF."""
    dtype: str = "f32"
    """Weights dtype of merged exports (f32, f16, bf16) and gguf ones (f32, f16, or llama.cpp's block types q8_0,
    q5_1, q5_0, q4_1, q4_0, and with llama-cpp-python its k-quants q6_k, q5_k_m, q4_k_m)."""
    out: Path | None = None
    """The folder to write; default RUN/export/FORMAT. An existing folder is replaced only when complete."""
    measure: bool = False
    """gguf: measure the held-out perplexity of the file and of an f16 one with llama.cpp (quality.json), where
    llama-cpp-python is installed."""


def _check(request: ExportRequest) -> Path:
    final = result_folder(request.run)
    if final is None:
        raise ExportError(f"{request.run} is not a run folder", hint="pass a folder made by tunesmith train")
    if request.format not in EXPORT_FORMATS:
        raise ExportError(f"format {request.format!r} is unknown", hint=f"use one of {', '.join(EXPORT_FORMATS)}")
    allowed = {"gguf": (*GGUF_DTYPES, *K_QUANTS), "gguf-lora": ("f32",)}.get(request.format, tuple(DTYPES))
    if request.dtype not in allowed:
        raise ExportError(
            f"dtype {request.dtype!r} is not available for {request.format}", hint=f"use one of {', '.join(allowed)}"
        )
    if request.dtype in K_QUANTS and llama_cpp.missing():
        raise ExportError(f"dtype {request.dtype} is written by llama.cpp's quantiser: {llama_cpp.missing()}")
    if request.format in ("adapter", "gguf-lora") and not is_adapter(final):
        raise ExportError(f"{request.run} trained every weight, so it has no adapter", hint="use --format merged")
    return final


def _write(request: ExportRequest, final: Path, folder: Path) -> None:
    if request.format == "adapter":
        shutil.copytree(final, folder, dirs_exist_ok=True)
        return
    if request.format == "gguf-lora":
        write_gguf_lora(final, local_path(base_model_of(final)), folder / GGUF_LORA_NAME)
        return
    quantized = trained_quantized(final)
    if quantized != "none":  # QLoRA: an ordinary adapter of the base, merged into the base's own weights
        log.warning(
            "%s was trained on a %s-quantised base (QLoRA): its adapter is merged into the full-precision weights of "
            "%s",
            final.parent.name,
            quantized,
            base_model_of(final),
        )
    model, tokenizer = load_for_inference(str(final), device="cpu", dtype="float32")  # merged in fp32, then cast
    # transformers saves tokenizer.json alone; a SentencePiece model's own file holds the scores llama.cpp merges by
    sentencepiece = model_file(base_model_of(final), "tokenizer.model")
    if request.format == "merged":
        model.to(DTYPES[request.dtype]).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if sentencepiece is not None:
            shutil.copyfile(sentencepiece, folder / "tokenizer.model")
        return
    name = final.parent.name

    def write(path: Path, dtype: str) -> None:
        _write_gguf(model, tokenizer, path, dtype, name, sentencepiece)

    write(folder / GGUF_NAME, request.dtype)
    write_modelfile(tokenizer, folder, GGUF_NAME)
    if request.measure:
        measured = measure(final, tokenizer, folder / GGUF_NAME, request.dtype, write)
        if isinstance(measured, str):
            log.warning("the perplexity was not measured: %s", measured)
        else:
            write_quality(folder, measured)


def _write_gguf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    dtype: str,
    name: str,
    sentencepiece: Path | None,
) -> None:
    """The GGUF file: written by us, or for k-quants written in f16 and quantised by llama.cpp's own quantiser."""
    if dtype not in K_QUANTS:
        write_gguf(model, tokenizer, path, dtype, name, sentencepiece)
        return
    f16 = path.with_name(f".{path.name}.f16")
    try:
        write_gguf(model, tokenizer, f16, "f16", name, sentencepiece)
        llama_cpp.quantize(f16, path, dtype)
    except RuntimeError as exc:
        raise ExportError(str(exc), hint="export another --dtype (q8_0, q5_1, q4_0 ...)") from None
    finally:
        f16.unlink(missing_ok=True)


def export(request: ExportRequest) -> Path:
    """Write the export into a temporary folder, then put it in place; returns the folder."""
    final = _check(request)
    out = request.out or RunFolder(final.parent).export(request.format)
    try:
        with paths.atomic_folder(out) as tmp:  # Ctrl-C too: nothing half-written is left behind
            _write(request, final, tmp)
    except OSError as exc:
        raise ExportError(
            f"{out}: could not write the export ({exc.strerror or exc}); what was there before is kept",
            hint="free some disk space, or choose another --out",
        ) from None
    return out
