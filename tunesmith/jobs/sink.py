"""A run's events as a job's events, checkpoints and progress in the store; cancel and pause reach the run here.

Event keys are made from the step, so a step that runs again after a crash (resume restarts from the last
checkpoint and repeats the same steps bit for bit) writes nothing twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tunesmith.jobs.records import CheckpointRecord, new_id
from tunesmith.jobs.store import Store
from tunesmith.training.events import Event, StopFlag

CHECKPOINT_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
"""The metrics of OpenAI's checkpoint objects, taken from the step the checkpoint follows."""
PAIR_METRICS = ("reward_accuracy", "reward_margin")
"""A DPO run's metrics that its events carry too (train_ and valid_ before them), beside OpenAI's."""
REWARD_METRICS = {
    "reward": "train_reward_mean",
    "reward_std": "train_reward_std",
    "kl": "train_kl",
    "answer_length": "train_answer_length",
}
"""A grpo run's step metrics in its metrics events (valid_reward_mean from its evaluations)."""


class JobSink:
    """Listens to one job's run (an EventSink)."""

    def __init__(self, store: Store, job_id: str, stop: StopFlag) -> None:
        self.store, self.job_id, self.stop = store, job_id, stop
        self.pending: dict[str, Any] | None = None
        """The last step's metrics, held until its evaluation (if any) adds valid_loss."""
        self.total_steps = 0
        self.started = time.time()
        self.first_step: int | None = None
        self.last_metrics: dict[str, Any] = {}
        """The metrics of the last step written, for the checkpoint that follows it."""

    def emit(self, event: Event) -> None:
        if event.kind == "start":
            self._start(event)
            return
        if event.kind == "step":
            self._flush()
            self.pending = self._metrics(event)
            self._progress(event)
            self._obey_requests()
        elif event.kind == "eval":
            self._eval(event)
        elif event.kind == "checkpoint":
            self._flush()
            self._checkpoint(event)
        elif event.kind == "end":
            self._flush()

    def _start(self, event: Event) -> None:
        self.total_steps = int(event.values.get("total_steps") or 0)
        self.started, self.first_step = time.time(), event.step
        if event.step == 0:
            self.store.add_event(self.job_id, "started", "Fine-tuning job started")
        else:
            message = f"Resumed from the checkpoint at step {event.step}"
            self.store.add_event(self.job_id, f"resumed:{event.step}", message)

    def _metrics(self, event: Event) -> dict[str, Any]:
        values = event.values
        metrics = {
            "step": event.step,
            "train_loss": values.get("loss"),
            "train_mean_token_accuracy": values.get("token_accuracy"),
            "total_steps": self.total_steps,
            "learning_rate": values.get("lr"),
            "tokens_per_second": values.get("tokens_per_second"),
        }
        metrics |= {key: values[name] for name, key in REWARD_METRICS.items() if name in values}
        return metrics | {f"train_{name}": values[name] for name in PAIR_METRICS if name in values}

    def _eval(self, event: Event) -> None:
        values = event.values
        loss, accuracy = values.get("eval_loss"), values.get("eval_token_accuracy")
        # every evaluation here covers the whole held-out set: OpenAI's valid_ (a batch) and full_valid_ at once
        held_out = {"valid_loss": loss, "valid_mean_token_accuracy": accuracy}
        held_out |= {"full_valid_loss": loss, "full_valid_mean_token_accuracy": accuracy}
        held_out |= {f"valid_{name}": values[f"eval_{name}"] for name in PAIR_METRICS if f"eval_{name}" in values}
        if "eval_reward" in values:
            held_out |= {"valid_reward_mean": values["eval_reward"], "full_valid_reward_mean": values["eval_reward"]}
        if event.step == 0:
            message = f"Held-out loss before training: {held_out['valid_loss']:.4f}"
            if "valid_reward_accuracy" in held_out:
                message += f", reward accuracy={held_out['valid_reward_accuracy']:.2f}"
            if "valid_reward_mean" in held_out:
                message += f", mean reward={held_out['valid_reward_mean']:.3f}"
            self.store.add_event(self.job_id, "base_loss", message, data={"step": 0} | held_out)
        elif self.pending is not None and self.pending["step"] == event.step:
            self.pending |= held_out

    def _flush(self) -> None:
        if self.pending is None:
            return
        data, self.pending = self.pending, None
        message = f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
        if data.get("train_reward_mean") is not None:
            message += f", mean reward={data['train_reward_mean']:.3f}"
        if data.get("valid_loss") is not None:
            message += f", validation loss={data['valid_loss']:.4f}"
        if data.get("valid_reward_mean") is not None:
            message += f", validation reward={data['valid_reward_mean']:.3f}"
        if data.get("valid_reward_accuracy") is not None:
            message += f", validation reward accuracy={data['valid_reward_accuracy']:.2f}"
        self.store.add_event(self.job_id, f"metrics:{data['step']}", message, data=data)
        self.last_metrics = data

    def _progress(self, event: Event) -> None:
        done = event.step - (self.first_step or 0)
        per_step = (time.time() - self.started) / max(done, 1)
        finish = int(time.time() + per_step * max(self.total_steps - event.step, 0))
        tokens = event.values.get("tokens")
        self.store.update_job(self.job_id, {"trained_tokens": tokens, "estimated_finish": finish})

    def _checkpoint(self, event: Event) -> None:
        path = str(event.values["path"])
        metrics = {k: v for k, v in self.last_metrics.items() if k in CHECKPOINT_METRICS}
        record = CheckpointRecord(new_id("ftckpt_"), self.job_id, int(time.time()), event.step, metrics, path)
        self.store.add_checkpoint(record)
        self.store.add_event(self.job_id, f"checkpoint:{event.step}", f"Checkpoint created at step {event.step}")
        kept = {str(p) for p in Path(path).parent.iterdir()} if Path(path).parent.is_dir() else set()
        self.store.drop_checkpoints(self.job_id, kept)

    def _obey_requests(self) -> None:
        job = self.store.job(self.job_id)
        if job is not None and job.requested in ("cancel", "pause") and not self.stop:
            self.stop.request(job.requested)
