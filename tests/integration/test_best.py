"""final/ holds the weights of the lowest held-out loss (config `final: best`), or the last step's (`final: last`)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.integration.test_train import _config, _fixed_answers
from tunesmith.training.runner import train

ADAPTER = "adapter_model.safetensors"


def _run(tmp_path, tiny_model, final: str):
    """A run whose held-out loss turns up (a high learning rate) and stops early, every step kept."""
    data = _fixed_answers(tmp_path / "t.jsonl", n=40)
    values = {"epochs": 50, "learning_rate": 0.5, "eval_every": 1, "early_stopping": 2}
    config = _config(data, tiny_model, **values, save_every=1, keep_checkpoints=1000, final=final)
    return train(config, tmp_path / final)


def _evals(run_dir) -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["eval_loss"] for line in lines if line["event"] == "eval" and line["step"] > 0}


def _same(a, b) -> bool:
    left, right = load_file(str(a)), load_file(str(b))
    return left.keys() == right.keys() and all(left[k].equal(right[k]) for k in left)


@pytest.mark.parametrize("final", ["best", "last"])
def test_final_holds_the_best_evaluations_weights_or_the_last(tmp_path, tiny_model, final):
    result = _run(tmp_path, tiny_model, final)
    evals = _evals(result.run_dir)
    best = min(evals, key=evals.__getitem__)
    assert result.reason == "early_stopping" and best < result.state.step  # the last two evaluations were worse
    kept = best if final == "best" else result.state.step
    assert result.kept_step == kept and result.state.best_step == best
    checkpoints = result.run_dir / "checkpoints"
    assert _same(result.final / ADAPTER, checkpoints / f"step-{kept:06d}" / "adapter" / ADAPTER)
    assert not _same(
        result.final / ADAPTER, checkpoints / f"step-{result.state.step + best - kept:06d}" / "adapter" / ADAPTER
    )
    end = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert end["event"] == "end" and end["kept_step"] == kept
    assert (result.run_dir / "best.safetensors").is_file() == (final == "best")
