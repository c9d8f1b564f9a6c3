"""Checkpoints that resume exactly: trainable weights, optimiser moments, RNG states and the run's counters.

Everything is safetensors or JSON. A checkpoint is written into a temporary folder, each file flushed to disk and
listed with its size and sha256 in checksums.json (written last), then renamed: a crash at any moment leaves the
previous checkpoint or the new one, never half of one. A checkpoint damaged later (a truncated or corrupt file)
fails its checksums, and resuming falls back to the one before it.

On several processes rank 0 writes; under FSDP2 (sharding.py) every rank first takes part in gathering the
weights and moments whole, so a checkpoint is the same files whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save, save_file

from tunesmith import paths
from tunesmith.errors import ConfigError, TrainingError
from tunesmith.runs import CHECKPOINT_ADAPTER, CHECKPOINT_PREFIX, RunFolder
from tunesmith.training import distributed, faults, sharding
from tunesmith.training.setup import trainable

CHECKSUMS = "checksums.json"
"""Written last into a checkpoint: every other file's size and sha256."""
FILES = ("trainable.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors", "state.json")


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
    best_step: int | None = None
    """The step of the best held-out loss, whose trainable weights are in the run's best.safetensors."""
    scaler: dict[str, float] | None = None
    """The fp16 gradient scaler's state (its scale and growth tracker), so a resumed fp16 run scales as before."""


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = RunFolder(run_dir).checkpoints
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX))


def remove_partial_writes(run_dir: Path) -> None:
    """Temporary folders left by a crash in the middle of writing a checkpoint or final/."""
    for folder in [*run_dir.glob(".final.*"), *RunFolder(run_dir).checkpoints.glob(f".{CHECKPOINT_PREFIX}*")]:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Snapshot:
    """What a checkpoint holds of the model and optimiser, whole."""

    weights: dict[str, torch.Tensor]
    """The trainable weights by name, on the CPU."""
    optimizer: dict[str, Any]
    """`optimizer.state_dict()` as one process numbers it."""


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Snapshot | None:
    """The trainable weights and the optimiser's state on rank 0 (None on the others). Every rank calls it: under
    FSDP2 it gathers the shards."""
    if sharding.sharded(model):  # method full: the model itself is the sharded causal LM
        taken = Snapshot(
            sharding.full_weights(model, set(trainable(model))), sharding.full_optimizer_state(model, optimizer)
        )
        return taken if distributed.is_main() else None
    return Snapshot(_trainable_tensors(model), optimizer.state_dict()) if distributed.is_main() else None


def _optimizer_parts(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random generators: the CPU's and each GPU's."""
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = rng
    return tensors


def _rng_tensors(rngs: list[dict[str, torch.Tensor]] | None) -> dict[str, torch.Tensor]:
    """Rank 0's generators under their own names (as one process saves them), each other rank's as rankN/name."""
    first, *others = rngs or [rng_state()]
    tensors = dict(first)
    for index, rng in enumerate(others, start=1):
        tensors |= {f"rank{index}/{name}": value for name, value in rng.items()}
    return tensors


def _restore_rng(rng: dict[str, torch.Tensor], rank: int) -> None:
    """This rank's generators as saved; a rank the checkpoint does not have (resumed on more processes) keeps the
    ones it was seeded with."""
    if rank:
        mine = {name.split("/", 1)[1]: value for name, value in rng.items() if name.startswith(f"rank{rank}/")}
    else:
        mine = {name: value for name, value in rng.items() if "/" not in name}
    if "cpu" not in mine:
        return
    torch.set_rng_state(mine["cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([mine[k] for k in sorted(mine) if k.startswith("cuda")])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _synced(path: Path) -> dict[str, Any]:
    """Flush a written file to disk; its size and checksum."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().cpu() for name, p in trainable(model).items()}


def _load_trainable(model: torch.nn.Module, path: Path) -> None:
    weights = load_file(str(path))
    params = trainable(model)
    if set(weights) != set(params):
        raise ConfigError(
            f"{path}: its trainable weights do not match this model's",
            hint="resume with the run's own config, or start a new run",
        )
    if sharding.sharded(model):
        sharding.load_weights(model, weights)
        return
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])


def save_best(run_dir: Path, model: torch.nn.Module) -> None:
    """The trainable weights as the run's best so far, written atomically by rank 0 (the previous best stays until
    then). Every rank of a sharded model calls it."""
    weights = sharding.full_weights(model, set(trainable(model))) if sharding.sharded(model) else None
    if not distributed.is_main():
        return
    with paths.atomic_file(RunFolder(run_dir).best) as out:
        out.write(save(weights if weights is not None else _trainable_tensors(model)))


def load_best(run_dir: Path, model: torch.nn.Module) -> None:
    """Put the run's best weights back into the model, for final/ (every rank of a sharded model)."""
    _load_trainable(model, RunFolder(run_dir).best)


def _write_files(
    tmp: Path,
    model: torch.nn.Module,
    taken: Snapshot,
    state: TrainState,
    rngs: list[dict[str, torch.Tensor]] | None,
) -> None:
    tensors, rest = _optimizer_parts(taken.optimizer)
    writers = {
        "trainable.safetensors": lambda path: save_file(taken.weights, str(path)),
        "optimizer.safetensors": lambda path: save_file(tensors, str(path)),
        "optimizer.json": lambda path: path.write_text(json.dumps(rest)),
        "rng.safetensors": lambda path: save_file(_rng_tensors(rngs), str(path)),
        "state.json": lambda path: path.write_text(json.dumps(asdict(state), indent=2)),
    }
    sums = {}
    for name in FILES:
        writers[name](tmp / name)
        sums[name] = _synced(tmp / name)
        faults.reached("checkpoint", state.step, name)
    if hasattr(model, "peft_config"):  # the adapter as PEFT saves it: a checkpoint can be served as a model
        model.save_pretrained(tmp / CHECKPOINT_ADAPTER)
    (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=2))
    _synced(tmp / CHECKSUMS)


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    taken: Snapshot,
    state: TrainState,
    keep: int,
    rngs: list[dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write checkpoints/step-NNNNNN atomically and keep only the latest `keep`: `taken`'s weights and optimiser
    state (`snapshot`), and `rngs`, every rank's generators in rank order (this process's alone when not given).

    A full disk (or any write error) stops the run with one line; the previous checkpoints stay as they were.
    """
    root = RunFolder(run_dir).checkpoints
    final = RunFolder(run_dir).checkpoint(state.step)
    try:
        with paths.atomic_folder(final) as tmp:
            _write_files(tmp, model, taken, state, rngs)
        _sync_dir(root)
    except OSError as exc:
        raise TrainingError(
            f"{final}: could not write the checkpoint ({exc.strerror or exc}); the previous checkpoints are kept",
            hint=f"free some disk space, then continue with: tunesmith train --resume {run_dir}",
        ) from None
    faults.reached("renamed", state.step)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(folder: Path) -> str | None:
    """What is wrong with a checkpoint (a missing, truncated or corrupt file), or None when it is whole."""
    listed = folder / CHECKSUMS
    if not listed.is_file():  # written before checksums existed: every file must be there
        missing = [name for name in FILES if not (folder / name).is_file()]
        return f"{missing[0]} is missing" if missing else None
    try:
        sums = json.loads(listed.read_text())
    except ValueError:
        return f"{CHECKSUMS} is not valid JSON"
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['bytes']} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def latest_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest whole checkpoint, and a one-line warning for each newer one that is damaged."""
    warnings = []
    for folder in reversed(checkpoint_dirs(run_dir)):
        problem = verify(folder)
        if problem is None:
            return folder, warnings
        warnings.append(f"{folder} is damaged ({problem}); using the checkpoint before it")
    return None, warnings


def _restore_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    rest = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    saved = {"state": state, "param_groups": rest["param_groups"]}
    if sharding.sharded(model):
        sharding.load_optimizer_state(model, optimizer, saved)
    else:
        optimizer.load_state_dict(saved)


def restore_weights(folder: Path, model: torch.nn.Module) -> None:
    """A checkpoint's trainable weights into a freshly built model (every rank, sharded or not)."""
    _load_trainable(model, folder / "trainable.safetensors")


def restore_training(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int = 0
) -> TrainState:
    """The rest of a checkpoint, once the weights are in (`restore_weights`): the optimiser built over the model's
    parameters as they train (sharded or not), rank `rank`'s generators; the run's counters."""
    _restore_optimizer(model, optimizer, folder)
    _restore_rng(load_file(str(folder / "rng.safetensors")), rank)
    return TrainState(**json.loads((folder / "state.json").read_text()))
