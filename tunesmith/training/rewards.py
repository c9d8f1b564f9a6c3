"""The rewards of objective grpo: each answer graded by every grader of `reinforcement.graders` (OpenAI grader
objects in JSON files, or .py files defining grade(sample, item), run as python graders), concurrently; an
answer's reward is the mean of its graders' scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import ConfigError
from tunesmith.graders.run import Runner, scores_by_name
from tunesmith.graders.spec import Grader, Python, load_grader


def read_graders(files: Sequence[str]) -> list[Grader]:
    """The graders of the files; a .py file is a python grader named after it."""
    if not files:
        raise ConfigError(
            "objective grpo needs at least one grader", hint="pass --grader grader.json (or a .py file with grade())"
        )
    graders: list[Grader] = []
    for name in files:
        path = Path(name)
        if path.suffix == ".py":
            if not path.is_file():
                raise ConfigError(f"{name}: no such reward file", hint="give a .py file defining grade(sample, item)")
            try:
                graders.append(Python(type="python", name=path.stem, source=path.read_text(encoding="utf-8")))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}", hint="define grade(sample, item) -> float") from None
        else:
            graders.append(load_grader(name))
    return graders


@dataclass
class Scored:
    """Rewards of a set of answers and what the graders said."""

    rewards: torch.Tensor
    """[answers] the reward of each."""
    by_grader: dict[str, float] = field(default_factory=dict)
    """Mean score of each grader and sub-grader, by name."""
    errors: int = 0
    """Answers a grader failed on (scored 0 by it)."""


class Rewards:
    """The run's graders, ready: their sandboxes and judge clients live as long as the run."""

    def __init__(self, files: Sequence[str], concurrency: int = 8) -> None:
        self.runners = [Runner(grader) for grader in read_graders(files)]
        self.concurrency = concurrency

    def score(self, texts: Sequence[str], items: Sequence[Any]) -> Scored:
        """Every answer text graded against its data item."""
        totals = torch.zeros(len(texts), dtype=torch.float64)
        by_grader: dict[str, float] = {}
        errors = 0
        for runner in self.runners:
            scores, failed = scores_by_name(runner, texts, items, self.concurrency)
            totals += torch.tensor(scores[runner.grader.name], dtype=torch.float64)
            errors += failed
            by_grader |= {name: sum(values) / max(1, len(values)) for name, values in scores.items()}
        return Scored((totals / len(self.runners)).float(), by_grader, errors)

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
