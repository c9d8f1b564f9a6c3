"""The jobs store: forward migrations, compare-and-set moves, events written once, pages without gaps."""

from __future__ import annotations

import sqlite3

import pytest

from tunesmith.jobs.records import JobRecord, new_id
from tunesmith.jobs.store import MIGRATIONS, Store


def _job(status: str = "queued") -> JobRecord:
    return JobRecord(new_id("ftjob-"), 1, "m", "file-x", None, {}, {"type": "supervised"}, None, 1, None, status)


def test_an_old_database_is_moved_forward_and_a_newer_one_refused(tmp_path):
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as db:  # a database made by the first version of the schema
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO jobs (id, created_at, model, training_file, hyperparameters, method, seed, status, "
            "result_files) VALUES ('ftjob-old', 1, 'm', 'file-x', '{}', '{}', 1, 'succeeded', '[]')"
        )
    store = Store(path)
    assert store.job("ftjob-old").model_deleted is False
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        Store(path)


def test_a_job_is_claimed_once_and_moves_only_from_the_states_named(tmp_path):
    store = Store(tmp_path / "t.db")
    first, second = _job(), _job()
    store.add_job(first)
    store.add_job(second)
    assert store.claim_next().id == first.id
    assert store.claim_next().id == first.id  # still running: a restarted worker takes it back first
    assert not store.move(second.id, "paused", only_from=("running",))
    assert store.move(first.id, "succeeded", only_from=("running",))
    assert store.claim_next().id == second.id and store.job(second.id).status == "running"


def test_an_event_key_is_written_once_and_pages_follow_each_other(tmp_path):
    store = Store(tmp_path / "t.db")
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
