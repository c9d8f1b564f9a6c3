"""The models a server answers for: one base model in memory, and any number of LoRA runs on top of it.

A run is served under an OpenAI-style id, `ft:<base>:<run name>:<8 hex>`, as its adapter on the shared base: the
adapter is chosen per request (per row of a batch) without touching the base weights.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
class Tuned:
    """Where a tuned model's parts are."""

    adapter: Path
    """A PEFT adapter folder (a run's final/, or a checkpoint's adapter/)."""
    tokenizer: Path | str
    """A folder or model name with the tokenizer and chat template it was trained with."""
    base: str
    """The model it was trained from."""
    created: int
    """Unix time it was made."""


class TunedModels(Protocol):
    """Where tuned models come from besides --adapter (the jobs store): looked up by id when first asked for."""

    def find(self, model_id: str) -> Tuned | None:
        """A tuned model, or None."""
        ...

    def ids(self) -> list[str]:
        """Every tuned model id there is."""
        ...

    def delete(self, model_id: str) -> bool:
        """Forget a tuned model for good; False when there is no such model to delete."""
        ...


class ModelSet:
    """The base model (a PeftModel once an adapter is attached) and every id it answers for.

    Adapters are attached while the server runs (a job that just finished); `lock` is held by the engine for each
    forward pass and by `attach`, so the model never changes under a running step.
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, base: str, tuned: TunedModels | None = None
    ) -> None:
        self.model = model
        """In eval mode."""
        self.tokenizer = tokenizer
        """The base model's tokenizer (runs keep its vocabulary)."""
        self.base = base
        """The base model's name, as given."""
        self.tuned = tuned
        self.context = int(getattr(model.config, "max_position_embeddings", 2048))
        """The longest prompt plus answer, in tokens."""
        base_id = short_id(base)
        self.served: dict[str, Served] = {base_id: _served(base_id, BASE_ADAPTER, tokenizer, 0)}
        """By id."""
        self.stored: set[str] = set()
        """Ids attached from `tuned` (the jobs store): each answered only while `tuned` still finds it (deleted, or
        another project's, it is not)."""
        self.lock = threading.Lock()
        self.attached = 0
        """Adapters attached so far (each gets a new PEFT name)."""

    def attach(self, model_id: str, tuned: Tuned) -> Served:
        """Serve an adapter under `model_id`; it must have been trained from this base."""
        _require_base(model_id, tuned.base, self.base)
        with self.lock:
            if model_id in self.served:
                return self.served[model_id]
            self.attached += 1
            name = f"run{self.attached}"
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(tuned.adapter, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, tuned.adapter, adapter_name=name)
            self.model.eval()
            served = _served(model_id, name, AutoTokenizer.from_pretrained(tuned.tokenizer), tuned.created)
            self.served[model_id] = served
        return served

    def find(self, model_id: str) -> Served | None:
        """A served id, or a tuned model attached now (None when there is no such model on this base, or the jobs
        store does not find it for whoever asks)."""
        if model_id in self.served and model_id not in self.stored:
            return self.served[model_id]
        found = self.tuned.find(model_id) if self.tuned is not None else None
        if found is None:
            return None
        if model_id in self.served:  # attached already: not `attach` again, whose lock waits for the engine's step
            return self.served[model_id]
        try:
            served = self.attach(model_id, found)
        except ModelError:
            return None
        self.stored.add(model_id)
        return served

    def forget(self, model_id: str) -> None:
        """Stop serving a tuned model and free its adapter."""
        with self.lock:
            served = self.served.pop(model_id, None)
            if served is not None and isinstance(self.model, PeftModel) and len(self.model.peft_config) > 1:
                self.model.delete_adapter(served.adapter)  # the last one stays loaded, unused: PEFT needs one

    def all(self) -> list[Served]:
        """Every model it answers for (of the jobs store's, those it lists for whoever asks), attached first."""
        listed = self.tuned.ids() if self.tuned is not None else []
        for model_id in listed:
            self.find(model_id)
        return [served for model_id, served in self.served.items() if model_id not in self.stored or model_id in listed]


def short_id(name: str) -> str:
    """The id a model given by name or path is served under."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name).strip("-") or "model"


def _served(model_id: str, adapter: str, tokenizer: PreTrainedTokenizerBase, created: float) -> Served:
    renderer = ChatRenderer(tokenizer)
    return Served(model_id, adapter, renderer, tuple(renderer.stop_token_ids()), int(created))


def run_model_id(base_id: str, final: Path) -> str:
    """The id a run's adapter (its final/ folder) is served under on the base of id base_id."""
    digest = hashlib.sha256(str(final.resolve()).encode()).hexdigest()[:8]
    return f"ft:{base_id}:{short_id(final.parent.name)}:{digest}"


def _same_model(a: str, b: str) -> bool:
    """Same name, or two paths to the same folder."""
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def _require_base(what: str, trained_on: str, base: str) -> None:
    """An adapter serves only on the base it was trained from."""
    if not _same_model(trained_on, base):
        raise ModelError(
            f"{what} was trained on {trained_on}, not on the served base {base}",
            hint=f"start the server with --model {trained_on}",
        )


def load_models(
    base: str, runs: list[str], dtype: str = "auto", device: str = "auto", tuned: TunedModels | None = None
) -> ModelSet:
    """Load the base once and attach each run's adapter; every run must have been trained from `base`."""
    finals = []
    for run in runs:
        final = result_folder(run)
        if final is None or not is_adapter(final):
            raise ModelError(
                f"--adapter {run}: not a LoRA or DoRA run folder", hint="pass a folder from tunesmith train"
            )
        _require_base(f"--adapter {run}", base_model_of(final), base)  # before the base model is loaded
        finals.append(final)
    model = load_model(base, device=device, dtype=dtype)
    models = ModelSet(model.eval(), load_tokenizer(base), base, tuned)
    for final in finals:
        tuned = Tuned(final, final, base_model_of(final), int(final.stat().st_mtime))
        models.attach(run_model_id(short_id(base), final), tuned)
    return models


def default_base(runs: list[str]) -> str:
    """The base model of the first run, or the default model."""
    final = result_folder(runs[0]) if runs else None
    return base_model_of(final) if final is not None else DEFAULT_MODEL
