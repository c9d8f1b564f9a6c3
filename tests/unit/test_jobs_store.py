"""The jobs store, on SQLite and on PostgreSQL alike: forward migrations (from an empty database and from the previous
schema version), compare-and-set moves, claims and leases, events written once, pages without gaps."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from tunesmith.errors import ConfigError
from tunesmith.jobs.database import DATABASE_URL, postgres_ddl
from tunesmith.jobs.records import JobRecord, new_id
from tunesmith.jobs.store import MIGRATIONS, Store

BACKENDS = ("sqlite", "postgres")


def _job(status: str = "queued") -> JobRecord:
    return JobRecord(new_id("ftjob-"), 1, "m", "file-x", None, {}, {"type": "supervised"}, None, 1, None, status)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch, tmp_path):
    """A function making a Store on a fresh database of this backend (the same database each call)."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres").new_database()
        monkeypatch.setenv(DATABASE_URL, url)
        return request.param, url
    monkeypatch.delenv(DATABASE_URL, raising=False)
    return request.param, tmp_path / "t.db"


def _store(backend) -> Store:
    kind, where = backend
    return Store() if kind == "postgres" else Store(where)


def _old_schema(backend, version: int) -> None:
    """A database at schema `version` holding one job, as an older tunesmith left it."""
    kind, where = backend
    insert = (
        "INSERT INTO jobs (id, created_at, model, training_file, hyperparameters, method, seed, status, "
        "result_files) VALUES ('ftjob-old', 1, 'm', 'file-x', '{}', '{}', 1, 'succeeded', '[]')"
    )
    if kind == "sqlite":
        with sqlite3.connect(where) as db:
            db.executescript("".join(MIGRATIONS[:version]) + f"PRAGMA user_version = {version};")
            db.execute(insert)
        return
    import psycopg

    with psycopg.connect(where, autocommit=True) as db:
        for migration in MIGRATIONS[:version]:
            db.execute(postgres_ddl(migration))
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute(f"INSERT INTO schema_version VALUES ({version})")
        db.execute(insert)


def _version(backend) -> int:
    kind, where = backend
    if kind == "sqlite":
        with sqlite3.connect(where) as db:
            return db.execute("PRAGMA user_version").fetchone()[0]
    import psycopg

    with psycopg.connect(where) as db:
        return db.execute("SELECT version FROM schema_version").fetchone()[0]


def _set_version(backend, version: int) -> None:
    kind, where = backend
    if kind == "sqlite":
        with sqlite3.connect(where) as db:
            db.execute(f"PRAGMA user_version = {version}")
        return
    import psycopg

    with psycopg.connect(where, autocommit=True) as db:
        db.execute(f"UPDATE schema_version SET version = {version}")


@pytest.mark.parametrize("version", [1, len(MIGRATIONS) - 1])
def test_an_old_database_is_moved_forward_and_a_newer_one_refused(backend, version):
    _old_schema(backend, version)
    store = _store(backend)
    old = store.job("ftjob-old")
    assert old.model_deleted is False and old.integrations == []
    assert _version(backend) == len(MIGRATIONS)
    _set_version(backend, len(MIGRATIONS) + 1)
    with pytest.raises(ConfigError, match="newer than this tunesmith knows"):
        _store(backend)


def test_an_empty_database_gets_the_whole_schema_once(backend):
    store = _store(backend)
    job = _job()
    store.add_job(job)
    again = _store(backend)  # a second process opening it migrates nothing
    assert again.job(job.id).status == "queued" and _version(backend) == len(MIGRATIONS)


def test_a_job_is_claimed_once_and_moves_only_from_the_states_named(backend):
    store = _store(backend)
    first, second = _job(), _job()
    store.add_job(first)
    store.add_job(second)
    assert store.claim_next().id == first.id
    assert store.claim_next().id == first.id  # still running: the only worker, restarted, takes it back first
    assert not store.move(second.id, "paused", only_from=("running",))
    assert store.move(first.id, "succeeded", only_from=("running",))
    assert store.claim_next().id == second.id and store.job(second.id).status == "running"


def test_a_running_job_is_another_workers_only_after_its_lease_runs_out(backend):
    store = _store(backend)
    job = _job()
    store.add_job(job)
    assert store.claim_next("a", lease=0.5).id == job.id
    assert store.claim_next("b", lease=0.5) is None  # a's, heartbeating
    assert store.heartbeat(job.id, "a")
    time.sleep(0.6)
    assert store.claim_next("b", lease=0.5).id == job.id  # a went quiet: b takes it over
    assert not store.heartbeat(job.id, "a")  # and a learns it is no longer its job
    assert store.heartbeat(job.id, "b")


def test_workers_claiming_at_once_never_take_the_same_job(backend):
    store = _store(backend)
    jobs = [_job() for _ in range(12)]
    for job in jobs:
        store.add_job(job)
    taken: list[str] = []
    lock = threading.Lock()

    def claim(worker: str) -> None:
        mine = _store(backend)
        while (job := mine.claim_next(worker, lease=60)) is not None:
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(j.id for j in jobs)  # each exactly once


def test_an_event_key_is_written_once_and_pages_follow_each_other(backend):
    store = _store(backend)
    job = _job()
    store.add_job(job)
    assert [store.add_event(job.id, f"metrics:{i}", f"step {i}") for i in (1, 2, 2, 3, 4, 5)].count(False) == 1
    seen, after = [], None
    while True:
        page = store.events(job.id, after, 2)
        seen += [e.message for e in page.items]
        if not page.has_more:
            break
        after = page.items[-1].id
    assert seen == ["step 5", "step 4", "step 3", "step 2", "step 1"]


def test_jobs_are_found_by_their_metadata(backend):
    store = _store(backend)
    tagged = JobRecord(
        new_id("ftjob-"), 1, "m", "f", None, {}, {"type": "supervised"}, None, 1, {"team": "a b"}, "queued"
    )
    store.add_job(tagged)
    store.add_job(_job())
    assert [j.id for j in store.jobs(None, 10, {"team": "a b"}).items] == [tagged.id]
    assert store.jobs(None, 10, {"team": "c"}).items == []


def test_an_unreachable_postgres_is_one_line_naming_it_without_its_password(monkeypatch, tmp_path):
    pytest.importorskip("psycopg")
    monkeypatch.setenv(DATABASE_URL, f"postgresql://me:secret@/db?host={tmp_path}&port=1")
    with pytest.raises(ConfigError) as raised:
        Store()
    assert "cannot connect to postgresql://me:***@/db" in str(raised.value) and "secret" not in str(raised.value)


def test_a_due_webhook_delivery_is_taken_by_one_worker_only(backend):
    from tunesmith.jobs.records import EndpointRecord

    store = _store(backend)
    store.add_endpoint(
        EndpointRecord("we_1", "n", "http://127.0.0.1:9", ["fine_tuning.job.succeeded"], "whsec_x", 1, 1)
    )
    job = _job("running")
    store.add_job(job)
    assert store.move(job.id, "succeeded", only_from=("running",))  # owes the endpoint one delivery
    (delivery, endpoint), *rest = store.due_deliveries(time.time())
    assert not rest and endpoint.id == "we_1"
    assert store.take_delivery(delivery.id, time.time() + 60)
    assert not store.take_delivery(delivery.id, time.time() + 60)  # a second worker finds it taken
    assert store.due_deliveries(time.time()) == []  # and not due until the first one's hold runs out
