"""What a quantised GGUF costs in quality, measured by llama.cpp itself: the tuned model's held-out perplexity in
f16 and in the exported type, next to each file's size. Written to the export folder as quality.json."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from tunesmith.errors import DataError
from tunesmith.evaluate.items import load_held_out
from tunesmith.export import llama_cpp
from tunesmith.runs import RunFolder

QUALITY_FILE = "quality.json"
HELD_OUT_LIMIT = 40
"""Held-out examples measured: enough for a perplexity to 2-3 digits, a few seconds per file for small models."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileQuality:
    """One GGUF file of the model."""

    dtype: str
    """f32, f16, q8_0, ..."""
    bytes: int
    """Its size on disk."""
    perplexity: float
    """exp(mean negative log-likelihood) of the held-out examples' tokens, from llama.cpp's logits."""


def held_out_texts(final: Path, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The run's held-out examples as the model sees them: conversations through its chat template (prompt and
    reference answer), or plain text."""
    held = load_held_out(RunFolder(final.parent), None, HELD_OUT_LIMIT)
    if held.kind == "text":
        return [record.text for _, record in held.records]  # type: ignore[attr-defined]
    texts = []
    for item in held.items:
        messages = [{"role": m.role, "content": m.content or ""} for m in item.prompt]
        messages.append({"role": "assistant", "content": item.reference})
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def measure(
    final: Path,
    tokenizer: PreTrainedTokenizerBase,
    exported: Path,
    dtype: str,
    write: Callable[[Path, str], None],
) -> list[FileQuality] | str:
    """The exported file's quality, and f16's as the reference (written by `write` into a temporary folder when the
    export is not f16); or why it was not measured (no llama.cpp, no held-out data)."""
    reason = llama_cpp.missing()
    if reason is not None:
        return reason
    try:
        texts = held_out_texts(final, tokenizer)
    except DataError as exc:
        return exc.message
    with tempfile.TemporaryDirectory(prefix="tunesmith-f16-") as folder:
        files = {dtype: exported}
        if dtype != "f16":
            files = {"f16": Path(folder) / "model.gguf", **files}
            write(files["f16"], "f16")
        return [FileQuality(d, p.stat().st_size, _perplexity(p, texts)) for d, p in files.items()]


def _perplexity(path: Path, texts: list[str]) -> float:
    llm = llama_cpp.load(path, context=2048, all_logits=True)
    try:
        return llama_cpp.perplexity(llm, texts)
    finally:
        llm.close()


def write_quality(folder: Path, measured: list[FileQuality]) -> None:
    (folder / QUALITY_FILE).write_text(json.dumps([asdict(m) for m in measured], indent=2) + "\n")
