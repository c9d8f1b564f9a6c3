"""The run folder: the one artifact that train, evaluate, export, serve (and jobs) share. Its layout and its readers
live here and nowhere else.

    runs/<name>/
      config.yaml          the resolved settings, every "auto" filled in
      manifest.json        data, tokenizer and template hashes, versions, machine
      data-report.json     the data check of the train and eval sets, and what was held out
      held-out.jsonl       plain-text runs only: the held-out windows, as text
      reference.safetensors  dpo runs only: the reference log-probs of every pair, computed once
      metrics.jsonl        one line per logged step and per evaluation
      best.safetensors     the trainable weights at the best held-out loss so far
      checkpoints/step-NNNNNN/   adapter/ inside for LoRA and DoRA runs (servable as a model)
      stages/<n>-<name>/   staged runs: the model after each stage
      final/               adapter or weights, tokenizer, chat template, tunesmith-run.json
      eval/                report.json, samples.jsonl, report.html
      export/<format>/     and export/<format>.zip, the dashboard's download
      distill-report/      tunesmith distill report
      tracking.json        the run's ids at its experiment trackers (report_to), to log a resumed run to the same one
      tensorboard/         TensorBoard event files (report_to: tensorboard)
      mlruns/              the MLflow store when MLFLOW_TRACKING_URI names none (report_to: mlflow)
      wandb/               Weights & Biases' files (report_to: wandb)

A job's run folder is runs/<job id> under TUNESMITH_HOME (`job_run`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith import paths
from tunesmith.errors import ModelError

RUN_FILE = "tunesmith-run.json"
"""In final/: the base model, method and objective of the run, so that final/ can be used on its own."""
ADAPTER_CONFIG = "adapter_config.json"
"""In final/ (or any model folder): present when it holds a PEFT adapter rather than full weights."""
ADAPTER_WEIGHTS = "adapter_model.safetensors"
"""The weights file of a PEFT adapter folder."""
CHECKPOINT_PREFIX = "step-"
"""checkpoints/step-NNNNNN: a checkpoint's folder name, with its step in six digits."""
CHECKPOINT_ADAPTER = "adapter"
"""In a checkpoint of a LoRA or DoRA run: its adapter in PEFT's format (not needed to resume)."""
HELD_OUT_TEXTS = "held-out.jsonl"
"""In the run folder: the windows of plain text held out from training, one {"text"} per line. A document may be cut
into windows that train and windows that are held out, so they are kept as text, not as line numbers."""
REPORT_FILES = ("report.json", "samples.jsonl", "report.html")
"""What an evaluation writes into eval/, nothing else."""


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder, and readers for what training wrote there."""

    root: Path
    """The run folder itself."""

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def data_report(self) -> Path:
        return self.root / "data-report.json"

    @property
    def held_out_texts(self) -> Path:
        return self.root / HELD_OUT_TEXTS

    @property
    def reference(self) -> Path:
        """DPO's reference log-probs of the training and held-out pairs, computed before the first step."""
        return self.root / "reference.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tracking(self) -> Path:
        return self.root / "tracking.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def best(self) -> Path:
        """The trainable weights at the lowest held-out loss so far, for final/ (config `final: best`)."""
        return self.root / "best.safetensors"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def samples(self) -> Path:
        """eval/samples.jsonl: base and tuned answers of the last evaluation."""
        return self.eval / REPORT_FILES[1]

    def export(self, format: str) -> Path:
        return self.root / "export" / format

    def export_zip(self, format: str) -> Path:
        """export/<format>.zip: an export as one download."""
        return self.root / "export" / f"{format}.zip"

    @property
    def distill_report(self) -> Path:
        """Where `tunesmith distill report` writes by default."""
        return self.root / "distill-report"

    def checkpoint(self, step: int) -> Path:
        """Where the checkpoint at `step` is (or would be)."""
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step:06d}"

    def checkpoint_adapter(self, step: int) -> Path:
        """The PEFT adapter inside the checkpoint at `step` (LoRA and DoRA runs)."""
        return self.checkpoint(step) / CHECKPOINT_ADAPTER

    def stage(self, number: int, name: str) -> Path:
        """stages/<number>-<name>/: the model after stage `number` (from 1)."""
        return self.root / "stages" / f"{number}-{name}"

    def is_run(self) -> bool:
        """Training started here (config.yaml and metrics.jsonl exist), finished or not."""
        return self.config.is_file() and self.metrics.exists()

    def read_config(self) -> dict[str, Any]:
        """config.yaml as written (validate it with config.build_config)."""
        values = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        return values if isinstance(values, dict) else {}

    def read_manifest(self) -> dict[str, Any]:
        return dict(json.loads(self.manifest.read_text(encoding="utf-8")))

    def read_data_report(self) -> dict[str, Any]:
        return dict(json.loads(self.data_report.read_text(encoding="utf-8")))

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete line of metrics.jsonl (a line cut short by a crash is left out)."""
        return read_json_lines(self.metrics)

    def kept_step(self) -> int | None:
        """The step whose weights final/ holds (the best held-out loss, or the last step), None before the end."""
        ends = [row for row in self.read_metrics() if row.get("event") == "end" and row.get("kept_step") is not None]
        return int(ends[-1]["kept_step"]) if ends else None


def job_run(job_id: str) -> RunFolder:
    """The run folder of a fine-tuning job."""
    return RunFolder(paths.runs_dir() / job_id)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file written by tunesmith; a missing file is empty, a broken line skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [row for row in rows if isinstance(row, dict)]


def result_folder(name: str) -> Path | None:
    """final/ of a run folder, or a run's final/ given directly; None for anything else (e.g. a model)."""
    path = Path(name).expanduser()
    run = RunFolder(path)
    if run.is_run():
        if not run.final.is_dir():
            raise ModelError(f"{path} has no final/ yet", hint=f"finish it with: tunesmith train --resume {path}")
        return run.final
    return path if (path / RUN_FILE).is_file() else None


def run_of(name: str) -> RunFolder | None:
    """The run that `name` points at (the run folder itself or its final/), None for a plain model."""
    final = result_folder(name)
    return RunFolder(final.parent) if final is not None and final.name == "final" else None


def write_run_file(final: Path, base_model: str, method: str, objective: str, quantize: str = "none") -> None:
    """final/tunesmith-run.json: what `base_model_of` and `trained_quantized` read back."""
    info = {"base_model": base_model, "method": method, "objective": objective, "quantize": quantize}
    (final / RUN_FILE).write_text(json.dumps(info, indent=2))


def _run_file(final: Path) -> dict[str, Any]:
    return json.loads((final / RUN_FILE).read_text())


def trained_quantized(final: Path) -> str:
    """none, or the quantisation (4bit, 8bit) of the frozen base the adapter was trained on (QLoRA)."""
    return str(_run_file(final).get("quantize", "none"))


def base_model_of(final: Path) -> str:
    """The model a run started from."""
    return str(_run_file(final)["base_model"])


def is_adapter(final: Path) -> bool:
    """The folder holds a PEFT adapter (LoRA, DoRA), not full weights."""
    return (final / ADAPTER_CONFIG).is_file()
