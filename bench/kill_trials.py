"""Kill -9 a training run at random moments (mid-checkpoint included), resume it, and compare with an uninterrupted run.

    .venv/bin/python -m bench.kill_trials --trials 20 --json bench/results/kill_trials.json

Each trial starts the same LoRA run (a tiny random Llama with the default model's tokenizer, dropout on, so that
RNG states matter) with TUNESMITH_KILL_AT naming one moment (tunesmith/training/faults.py): after an optimizer step,
after its metrics line, inside a checkpoint write after any one of its files, after the checkpoint's rename, or
with final/ written but not in place. The process must die by SIGKILL there; `tunesmith train --resume` then
finishes it. A trial passes when every logged loss and the final adapter are bitwise equal to the uninterrupted
run's. Processes are forked from one that imported torch and transformers once (tests/launch.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors.torch import load_file

from tests import launch
from tunesmith.training.checkpoint import FILES

STEPS = 24
SAVE_EVERY = 3


def command(data: Path, model: Path, out: Path, steps: int = STEPS) -> list[str]:
    """`tunesmith` arguments of the run every trial repeats (`steps` longer for a run stopped from outside)."""
    return [
        "train", "--data", str(data), "--model", str(model), "--out", str(out),
        "--epochs", "20", "--max-steps", str(steps), "--batch-tokens", "256", "--save-every", str(SAVE_EVERY),
        "--eval-every", "10", "--lr", "1e-2", "--threads", "1", "--set", "lora.dropout=0.1", "--quiet", "--no-eval",
    ]  # fmt: skip


def moments(rng: random.Random, count: int) -> list[str]:
    """`count` kill moments: each kind of point in turn, at a random step (and file, inside a checkpoint)."""
    saved = [*range(SAVE_EVERY, STEPS, SAVE_EVERY), STEPS]
    kinds = [
        lambda: f"checkpoint:{rng.choice(saved)}:{rng.choice(FILES)}",
        lambda: f"step:{rng.randint(1, STEPS)}",
        lambda: f"renamed:{rng.choice(saved)}",
        lambda: f"logged:{rng.randint(1, STEPS)}",
        lambda: "final:0",
    ]
    return [kinds[i % len(kinds)]() for i in range(count)]


@dataclass(frozen=True)
class Trial:
    """One kill and resume."""

    moment: str
    """TUNESMITH_KILL_AT of the killed process."""
    killed: bool
    """The process died by SIGKILL at that moment."""
    same_losses: bool
    """Every step and evaluation loss equals the uninterrupted run's."""
    same_adapter: bool
    """final/adapter_model.safetensors equals the uninterrupted run's, bit for bit."""
    seconds: float
    """Kill and resume, wall time."""

    @property
    def passed(self) -> bool:
        return self.killed and self.same_losses and self.same_adapter


def history(run: Path) -> list[tuple[str, int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(d["event"], d["step"], d.get("loss", d.get("eval_loss"))) for d in lines]


def same_adapter(a: Path, b: Path) -> bool:
    x, y = (load_file(str(run / "final" / "adapter_model.safetensors")) for run in (a, b))
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def run_trial(moment: str, data: Path, model: Path, whole: Path, out: Path) -> Trial:
    """Kill a run at `moment`, resume it, compare it with `whole` (the uninterrupted run)."""
    started = time.perf_counter()
    env = {**os.environ, "TUNESMITH_KILL_AT": moment}
    killed = launch.run(command(data, model, out), env=env)
    resumed = launch.run(["train", "--resume", str(out), "--quiet", "--no-eval"])
    if resumed.returncode != 0:
        raise RuntimeError(f"{moment}: resume failed: {resumed.stderr.strip()[-500:]}")
    return Trial(
        moment,
        killed.returncode == -signal.SIGKILL,
        history(out) == history(whole),
        same_adapter(out, whole),
        round(time.perf_counter() - started, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="seed of the moments (default: random)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from tests.conftest import chat, make_tiny_model, write_jsonl
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.sources import DEFAULT_MODEL

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = make_tiny_model(root / "tiny", load_tokenizer(DEFAULT_MODEL))
        data = write_jsonl(root / "train.jsonl", [chat(i) for i in range(40)])
        launch.run(command(data, model, root / "whole"), check=True)
        trials = []
        for k, moment in enumerate(moments(random.Random(seed), args.trials)):
            trials.append(run_trial(moment, data, model, root / "whole", root / f"trial-{k}"))
            t = trials[-1]
            print(f"{k + 1:2d} {moment:40s} killed={t.killed} losses={t.same_losses} adapter={t.same_adapter}")
    passed = sum(t.passed for t in trials)
    print(f"{passed} passed, {len(trials) - passed} failed (seed {seed})")
    if args.json:
        summary = {"seed": seed, "steps": STEPS, "passed": passed, "trials": [asdict(t) for t in trials]}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
