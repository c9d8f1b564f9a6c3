"""bench/quality.py's bookkeeping: rows of different precisions never meet, and the verdict reads the targets right."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import quality
from tunesmith.training.plan import resolve_plan


def _row(arm: str, rouge: float, precision: str, **extra: object) -> dict[str, object]:
    row = {"set": "numpy-summaries", "arm": arm, "rougeL": rouge, "held_out_loss": 1.5, "train_seconds": 10.0}
    return row | {"wall_seconds": 12.0, "commit": "abc1234", "precision": precision, "cpu": "test CPU", **extra}


def test_each_precision_has_its_own_table_and_verdict(tmp_path):
    cells = [("trl", 30.0), ("grid-lr0.0018-ep3", 52.0), ("grid-lr0.0018-ep2", 53.0)]  # 300 examples: 3 epochs
    rows = [
        _row("defaults", 50.0, "bf16"),
        _row("grid-lr0.0018-ep2", 53.0, "bf16"),
        _row("defaults", 52.0, "fp32", kept_step=None, steps=90),
        _row("grid-lr0.0018-ep2", 52.5, "fp32", kept_step=40, steps=60),
        _row("trl", 30.0, "fp32"),
        _row("grid-lr0.0006-ep1", 40.0, "fp32", threads=1),
        _row("old-defaults-evals-2", 49.0, "fp32"),
        _row("grid-lr0.0002-ep1", 35.0, "fp32", isa="AVX512", threads=1),
        _row("defaults", 52.0, "fp64", rougeL_items=[50.0, 54.0, 52.0, 52.0]),
        _row("grid-lr0.0006-ep1", 51.0, "fp64", rougeL_items=[49.0, 52.0, 50.0, 53.0]),
        _row("variant-rank-8", 51.0, "fp64", rougeL_items=[49.0, 52.0, 50.0, 53.0]),
        _row("variant-neftune-5", 53.5, "fp64"),
    ]
    results = tmp_path / "quality.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = quality.table(results)
    bf16, fp32 = text.split("### numpy-summaries, fp32")
    # differences 1, 2, 2, -1: mean 1, standard deviation 1.41, standard error 1.41 / sqrt(4)
    fp32, fp64 = fp32.split("### numpy-summaries, fp64")
    assert "(grid-lr0.0006-ep1): +1.0 points (paired standard error 0.7)" in fp64
    choices = "LoRA choices against the defaults (defaults), the metric better if positive, the loss if negative: "
    choices += "neftune-5 +1.5 points, held-out loss "
    choices += "+0.000; rank-8 -1.0 points (paired standard error 0.7), held-out loss +0.000\n"
    assert choices in fp64 and "LoRA choices" not in fp32  # none run there
    assert "defaults against the best grid cell so far (grid-lr0.0018-ep2): -3.0 points" in bf16
    assert "defaults >= TRL; defaults against the best grid cell so far (grid-lr0.0018-ep2): -0.5 points" in fp32
    assert "| 90 / 90 |" in fp32 and "| 40 / 60 |" in fp32  # the step final/ holds, of the run's
    assert "| 10.0 (1 thread) | 12.0 (1 thread) |" in fp32 and fp32.count("(1 thread)") == 2  # arms run side by side
    assert "| 10.0 (AVX512, 1 thread) |" in fp32  # which vector instructions its machine had, once recorded
    order = [line.split(" | ")[0] for line in fp32.splitlines() if line.startswith("| ") and "---" not in line]
    assert order[1:4] == ["| trl", "| old-defaults-evals-2", "| defaults"]  # earlier defaults just above today's
    assert quality._done(results, "bf16") == {("numpy-summaries", "defaults"), ("numpy-summaries", "grid-lr0.0018-ep2")}
    results.write_text(json.dumps(_row("trl", 30.0, "fp32")) + "\n")
    assert "no defaults row yet: nothing to compare" in quality.table(results)
    results.write_text("".join(json.dumps(_row(arm, rouge, "fp32")) + "\n" for arm, rouge in cells))
    stand_in = quality.table(results).split("\n\n")[-1]
    assert stand_in.startswith("grid-lr0.0018-ep3 has the defaults' settings and stands for them: defaults >= TRL; ")
    assert stand_in.endswith("the best grid cell so far (grid-lr0.0018-ep2): -1.0 points\n")
    results.write_text(json.dumps(_row("defaults", 30.0, "fp32")) + "\n")
    assert "no TRL or grid row yet: nothing to compare the defaults with" in quality.table(results)


def test_arm_names_say_what_each_arm_changes_from_the_defaults():
    assert quality._settings("defaults") == {}
    assert quality._settings("grid-lr0.0006-ep2") == {"learning_rate": 6e-4, "epochs": 2}
    assert quality._settings("variant-rank-8") == {"lora": {"rank": 8}}
    rslora = quality.run_config("numpy-summaries", quality._settings("variant-rslora-32-lr6.4e-4"))
    assert rslora.lora.rslora and rslora.learning_rate == pytest.approx(
        1.8e-3 / (16 / 32**0.5), rel=0.01
    )  # scale x2.83
    assert quality._settings("probe-evals-22") == {"eval_every": 22}  # the defaults' path, evaluated more often


def test_a_failed_arm_is_named_at_the_end_and_the_arms_after_it_still_run(tmp_path, monkeypatch):
    outcomes = {"trl": None, "defaults": {"rougeL": 50.0, "precision": "fp32"}}
    monkeypatch.setattr(quality, "_spawn", lambda name, arm, out: outcomes[arm])
    monkeypatch.setattr(quality, "_precision", lambda: "fp32")
    results = tmp_path / "quality.jsonl"
    with pytest.raises(SystemExit, match=r"failed \(errors above\): numpy-summaries:trl$"):
        quality.run(["numpy-summaries"], ["trl", "defaults"], results, fresh=False)
    assert [json.loads(line)["arm"] for line in results.read_text().splitlines()] == ["defaults"]


@pytest.mark.parametrize("name", quality.SETS)
def test_the_grid_cell_that_stands_for_the_defaults_is_the_same_run(name):
    lengths, eval_lengths = (np.full(len(p.read_text().splitlines()), 100) for p in quality._paths(name))
    cell = quality._settings(quality.defaults_cell(name))
    defaults = resolve_plan(quality.run_config(name, {}), lengths, eval_lengths)
    assert cell and resolve_plan(quality.run_config(name, cell), lengths, eval_lengths) == defaults
    assert quality.defaults_cell(name) == "grid-lr0.0018-ep3"  # 300 or 1,200 examples on the 576-wide default model


def test_perplexity_gaps_are_per_cent_and_lower_is_better(tmp_path):
    rows = [
        {"arm": "grid-lr0.0018-ep3", "perplexity": 32.5},
        {"arm": "grid-lr0.0018-ep2", "perplexity": 32.0},
        {"arm": "variant-rank-32", "perplexity": 31.0, "held_out_loss": 3.35},
    ]
    common = {"set": "fortunes", "train_seconds": 1.0, "wall_seconds": 1.0, "commit": "abc1234", "precision": "fp32"}
    common["cpu"] = "test CPU"
    results = tmp_path / "quality.jsonl"
    results.write_text("".join(json.dumps({"held_out_loss": 3.4} | row | common) + "\n" for row in rows))
    verdict = quality.table(results).split("\n\n", 2)[2]
    assert "(grid-lr0.0018-ep2): -1.6%" in verdict  # 0.5 worse than 32.0
    choice = "(grid-lr0.0018-ep3), the metric better if positive, the loss if negative: rank-32 +4.6%, "
    choice += "held-out loss -0.050"  # 1.5 better than 32.5, and a lower loss
    assert verdict.rstrip().endswith(choice)


def test_docs_quality_md_shows_the_tables_of_the_recorded_results(tmp_path):
    doc = quality.ROOT / "docs" / "quality.md"
    written = tmp_path / "quality.md"
    written.write_text(doc.read_text())
    quality.write_tables(written, quality.RESULTS)
    assert written.read_text() == doc.read_text()  # else: python -m bench.quality --write docs/quality.md
    assert doc.read_text().count("<!-- end of table -->") == len(quality.tables(quality.RESULTS))


def test_writing_the_tables_keeps_the_text_around_them_and_names_a_missing_marker(tmp_path):
    results = tmp_path / "quality.jsonl"
    results.write_text(json.dumps(_row("defaults", 50.0, "bf16")) + "\n")
    doc = tmp_path / "quality.md"
    doc.write_text("intro\n<!-- table numpy-summaries, bf16 -->\nold table\n<!-- end of table -->\noutro\n")
    quality.write_tables(doc, results)
    text = doc.read_text()
    assert text.startswith("intro\n<!-- table numpy-summaries, bf16 -->\n#### numpy-summaries, bf16 (test CPU)\n")
    assert text.endswith("no TRL or grid row yet: nothing to compare the defaults with\n<!-- end of table -->\noutro\n")
    for page in ("intro\n", "intro\n<!-- table numpy-summaries, bf16 -->\nold table\n"):
        doc.write_text(page)
        with pytest.raises(SystemExit, match=r"quality.md: no '<!-- table numpy-summaries, bf16 -->' marker with"):
            quality.write_tables(doc, results)
        assert doc.read_text() == page  # nothing lost
