"""Experiment tracking (RunConfig.report_to): a run's settings, every step's and evaluation's metrics, and its
final evaluation report, logged with each tracker's own client: Weights & Biases, MLflow, TensorBoard.

Each tracker is an EventSink beside metrics.jsonl. Its run id is kept in the run folder (tracking.json), so a
resumed run, and the evaluation report written after training, go to the same tracker run. A tracker whose
library is missing fails the run before its first step, saying what to install.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunesmith import paths
from tunesmith.config import RunConfig
from tunesmith.errors import ConfigError
from tunesmith.runs import RunFolder
from tunesmith.training.events import Event, EventSink

log = logging.getLogger(__name__)

INSTALL = {"wandb": "wandb", "mlflow": "mlflow-skinny", "tensorboard": "tensorboard"}
"""The package each tracker needs."""


def _numbers(values: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as dotted keys with text values (MLflow's params, TensorBoard's text)."""
    out: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return out


class _Ids:
    """tracking.json: each tracker's run id for this run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = RunFolder(run_dir).tracking

    def _known(self) -> dict[str, str]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, tracker: str) -> str | None:
        return self._known().get(tracker)

    def put(self, tracker: str, run_id: str) -> None:
        paths.write_text_atomic(self.path, json.dumps(self._known() | {tracker: run_id}, indent=2))


class TensorBoard:
    """Event files in the run folder's tensorboard/ (read with TensorBoard, or its EventAccumulator)."""

    def __init__(self, config: RunConfig, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(RunFolder(run_dir).tensorboard))
        self.config = config

    def emit(self, event: Event) -> None:
        if event.kind == "start" and event.step == 0:
            settings = _flat(self.config.model_dump(mode="json"))
            self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in settings.items()), 0)
        prefix = {"step": "train/", "eval": "eval/"}.get(event.kind)
        if prefix:
            for key, value in _numbers(event.values, prefix).items():
                self.writer.add_scalar(key, value, event.step)
        if event.kind == "end":
            self.writer.close()
        else:
            self.writer.flush()

    def report(self, scores: dict[str, float], headline: str, html: Path) -> None:
        for key, value in scores.items():
            self.writer.add_scalar(key, value, 0)
        self.writer.add_text("report", headline, 0)
        self.writer.close()


class MLflow:
    """A run at the MLflow tracking server or store MLFLOW_TRACKING_URI names, else a store in the run folder."""

    def __init__(self, config: RunConfig, run_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # the run folder's own store: a file store, which MLflow 3 keeps but asks to be allowed
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = RunFolder(run_dir).mlruns.resolve().as_uri()
        self.client, self.ids = MlflowClient(tracking_uri=uri), _Ids(run_dir)
        self.run_id = self.ids.get("mlflow") or self._new_run(config, run_dir)

    def _new_run(self, config: RunConfig, run_dir: Path) -> str:
        from mlflow.entities import Param

        tracking = config.tracking
        found = self.client.get_experiment_by_name(tracking.project)
        experiment = found.experiment_id if found else self.client.create_experiment(tracking.project)
        tags = {tag: "" for tag in tracking.tags}
        run = self.client.create_run(experiment, run_name=tracking.name or run_dir.name, tags=tags)
        params = [Param(k, v[:6000]) for k, v in _flat(config.model_dump(mode="json")).items()]
        self.client.log_batch(run.info.run_id, params=params)
        self.ids.put("mlflow", run.info.run_id)
        return str(run.info.run_id)

    def emit(self, event: Event) -> None:
        from mlflow.entities import Metric

        prefix = {"step": "train_", "eval": ""}.get(event.kind)
        if prefix is not None:
            now = int(1000 * time.time())
            metrics = [Metric(k, v, now, event.step) for k, v in _numbers(event.values, prefix).items()]
            self.client.log_batch(self.run_id, metrics=metrics)
        if event.kind == "end":
            self.client.set_terminated(self.run_id, "FINISHED" if event.values.get("final") else "KILLED")

    def report(self, scores: dict[str, float], headline: str, html: Path) -> None:
        from mlflow.entities import Metric

        now = int(1000 * time.time())
        self.client.log_batch(self.run_id, metrics=[Metric(k.replace("/", "_"), v, now, 0) for k, v in scores.items()])
        self.client.set_tag(self.run_id, "headline", headline)
        self.client.log_artifact(self.run_id, str(html))


class WandB:
    """A W&B run in the run folder's wandb/, offline unless WANDB_API_KEY or WANDB_MODE says otherwise (`wandb sync`
    uploads an offline run later)."""

    def __init__(self, config: RunConfig, run_dir: Path) -> None:
        import wandb

        ids = _Ids(run_dir)
        run_id = ids.get("wandb") or secrets.token_hex(4)  # W&B's own ids are 8 characters of [a-z0-9]
        ids.put("wandb", run_id)
        tracking = config.tracking
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(
            project=tracking.project,
            entity=tracking.entity,
            name=tracking.name or run_dir.name,
            tags=list(tracking.tags),
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=mode,
            config=config.model_dump(mode="json"),
            settings=wandb.Settings(silent=True, console="off"),
        )

    def emit(self, event: Event) -> None:
        prefix = {"step": "train/", "eval": "eval/"}.get(event.kind)
        if prefix:
            self.run.log(_numbers(event.values, prefix), step=event.step)
        if event.kind == "end":
            self.run.finish(exit_code=0 if event.values.get("final") else 1)

    def report(self, scores: dict[str, float], headline: str, html: Path) -> None:
        self.run.summary.update(scores | {"headline": headline})
        self.run.finish()


TRACKERS = {"wandb": WandB, "mlflow": MLflow, "tensorboard": TensorBoard}
"""report_to's names and their sinks."""


def trackers(config: RunConfig, run_dir: Path) -> list[EventSink]:
    """The run's trackers, started (or found again, for a resumed run)."""
    made: list[EventSink] = []
    for name in config.report_to:
        try:
            made.append(TRACKERS[name](config, run_dir))
        except ImportError:
            raise ConfigError(
                f"report_to {name}: its library is not installed", hint=f"pip install {INSTALL[name]}"
            ) from None
    return made


def log_report(run_dir: Path, config: RunConfig, scores: dict[str, float], headline: str, html: Path) -> None:
    """A finished run's evaluation report to its trackers (the run's own tracker runs)."""
    for name in config.report_to:
        try:
            TRACKERS[name](config, run_dir).report(scores, headline, html)
        except Exception:  # the report is written; a tracker that cannot take it must not lose it
            log.exception("report_to %s: the evaluation report was not logged", name)
