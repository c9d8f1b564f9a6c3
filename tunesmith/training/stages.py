"""Staged runs: stages one after the other in one run folder, each from the weights the stage before ended with.

    runs/<name>/
      config.yaml          the settings as given, with their stages: list
      manifest.json        the run's digest, and each stage's folder and data hashes once it has started
      stages/1-text/       each stage a run folder of its own: resolved config, checkpoints, metrics, final/
      stages/2-sft/
      metrics.jsonl        every stage's rows in order, steps counted across stages, each row naming its stage
      final/               the last stage's final/ (`tunesmith eval` uses the last stage's held-out data)

An adapter is carried from stage to stage and trained further, not merged into the model after each stage: final/
stays one adapter of the base model, served per request and exported like any run's, and each stage's folder keeps
the adapter as it was after that stage, which `tunesmith eval` compares with the base model and final/. The price:
every stage shares one rank and one set of targets. A full fine-tuning run carries its weights the same way.

A resume goes past the finished stages and resumes the first unfinished one from its own checkpoints, exactly.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tunesmith
from tunesmith import paths
from tunesmith.config import RunConfig, build_config
from tunesmith.runs import RunFolder
from tunesmith.training.events import Event, EventSink


@dataclass(frozen=True)
class StageEvents:
    """A stage's events, passed on with the stage's name and number."""

    sink: EventSink
    name: str
    number: int
    count: int

    def emit(self, event: Event) -> None:
        values = {**event.values, "stage": self.name, "stage_number": self.number, "stages": self.count}
        self.sink.emit(Event(event.kind, event.step, values))


def stage_folders(run_dir: Path, config: RunConfig) -> list[Path]:
    """stages/<number>-<name>/ of every stage, in order."""
    return [RunFolder(run_dir).stage(i + 1, stage.name) for i, stage in enumerate(config.stages)]


def start_stages(config: RunConfig, run_dir: Path) -> None:
    """A new staged run's own files: the settings as given, its manifest, an empty metrics.jsonl."""
    run = RunFolder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths.write_text_atomic(run.config, config.to_yaml())
    paths.write_text_atomic(run.metrics, "")
    write_manifest(config, run_dir)


def write_manifest(config: RunConfig, run_dir: Path) -> None:
    """The run's manifest: its digest, and each started stage's data hashes (from the stage's own manifest)."""
    stages = []
    for stage, folder in zip(config.stages, stage_folders(run_dir, config), strict=True):
        own = RunFolder(folder)
        data = own.read_manifest()["data"] if own.manifest.is_file() else None
        stages.append({"name": stage.name, "folder": str(folder.relative_to(run_dir)), "data": data})
    run = RunFolder(run_dir)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    created = run.read_manifest()["created"] if run.manifest.is_file() else now
    manifest = {
        "tunesmith": tunesmith.__version__,
        "created": created,
        "seed": config.seed,
        "config_digest": config.digest(),
        "stages": stages,
    }
    paths.write_text_atomic(run.manifest, json.dumps(manifest, indent=2))


def merge_metrics(config: RunConfig, run_dir: Path) -> None:
    """metrics.jsonl of the run: every stage's rows in order, each named, steps counted on across stages."""
    rows: list[dict[str, Any]] = []
    offset = 0
    for stage, folder in zip(config.stages, stage_folders(run_dir, config), strict=True):
        own = RunFolder(folder).read_metrics()
        for row in own:
            shifted = {**row, "stage": stage.name, "step": int(row["step"]) + offset}
            if row.get("kept_step") is not None:
                shifted["kept_step"] = int(row["kept_step"]) + offset
            rows.append(shifted)
        offset += max((int(row["step"]) for row in own), default=0)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    paths.write_text_atomic(RunFolder(run_dir).metrics, text)


def finish_stages(run_dir: Path, last: Path) -> Path:
    """The run's final/: the last stage's, copied into place atomically."""
    final = RunFolder(run_dir).final
    with paths.atomic_folder(final) as tmp:
        shutil.copytree(RunFolder(last).final, tmp, dirs_exist_ok=True)
    return final


def stage_config(config: RunConfig, index: int, folders: list[Path]) -> RunConfig:
    """Stage `index`'s settings, starting from the final/ of the stage before (the model itself for the first)."""
    start = str((RunFolder(folders[index - 1]).final).resolve()) if index else None
    return config.stage(index, start)


def unfinished(folders: list[Path]) -> int:
    """The first stage to run or resume; the last stage when every one has finished (it is resumed as a finished
    single run is)."""
    return next((i for i, folder in enumerate(folders) if not RunFolder(folder).final.is_dir()), len(folders) - 1)


def clear_unstarted(folder: Path) -> None:
    """A stage folder without config.yaml never started training (a stop while it was being set up): remove it."""
    if folder.exists() and not RunFolder(folder).config.is_file():
        shutil.rmtree(folder)


def stages_of(run: RunFolder) -> list[Path]:
    """The stage folders of a staged run folder, in order (read from its config.yaml); none for any other run."""
    values = run.read_config()
    return stage_folders(run.root, build_config(values, str(run.config))) if values.get("stages") else []
