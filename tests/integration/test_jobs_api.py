"""The files and fine-tuning jobs API with the official openai client against a real `tunesmith serve` and worker,
on SQLite here and, every test of this module again, on PostgreSQL in test_jobs_api_postgres.py (a fresh database
for each TUNESMITH_HOME)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from tests import launch
from tests.conftest import chat, write_jsonl
from tests.integration.test_serve import KEY, serving, start_server
from tunesmith.jobs.database import DATABASE_URL
from tunesmith.runs import RunFolder

ENDED = ("succeeded", "failed", "cancelled")


def use_store(kind: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Every server, worker and client of a module on this jobs store (TUNESMITH_DATABASE_URL set for it)."""
    with pytest.MonkeyPatch.context() as patch:
        if kind == "postgres":
            patch.setenv(DATABASE_URL, request.getfixturevalue("postgres").new_database())
        else:
            patch.delenv(DATABASE_URL, raising=False)
        yield kind


@pytest.fixture(scope="module")
def store_kind(request):
    yield from use_store("sqlite", request)


@pytest.fixture
def own_store(store_kind, request, monkeypatch):
    """A test with a TUNESMITH_HOME of its own gets a database of its own too."""
    if store_kind == "postgres":
        monkeypatch.setenv(DATABASE_URL, request.getfixturevalue("postgres").new_database())
    return store_kind


@pytest.fixture(scope="module")
def home(tmp_path_factory, store_kind):
    return tmp_path_factory.mktemp(f"jobs-home-{store_kind}")


@pytest.fixture(scope="module")
def server(home, tiny_model):
    with serving(tiny_model, "--api-key", KEY, "--dtype", "float32", "--max-upload", "1", home=home) as (_, url):
        yield url
    assert _worker_gone(home), "the server's worker outlived it"


def _worker_gone(home: Path, seconds: float = 60) -> bool:
    """The worker lock of `home` can be taken: its worker has exited."""
    from tunesmith.jobs.worker import take_lock

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_HOME", str(home))
        for _ in range(int(seconds * 4)):
            lock = take_lock(wait=False)
            if lock is not None:
                lock.close()
                return True
            time.sleep(0.25)
    return False


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def files(client, tmp_path_factory):
    folder = tmp_path_factory.mktemp("upload")
    train = write_jsonl(folder / "train.jsonl", [chat(i) for i in range(24)])
    held_out = write_jsonl(folder / "eval.jsonl", [chat(i) for i in range(100, 105)])
    return {
        name: client.files.create(file=path.open("rb"), purpose="fine-tune")
        for name, path in (("train", train), ("eval", held_out))
    }


def wait(client, job_id, statuses=ENDED, seconds=240):
    for _ in range(seconds * 4):
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.25)
    pytest.fail(f"job {job_id} still {job.status} after {seconds} s")


def required_fields_present(model_class, raw: dict) -> list[str]:
    """The fields OpenAI's reference marks required that the server left out (the client would not notice)."""
    return [name for name, field in model_class.model_fields.items() if field.is_required() and name not in raw]


@pytest.fixture(scope="module")
def finished(client, files, tiny_model):
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=files["train"].id,
        validation_file=files["eval"].id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
        suffix="sums",
        seed=7,
        metadata={"team": "calls"},
    )
    assert job.status == "validating_files" and job.object == "fine_tuning.job"
    return wait(client, job.id)


def test_a_job_runs_from_upload_to_a_named_model_with_events_checkpoints_and_results(client, finished, tiny_model):
    assert finished.status == "succeeded", finished.error
    assert finished.fine_tuned_model == f"ft:{tiny_model.name}:sums:{finished.id}"
    assert finished.trained_tokens > 0 and finished.finished_at >= finished.created_at
    assert finished.hyperparameters.n_epochs == 2 and finished.method.type == "supervised"
    events = [e for e in client.fine_tuning.jobs.list_events(finished.id, limit=100).data][::-1]
    messages = [e.message for e in events]
    for expected in ("Created fine-tuning job", "Validating training file", "Files validated", "job started"):
        assert any(expected in m for m in messages), (expected, messages)
    assert messages[-1].startswith("The job has successfully completed")
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2
    assert any("valid_loss" in e.data for e in events if e.type == "metrics")
    checkpoints = client.fine_tuning.jobs.checkpoints.list(finished.id).data
    assert 1 <= len(checkpoints) <= 3
    last = checkpoints[0]
    assert last.step_number == steps[-1] and last.metrics.train_loss is not None
    assert last.fine_tuned_model_checkpoint == f"{finished.fine_tuned_model}:ckpt-step-{last.step_number}"
    assert len(finished.result_files) == 2  # the metrics CSV and the evaluation report
    assert "<html" in client.files.content(finished.result_files[1]).text.lower()
    result = client.files.content(finished.result_files[0]).text.splitlines()
    assert result[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(result) == len(steps) + 1


def test_the_tuned_model_is_listed_and_answers_at_once_without_a_restart(client, finished):
    assert finished.fine_tuned_model in [m.id for m in client.models.list().data]
    answer = client.chat.completions.create(
        model=finished.fine_tuned_model, messages=[{"role": "user", "content": "What is 3 + 3?"}], max_tokens=8
    )
    assert answer.model == finished.fine_tuned_model and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens >= 1
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=finished.fine_tuned_model + "x", messages=[{"role": "user", "content": "hi"}]
        )


def test_a_checkpoint_answers_as_a_model_and_a_deleted_model_stops_answering(client, files, tiny_model):
    job = client.fine_tuning.jobs.create(model=str(tiny_model), training_file=files["train"].id, suffix="gone")
    job = wait(client, job.id)
    checkpoint = client.fine_tuning.jobs.checkpoints.list(job.id).data[-1]
    question = [{"role": "user", "content": "What is 2 + 2?"}]
    answer = client.chat.completions.create(
        model=checkpoint.fine_tuned_model_checkpoint, messages=question, max_tokens=4
    )
    assert answer.model == checkpoint.fine_tuned_model_checkpoint
    client.chat.completions.create(model=job.fine_tuned_model, messages=question, max_tokens=4)
    assert client.models.delete(job.fine_tuned_model).deleted
    assert job.fine_tuned_model not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=job.fine_tuned_model, messages=question, max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.models.delete(job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        client.models.delete(client.models.list().data[0].id)  # the base is not a tuned model


def test_every_object_carries_the_fields_openai_marks_required(client, finished, files):
    raw = client.fine_tuning.jobs.with_raw_response.retrieve(finished.id).http_response.json()
    assert required_fields_present(FineTuningJob, raw) == []
    raw = client.fine_tuning.jobs.with_raw_response.list_events(finished.id).http_response.json()
    assert raw["object"] == "list" and required_fields_present(FineTuningJobEvent, raw["data"][0]) == []
    raw = client.fine_tuning.jobs.checkpoints.with_raw_response.list(finished.id).http_response.json()
    assert required_fields_present(FineTuningJobCheckpoint, raw["data"][0]) == []
    raw = client.files.with_raw_response.retrieve(files["train"].id).http_response.json()
    assert required_fields_present(FileObject, raw) == []


def test_lists_page_by_after_without_gaps_or_repeats(client, finished):
    every = [e.id for e in client.fine_tuning.jobs.list_events(finished.id, limit=100).data]
    paged = [e.id for e in client.fine_tuning.jobs.list_events(finished.id, limit=3)]  # auto-paging iterator
    assert paged == every and len(set(every)) == len(every)
    first = client.fine_tuning.jobs.list_events(finished.id, limit=3)
    assert first.has_more and len(first.data) == 3
    mine = client.fine_tuning.jobs.list(metadata={"team": "calls"}).data
    assert [j.id for j in mine] == [finished.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "other"}).data == []
    uploaded = [f.id for f in client.files.list(limit=1)]
    assert len(uploaded) >= 3  # two uploads and the result file, paged one at a time


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"training_file": "file-nope"}, 400, "training_file"),
        ({"model": "no-such-model-xyz"}, 404, "model"),
        ({"hyperparameters": {"n_epochs": 0}}, 400, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"lora_rank": 0}}, 400, "hyperparameters.lora_rank"),
        ({"hyperparameters": {"finetuning_type": "qlora"}}, 400, "hyperparameters.finetuning_type"),
        ({"method": {"type": "reinforcement"}}, 400, "method"),
        (
            {"method": {"type": "reinforcement", "reinforcement": {"grader": {"type": "string_check"}}}},
            400,
            "method.reinforcement.grader",
        ),
        ({"method": {"type": "dpo", "supervised": {}}}, 400, "method"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}}, 400, "method.dpo.hyperparameters.beta"),
        ({"suffix": "../x"}, 400, "suffix"),
    ],
)
def test_a_bad_job_request_is_an_error_object_and_creates_nothing(client, files, tiny_model, change, status, param):
    before = len(client.fine_tuning.jobs.list(limit=100).data)
    body = {"model": str(tiny_model), "training_file": files["train"].id} | change
    with pytest.raises(openai.APIStatusError) as caught:
        client.fine_tuning.jobs.create(**body)
    assert caught.value.status_code == status
    assert caught.value.body["param"] == param and caught.value.body["message"]
    assert len(client.fine_tuning.jobs.list(limit=100).data) == before


def test_uploads_are_stored_by_id_never_by_their_name(client, home, tmp_path):
    record = client.files.create(file=("../../escape.jsonl", io.BytesIO(b'{"text": "x"}\n')), purpose="fine-tune")
    assert record.filename == "escape.jsonl" and record.id.startswith("file-")
    stored = list((home / "files").glob(f"{record.id}*"))
    assert len(stored) == 1 and stored[0].read_bytes() == b'{"text": "x"}\n'
    assert not (home.parent / "escape.jsonl").exists() and not (home / "escape.jsonl").exists()
    assert client.files.content(record.id).content == b'{"text": "x"}\n'
    assert client.files.delete(record.id).deleted and not stored[0].exists()
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(record.id)


@pytest.mark.parametrize(
    ("upload", "purpose", "status"),
    [
        (("big.jsonl", io.BytesIO(b"x" * (2 * 1024 * 1024))), "fine-tune", 413),
        (("data.exe", io.BytesIO(b"{}\n")), "fine-tune", 400),
        (("data.jsonl", io.BytesIO(b"{}\n")), "assistants", 400),
    ],
)
def test_a_bad_upload_is_refused_and_stores_nothing(client, home, upload, purpose, status):
    before = sorted(p.name for p in (home / "files").iterdir())
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=upload, purpose=purpose)
    assert caught.value.status_code == status and caught.value.body["message"]
    assert sorted(p.name for p in (home / "files").iterdir()) == before


def test_a_bad_training_file_fails_the_job_naming_line_and_code(client, tiny_model, tmp_path):
    rows = [chat(i) for i in range(12)] + [{"messages": [{"role": "asistant", "content": "x"}]}]
    bad = client.files.create(file=write_jsonl(tmp_path / "bad.jsonl", rows).open("rb"), purpose="fine-tune")
    job = wait(client, client.fine_tuning.jobs.create(model=str(tiny_model), training_file=bad.id).id)
    assert job.status == "failed" and job.error.code == "unrecognized_role"
    assert job.error.message.startswith(f"{bad.id}:13:") and job.error.param == "training_file"
    assert not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id).data)


def test_a_bad_tool_call_fails_the_job_naming_line_and_code(client, tiny_model, tmp_path):
    guide = Path(__file__).resolve().parents[1] / "data" / "tools" / "openai-guide.jsonl"
    rows = [json.loads(line) for line in guide.read_text().splitlines()]
    rows[4]["messages"][1]["tool_calls"][0]["function"]["arguments"] = '{"location": "Lima", "format": "kelvin"}'
    bad = client.files.create(file=write_jsonl(tmp_path / "tools.jsonl", rows).open("rb"), purpose="fine-tune")
    job = wait(client, client.fine_tuning.jobs.create(model=str(tiny_model), training_file=bad.id).id)
    assert job.status == "failed" and job.error.code == "tool_arguments_mismatch"
    assert job.error.message.startswith(f"{bad.id}:5:") and "format" in job.error.message


def test_every_jobs_route_needs_the_key(server, finished, files):
    anonymous = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    calls = [
        lambda: anonymous.files.list(),
        lambda: anonymous.files.retrieve(files["train"].id),
        lambda: anonymous.files.content(files["train"].id),
        lambda: anonymous.files.delete(files["train"].id),
        lambda: anonymous.files.create(file=("a.jsonl", io.BytesIO(b"{}")), purpose="fine-tune"),
        lambda: anonymous.fine_tuning.jobs.create(model="m", training_file=files["train"].id),
        lambda: anonymous.fine_tuning.jobs.list(),
        lambda: anonymous.fine_tuning.jobs.retrieve(finished.id),
        lambda: anonymous.fine_tuning.jobs.cancel(finished.id),
        lambda: anonymous.fine_tuning.jobs.pause(finished.id),
        lambda: anonymous.fine_tuning.jobs.resume(finished.id),
        lambda: anonymous.fine_tuning.jobs.list_events(finished.id),
        lambda: anonymous.fine_tuning.jobs.checkpoints.list(finished.id),
    ]
    for call in calls:
        with pytest.raises(openai.AuthenticationError):
            call()


def test_pause_then_resume_finishes_and_cancel_stops_keeping_the_checkpoint(client, files, tiny_model):
    long = {"n_epochs": 40}
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model), training_file=files["train"].id, hyperparameters=long, seed=3
    )
    wait(client, job.id, ("running",))
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id).data):
        time.sleep(0.1)
    client.fine_tuning.jobs.pause(job.id)
    paused = wait(client, job.id, ("paused",))
    assert client.fine_tuning.jobs.checkpoints.list(paused.id).data
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)
    client.fine_tuning.jobs.resume(job.id)
    wait(client, job.id, ("running",))
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.id == job.id
    ended = wait(client, job.id)
    assert ended.status == "cancelled" and ended.fine_tuned_model is None
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("Resumed from the checkpoint" in m for m in messages)


def _worker(home: Path, kill_at: str = "") -> int:
    """`tunesmith jobs worker --once` in a process of its own; its exit code (-9 when the kill hook fired)."""
    env = {**os.environ, "TUNESMITH_HOME": str(home), "TUNESMITH_KILL_AT": kill_at}
    # on PostgreSQL a running job is another worker's until its lease runs out: a short one here
    return launch.run(["jobs", "worker", "--once", "--lease", "1"], env=env).returncode


def test_a_worker_killed_mid_job_is_resumed_by_the_next_to_the_same_adapter(tmp_path, tiny_model, own_store):
    """Two identical jobs: the first worker is killed (SIGKILL) after step 5 of the first job; the next worker
    resumes it, then runs the second through. Both adapters are bitwise equal and no event is written twice."""
    home = tmp_path / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_HOME", str(home))
        process, url = start_server(tiny_model, "--no-worker")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
        train = client.files.create(file=("t.jsonl", io.BytesIO(_rows())), purpose="fine-tune")
        settings = {"model": str(tiny_model), "training_file": train.id, "hyperparameters": {"n_epochs": 8}}
        jobs = [client.fine_tuning.jobs.create(**settings, seed=11).id for _ in range(2)]
        assert {client.fine_tuning.jobs.retrieve(j).status for j in jobs} == {"validating_files"}  # the worker's work
        assert _worker(home, "logged:5") == -signal.SIGKILL
        assert client.fine_tuning.jobs.retrieve(jobs[0]).status == "running"
        assert _worker(home) == 0
        finished = [client.fine_tuning.jobs.retrieve(job_id) for job_id in jobs]
        assert [j.status for j in finished] == ["succeeded", "succeeded"]
        adapters = [(home / "runs" / j / "final" / "adapter_model.safetensors").read_bytes() for j in jobs]
        assert adapters[0] == adapters[1]
        events = client.fine_tuning.jobs.list_events(jobs[0], limit=100).data
        steps = [e.data["step"] for e in events if e.type == "metrics"][::-1]
        assert steps == list(range(1, len(steps) + 1))
        assert any(e.message.startswith("Resumed from the checkpoint") for e in events)
        assert len({e.message for e in events}) == len(events)
    finally:
        process.terminate()
        process.wait(timeout=60)


def _rows() -> bytes:
    return "".join(json.dumps(chat(i)) + "\n" for i in range(24)).encode()


def test_the_migration_guides_script_runs_unchanged_against_the_server(server, tiny_model, tmp_path):
    script = Path(__file__).parents[2] / "examples" / "from-openai" / "finetune.py"
    train = write_jsonl(tmp_path / "train.jsonl", [chat(i) for i in range(200, 224)])
    held_out = write_jsonl(tmp_path / "eval.jsonl", [chat(i) for i in range(300, 305)])
    env = {**os.environ, "OPENAI_BASE_URL": f"{server}/v1", "OPENAI_API_KEY": KEY, "FINE_TUNE_MODEL": str(tiny_model)}
    done = subprocess.run(
        [sys.executable, str(script), str(train), str(held_out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "event: The job has successfully completed" in done.stdout
    answered = [line for line in done.stdout.splitlines() if line.startswith(f"ft:{tiny_model.name}:calls:ftjob-")]
    assert len(answered) == 1  # the tuned model's answer follows its name (and may run over several lines)


def test_a_file_of_another_purpose_cannot_train_a_job(client, finished, tiny_model):
    results = finished.result_files[0]
    assert client.files.retrieve(results).purpose == "fine-tune-results"
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=str(tiny_model), training_file=results)
    assert caught.value.body["param"] == "training_file" and "purpose" in caught.value.body["message"]


BRAND = Path(__file__).resolve().parents[2] / "examples" / "brand-voice"


def _upload_lines(client, source: Path, lines: slice, folder: Path):
    path = folder / f"{lines.start}-{source.name}"
    path.write_text("\n".join(source.read_text().splitlines()[lines]) + "\n")
    return client.files.create(file=path.open("rb"), purpose="fine-tune")


def test_a_dpo_job_on_openai_preference_pairs_trains_with_beta_and_reports_rewards(
    client, files, home, tiny_model, tmp_path
):
    train = _upload_lines(client, BRAND / "train-openai.jsonl", slice(0, 16), tmp_path)
    held_out = _upload_lines(client, BRAND / "train-openai.jsonl", slice(16, 20), tmp_path)
    method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}}
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model), training_file=train.id, validation_file=held_out.id, method=method, seed=3
    )
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    job = wait(client, job.id)
    assert job.status == "succeeded", job.error
    config = RunFolder(home / "runs" / job.id).read_config()
    assert config["objective"] == "dpo" and config["preference"]["beta"] == 0.2
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all("train_reward_accuracy" in m and "train_reward_margin" in m for m in metrics)
    assert any("valid_reward_accuracy" in m for m in metrics), [e.message for e in events]
    assert "preference accuracy" in events[0].message  # the evaluation's headline, base against tuned
    refused = client.fine_tuning.jobs.create(model=str(tiny_model), training_file=train.id)  # supervised on pairs
    chat_as_dpo = client.fine_tuning.jobs.create(model=str(tiny_model), training_file=files["train"].id, method=method)
    for failed in (wait(client, refused.id), wait(client, chat_as_dpo.id)):
        assert failed.status == "failed" and failed.error.code == "invalid_training_file"
    assert "method type dpo" in wait(client, refused.id).error.message
    assert "needs preference pairs" in wait(client, chat_as_dpo.id).error.message
