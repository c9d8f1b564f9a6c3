"""manifest.json: what a run was made from (data, tokenizer and template hashes) and where (versions, machine)."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from transformers import PreTrainedTokenizerBase

import tunesmith
from tunesmith.config import RunConfig
from tunesmith.data.load import source_digest
from tunesmith.models.load import pick_device, pick_dtype
from tunesmith.tokenize.encode import plain_backend
from tunesmith.training.data import RunData

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "numpy")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = plain_backend(tokenizer)  # the tokenizer itself, not the padding an earlier call left switched on
    return _sha(backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items())))


def _train_digest(config: RunConfig) -> str | list[str]:
    """The training source's digest (one source), or each source's (a mix)."""
    digests = [source_digest(source.path) for source in config.data]
    return digests[0] if len(digests) == 1 else digests


def manifest(config: RunConfig, tokenizer: PreTrainedTokenizerBase, data: RunData) -> dict[str, Any]:
    """Hashes that decide whether a resume continues the same run, and the facts that explain its speed."""
    device = pick_device(config.device)
    return {
        "tunesmith": tunesmith.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": config.seed,
        "config_digest": config.digest(),
        "data": {
            "train": _train_digest(config),
            "eval": source_digest(config.eval_data) if config.eval_data else None,
            "tokenizer": tokenizer_digest(tokenizer),
            "chat_template": _sha(str(tokenizer.chat_template or "")),
            "train_examples": len(data.train),
            "eval_examples": len(data.held_out),
        },
        "libraries": {"python": sys.version.split()[0]} | {name: _version(name) for name in LIBRARIES},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": config.threads,
            "device": str(device),
            "fast_dtype": str(pick_dtype(device)).removeprefix("torch."),
        },
    }
