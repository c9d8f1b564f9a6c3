"""`tunesmith migrate` from a real `tunesmith serve` with finished jobs, the official openai client on both sides:
saved, recorded, trained and compared; killed with kill -9 and continued; a model that no longer answers marked."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest

from tests import launch
from tests.conftest import chat, write_jsonl
from tests.integration.test_jobs_api import wait
from tests.integration.test_serve import KEY, serving
from tunesmith.migrate.source import named_job, succeeded_jobs

HELD_OUT = 12


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_model):
    """A source with two succeeded jobs: one with a validation file, one whose model was deleted since."""
    home = tmp_path_factory.mktemp("source-home")
    with serving(tiny_model, "--api-key", KEY, "--dtype", "float32", home=home) as (_, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        folder = tmp_path_factory.mktemp("source-data")
        train = write_jsonl(folder / "train.jsonl", [chat(i) for i in range(30)])
        held_out = write_jsonl(folder / "eval.jsonl", [chat(i) for i in range(100, 100 + HELD_OUT)])
        uploaded = [client.files.create(file=p.open("rb"), purpose="fine-tune") for p in (train, held_out)]
        hyper = {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 2.0}
        kept = client.fine_tuning.jobs.create(
            model=str(tiny_model),
            training_file=uploaded[0].id,
            validation_file=uploaded[1].id,
            method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
            suffix="kept",
        )
        wait(client, kept.id)
        gone = wait(client, client.fine_tuning.jobs.create(model=str(tiny_model), training_file=uploaded[0].id).id)
        client.models.delete(gone.fine_tuned_model)
        yield {"url": f"{url}/v1", "client": client, "kept": kept.id, "gone": gone.id}


def _migrate(url: str, out: Path, *more: str) -> list[str]:
    return ["migrate", "--from", url, "--api-key", KEY, "--out", str(out), "--max-tokens", "48", *more]


def _state(out: Path) -> dict[str, dict]:
    return {entry["id"]: entry for entry in json.loads((out / "migration.json").read_text())["jobs"]}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_succeeded_job_is_listed_page_after_page(source):
    found = [job["id"] for job in succeeded_jobs(source["client"], page_size=1)]
    assert sorted(found) == sorted([source["kept"], source["gone"]])
    assert named_job(source["client"], source["kept"])["status"] == "succeeded"


def test_a_migration_killed_mid_recording_goes_on_and_marks_the_model_that_no_longer_answers(source, tmp_path):
    out = tmp_path / "moved"
    answers = out / source["kept"] / "compare" / "teacher.jsonl"
    child = launch.start(_migrate(source["url"], out, "--concurrency", "1"))
    deadline = time.monotonic() + 120
    while (not answers.is_file() or not answers.read_text().count("\n")) and time.monotonic() < deadline:
        assert child.poll() is None, child.output()[1]
        time.sleep(0.02)
    child.kill()
    child.wait()
    kept_before = answers.read_text().count("\n")
    assert 0 < kept_before < HELD_OUT  # killed in the middle of the recording
    saved = {p: p.stat().st_mtime_ns for p in (out / source["kept"]).glob("*.json*")}
    saved |= {p: p.stat().st_mtime_ns for p in (out / source["kept"] / "results").iterdir()}

    done = launch.run(_migrate(source["url"], out, "--concurrency", "2"))
    assert done.returncode == 0, done.stderr
    assert all(p.stat().st_mtime_ns == when for p, when in saved.items())  # nothing downloaded twice
    state = _state(out)
    kept, gone = state[source["kept"]], state[source["gone"]]
    assert kept["status"] == "recorded" and kept["answered"] == kept["prompts"] == HELD_OUT
    rows = _lines(answers)
    assert len(rows) == HELD_OUT and len({r["teacher"]["key"] for r in rows}) == HELD_OUT  # each prompt once
    assert {r["messages"][0]["content"] for r in rows} == {f"What is {i} + {i}?" for i in range(100, 100 + HELD_OUT)}
    assert gone["status"] == "saved" and "no longer answers (404)" in gone["reason"]
    folder = out / source["gone"]
    assert (folder / "training.jsonl").read_bytes() == (folder.parent / source["kept"] / "training.jsonl").read_bytes()
    assert len(_lines(folder / "held-out.jsonl")) == 3 and len(_lines(folder / "train-split.jsonl")) == 27
    assert json.loads((folder / "job.json").read_text())["id"] == source["gone"]
    assert any(e["type"] == "metrics" for e in _lines(folder / "events.jsonl"))
    assert f"{source['kept']}: recorded, {HELD_OUT}/{HELD_OUT} answers recorded" in done.stdout


def test_run_trains_the_mapped_config_and_reports_its_agreement_with_the_old_model(source, tmp_path):
    out = tmp_path / "moved"
    done = launch.run(_migrate(source["url"], out, "--job", source["kept"], "--run", "--max-prompts", "6"))
    assert done.returncode == 0, done.stdout + done.stderr
    entry = _state(out)[source["kept"]]
    assert entry["status"] == "trained", entry
    assert 0.0 <= entry["agreement_rougeL"] <= 100.0 and set(entry["agreement"]) == {"rougeL", "chrf", "exact_match"}
    assert sum(entry["wins"].values()) == 6  # every prompt has a reference: won, tied or lost
    folder = out / source["kept"]
    config = (folder / "config.yaml").read_text()
    assert "epochs: 1" in config and "eval_data: " + str(folder / "validation.jsonl") in config
    report = json.loads((folder / "compare" / "report.json").read_text())
    assert report["quality"]["vs_teacher"]["tuned"]["rougeL"] == entry["agreement_rougeL"]
    assert (folder / "compare" / "report.html").is_file() and (folder / "run" / "final").is_dir()
    assert "agreement ROUGE-L" in done.stdout
