"""Checkpoints that resume exactly: trainable weights, optimiser moments, RNG states and the run's counters.

Everything is safetensors or JSON. A checkpoint is written into a temporary folder, then renamed, so a
crash at any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tunesmith.errors import ConfigError
from tunesmith.train.setup import trainable

PREFIX = "step-"


@dataclass
class TrainState:
    """The counters of a run, saved with every checkpoint."""

    step: int = 0
    """Optimizer steps completed."""
    tokens: int = 0
    """Real (non-padding) tokens trained on."""
    supervised_tokens: int = 0
    """Tokens learned."""
    elapsed: float = 0.0
    """Seconds spent training, over every session of the run."""
    best_eval_loss: float | None = None
    """The lowest held-out loss so far."""
    evals_without_improvement: int = 0
    """Evaluations since the best one, for early stopping."""


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def remove_partial_writes(run_dir: Path) -> None:
    """Temporary folders left by a crash in the middle of writing a checkpoint or final/."""
    for folder in [*run_dir.glob(".final.*"), *(run_dir / "checkpoints").glob(f".{PREFIX}*")]:
        shutil.rmtree(folder, ignore_errors=True)


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = rng
    return tensors


def save_checkpoint(
    run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState, keep: int
) -> Path:
    """Write checkpoints/step-NNNNNN atomically and keep only the latest `keep`."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        weights = {name: p.detach().contiguous().cpu() for name, p in trainable(model).items()}
        save_file(weights, str(tmp / "trainable.safetensors"))
        tensors, rest = _optimizer_parts(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(rest))
        save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _restore_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    rest = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def restore_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """Load a checkpoint into a freshly built model and optimiser; return the run's counters."""
    weights = load_file(str(folder / "trainable.safetensors"))
    params = trainable(model)
    if set(weights) != set(params):
        raise ConfigError(
            f"{folder}: its trainable weights do not match this model's",
            hint="resume with the run's own config, or start a new run",
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    _restore_optimizer(optimizer, folder)
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(rng) if k.startswith("cuda")])
    return TrainState(**json.loads((folder / "state.json").read_text()))
