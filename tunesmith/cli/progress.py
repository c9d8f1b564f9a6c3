"""How a run's events look in a terminal (a rich progress bar) or to a machine (JSON lines)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from tunesmith.training.events import Event


class ConsoleProgress:
    """A progress bar: step, epoch, loss (and a preference run's reward accuracy and margin), eval loss, tokens/s and
    ETA; a line per evaluation."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task: TaskID | None = None
        self.eval_loss = "-"
        self.eval_accuracy = ""
        """The held-out reward accuracy of a preference run, shown beside the loss."""
        self.last_step: dict[str, float | int | str | None] = {"epoch": 0, "loss": 0.0, "tokens_per_second": 0.0}

    def emit(self, event: Event) -> None:
        values = event.values
        if event.kind == "start":
            stage = (
                f"stage {values['stage_number']}/{values['stages']} ({values['stage']}): " if "stage" in values else ""
            )
            self.console.print(
                f"{stage}{values['train_examples']} training and {values['eval_examples']} held-out examples, "
                f"{values['epochs']} epoch{'s' if values['epochs'] != 1 else ''}, "
                f"{values['total_steps']} steps on {values['device']} "
                f"({values['compute_dtype']})" + (f", resuming after step {event.step}" if event.step else "")
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=values["total_steps"], completed=event.step, info="")
        elif event.kind == "step" and self.task is not None:
            self.last_step = values
            self.progress.update(self.task, completed=event.step, info=self._info())
        elif event.kind == "eval" and self.task is not None:
            self.eval_loss = f"{values['eval_loss']:.4f}"
            if "eval_reward_accuracy" in values:
                self.eval_accuracy = f" (reward accuracy {values['eval_reward_accuracy']:.2f})"
            when = f"step {event.step}" if event.step else "before training"
            if "eval_reward" in values:  # grpo: the held-out grade is what it optimises
                self.eval_loss = f"reward {values['eval_reward']:.3f}"
                self.progress.console.print(f"{when}: held-out {self.eval_loss}")
            else:
                self.progress.console.print(f"{when}: held-out loss {self.eval_loss}{self.eval_accuracy}")
            self.progress.update(self.task, info=self._info())
        elif event.kind == "end":
            self.close()

    def _info(self) -> str:
        step = self.last_step
        rewards = (
            f"acc {step['reward_accuracy']:.2f}  margin {step['reward_margin']:.2f}  "
            if "reward_accuracy" in step
            else f"reward {step['reward']:.3f}  "
            if "reward" in step
            else ""
        )
        return (
            f"epoch {step['epoch']}  loss {step['loss']:.4f}  {rewards}eval {self.eval_loss}  "
            f"{step['tokens_per_second']:.0f} tok/s"
        )

    def close(self) -> None:
        self.progress.stop()


class JsonLines:
    """Every event as one JSON object per line."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def emit(self, event: Event) -> None:
        self.console.print(json.dumps(event.as_dict()), soft_wrap=True, markup=False, highlight=False)
