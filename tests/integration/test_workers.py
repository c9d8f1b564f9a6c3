"""Several job workers on one PostgreSQL database, and `tunesmith jobs ...` against a remote server.

Two workers share a database and a TUNESMITH_HOME: three identical jobs each run to the end, two of them exactly
once; the worker killed (SIGKILL) in the middle of the first leaves it to the other, which takes it over when its
lease runs out and resumes it from its checkpoint to the same adapter, bit for bit, each metrics event written once.
"""

from __future__ import annotations

import io
import json
import os
import signal

import openai

from tests import launch
from tests.conftest import chat
from tests.integration.test_jobs_api import wait
from tests.integration.test_serve import KEY, serving
from tunesmith.jobs.database import DATABASE_URL
from tunesmith.runs import ADAPTER_WEIGHTS

LEASE = "2"


def _rows() -> bytes:
    return "".join(json.dumps(chat(i)) + "\n" for i in range(24)).encode()


def _queued(url: str, model, count: int, epochs: int, seed: int) -> tuple[openai.OpenAI, list[str]]:
    """`count` identical jobs created through the official client: (the client, their ids)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
    data = client.files.create(file=("t.jsonl", io.BytesIO(_rows())), purpose="fine-tune")
    settings = {"model": str(model), "training_file": data.id, "hyperparameters": {"n_epochs": epochs}}
    return client, [client.fine_tuning.jobs.create(**settings, seed=seed).id for _ in range(count)]


def test_two_workers_on_postgres_run_each_job_once_and_take_over_a_killed_workers_job(
    postgres, tmp_path, tiny_model, monkeypatch
):
    home = tmp_path / "home"
    monkeypatch.setenv(DATABASE_URL, postgres.new_database())
    with serving(tiny_model, "--no-worker", home=home) as (_, url):
        client, jobs = _queued(url, tiny_model, count=3, epochs=8, seed=11)
        env = {**os.environ, "TUNESMITH_HOME": str(home)}
        doomed = launch.start(["jobs", "worker", "--lease", LEASE], env={**env, "TUNESMITH_KILL_AT": "logged:5"})
        assert doomed.wait(timeout=300) == -signal.SIGKILL  # it died at step 5 of the first job it took
        survivor = launch.start(["jobs", "worker", "--lease", LEASE], env=env)
        try:
            ended = [wait(client, job_id, seconds=400) for job_id in jobs]
        finally:
            survivor.terminate()
            survivor.wait(timeout=60)
        assert [job.status for job in ended] == ["succeeded"] * 3, [job.error for job in ended]
        adapters = {(home / "runs" / j / "final" / ADAPTER_WEIGHTS).read_bytes() for j in jobs}
        assert len(adapters) == 1  # the resumed job ended exactly where the uninterrupted ones did
        resumed = []
        for job_id in jobs:
            events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
            steps = [e.data["step"] for e in events if e.type == "metrics"][::-1]
            assert steps == list(range(1, len(steps) + 1)) and steps  # each step's event once
            starts = [e.message for e in events if e.message == "Fine-tuning job started"]
            assert len(starts) == 1
            if any(e.message.startswith("Resumed from the checkpoint") for e in events):
                resumed.append(job_id)
        assert resumed == [jobs[0]]  # the killed worker's job, and no other ran twice


def test_two_workers_started_together_split_the_queue(postgres, tmp_path, tiny_model, monkeypatch):
    """Both workers claim from the queue at once: every job runs exactly once and both do some; one of them trains
    its jobs on two processes (`--processes 2`, torchrun), which the jobs flow does not see."""
    import psycopg

    home = tmp_path / "home"
    database = postgres.new_database()
    monkeypatch.setenv(DATABASE_URL, database)
    with serving(tiny_model, "--no-worker", home=home) as (_, url):
        client, jobs = _queued(url, tiny_model, count=4, epochs=1, seed=3)
        env = {**os.environ, "TUNESMITH_HOME": str(home)}
        workers = [
            launch.start(["jobs", "worker", "--once", "--lease", "60", *extra], env=env)
            for extra in ([], ["--processes", "2"])
        ]
        assert [w.wait(timeout=400) for w in workers] == [0, 0]
        ended = [client.fine_tuning.jobs.retrieve(job_id) for job_id in jobs]
        assert [job.status for job in ended] == ["succeeded"] * 4, [job.error for job in ended]
        for job_id in jobs:
            events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
            assert not any(e.message.startswith("Resumed") for e in events)
            steps = [e.data["step"] for e in events if e.type == "metrics"][::-1]
            assert steps == list(range(1, len(steps) + 1)) and steps
            assert client.fine_tuning.jobs.checkpoints.list(job_id).data
        assert len({job.trained_tokens for job in ended}) == 1  # the same global batch on 1 and on 2 processes
    with psycopg.connect(database) as db:
        owners = {row[0] for row in db.execute("SELECT worker FROM jobs")}
    assert len(owners) == 2  # each worker ran some of the four


def _cli(args: list[str], server: str | None = None, home=None) -> tuple[int, str, str]:
    env = {**os.environ, "COLUMNS": "200", **({"TUNESMITH_HOME": str(home)} if home else {})}
    remote = ["--server", server, "--api-key", KEY] if server else []
    done = launch.run(["jobs", *args, *remote], env=env)
    return done.returncode, done.stdout, done.stderr


def test_the_jobs_commands_work_against_a_remote_server_as_against_the_local_store(tmp_path, tiny_model, monkeypatch):
    monkeypatch.delenv(DATABASE_URL, raising=False)
    home = tmp_path / "home"
    with serving(tiny_model, "--api-key", KEY, home=home) as (_, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        data = client.files.create(file=("t.jsonl", io.BytesIO(_rows())), purpose="fine-tune")
        settings = {"model": str(tiny_model), "training_file": data.id, "hyperparameters": {"n_epochs": 40}}
        job = client.fine_tuning.jobs.create(**settings).id
        wait(client, job, statuses=("running",))
        code, text, _ = _cli(["pause", job], url)
        assert code == 0 and text.strip() == f"{job}: pausing"
        wait(client, job, statuses=("paused",))
        code, text, _ = _cli(["list"], url)
        assert code == 0 and job in text and "paused" in text
        remote_show, local_show = _cli(["show", job], url), _cli(["show", job], home=home)
        assert json.loads(remote_show[1]) == json.loads(local_show[1])  # the same object either way
        code, text, _ = _cli(["events", job, "-n", "100"], url)
        assert code == 0 and "Pausing the job after the current step" in text
        messages = [line.split(None, 2)[2] for line in text.splitlines()]
        assert messages.index("Fine-tuning job started") < messages.index("Pausing the job after the current step")
        assert _cli(["resume", job], url)[1].strip() == f"{job}: queued"
        code, text, _ = _cli(["cancel", job], url)
        assert code == 0 and text.startswith(f"{job}: ")
        wait(client, job)
        code, _, error = _cli(["show", "ftjob-nope"], url)
        assert code == 2 and error.strip().startswith("error: ") and "ftjob-nope" in error
        assert len(error.strip().splitlines()) == 1
        code, _, error = _cli(["list"], "http://127.0.0.1:9")  # nothing listens there
        assert code == 2 and "could not connect" in error and "Traceback" not in error
        refused = launch.run(["jobs", "list", "--server", url, "--api-key", "wrong"])
        assert refused.returncode == 2 and "error:" in refused.stderr and "Traceback" not in refused.stderr
