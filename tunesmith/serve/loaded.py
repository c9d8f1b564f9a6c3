"""The models a server answers for: one base model in memory, and any number of LoRA runs on top of it.

A run is served under an OpenAI-style id, `ft:<base>:<run name>:<8 hex>`, as its adapter on the shared base: the
adapter is chosen per request (per row of a batch) without touching the base weights.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.errors import ModelError
from tunesmith.models.load import load_model, load_tokenizer
from tunesmith.models.sources import DEFAULT_MODEL
from tunesmith.runs import base_model_of, is_adapter, result_folder
from tunesmith.tokenize.render import ChatRenderer

BASE_ADAPTER = "__base__"
"""PEFT's name for "no adapter" in a mixed batch."""


@dataclass(frozen=True)
class Served:
    """One model id of the server."""

    id: str
    """What clients pass as `model`."""
    adapter: str
    """The PEFT adapter name, or BASE_ADAPTER."""
    renderer: ChatRenderer
    """The chat template it was trained with."""
    stop_ids: tuple[int, ...]
    """End-of-turn and eos token ids."""
    created: int
    """Unix time the model was made (the run's final/ folder)."""


@dataclass(frozen=True)
class ModelSet:
    """The base model (a PeftModel when adapters are served) and every id it answers for."""

    model: PreTrainedModel
    """In eval mode."""
    tokenizer: PreTrainedTokenizerBase
    """The base model's tokenizer (runs keep its vocabulary)."""
    served: dict[str, Served]
    """By id."""
    context: int
    """The longest prompt plus answer, in tokens."""


def _short(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name).strip("-") or "model"


def _served(model_id: str, adapter: str, tokenizer: PreTrainedTokenizerBase, created: float) -> Served:
    renderer = ChatRenderer(tokenizer)
    return Served(model_id, adapter, renderer, tuple(renderer.stop_token_ids()), int(created))


def _run_id(base_id: str, final: Path) -> str:
    digest = hashlib.sha256(str(final.resolve()).encode()).hexdigest()[:8]
    return f"ft:{base_id}:{_short(final.parent.name)}:{digest}"


def _same_model(a: str, b: str) -> bool:
    """Same name, or two paths to the same folder."""
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def load_models(base: str, runs: list[str], dtype: str = "auto", device: str = "auto") -> ModelSet:
    """Load the base once and attach each run's adapter; every run must have been trained from `base`."""
    finals = []
    for run in runs:
        final = result_folder(run)
        if final is None or not is_adapter(final):
            raise ModelError(
                f"--adapter {run}: not a LoRA or DoRA run folder", hint="pass a folder from tunesmith train"
            )
        if not _same_model(base_model_of(final), base):
            raise ModelError(
                f"--adapter {run} was trained on {base_model_of(final)}, not on the served base {base}",
                hint=f"start the server with --model {base_model_of(final)}",
            )
        finals.append(final)
    model = load_model(base, device=device, dtype=dtype)
    tokenizer = load_tokenizer(base)  # with a pad token
    base_id = _short(base)
    served = {base_id: _served(base_id, BASE_ADAPTER, tokenizer, 0)}
    for i, final in enumerate(finals):
        name = f"run{i}"
        if i == 0:
            model = PeftModel.from_pretrained(model, final, adapter_name=name)
        else:
            model.load_adapter(final, adapter_name=name)
        run_id = _run_id(base_id, final)
        served[run_id] = _served(run_id, name, AutoTokenizer.from_pretrained(final), final.stat().st_mtime)
    model.eval()
    context = int(getattr(model.config, "max_position_embeddings", 2048))
    return ModelSet(model, tokenizer, served, context)


def default_base(runs: list[str]) -> str:
    """The base model of the first run, or the default model."""
    final = result_folder(runs[0]) if runs else None
    return base_model_of(final) if final is not None else DEFAULT_MODEL
