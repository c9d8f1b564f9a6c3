"""Keys, sessions, the audit log and the store seen from one project (tunesmith/jobs/access.py, Store.scoped), on
SQLite and on PostgreSQL alike."""

from __future__ import annotations

import json
import time

import pytest

from tests.unit.test_jobs_store import _job, _store, backend  # noqa: F401  (the fixture, on both backends)
from tunesmith.errors import ConfigError
from tunesmith.jobs.access import Access, digest
from tunesmith.jobs.records import FileRecord, new_id


def _file(name: str = "t.jsonl") -> FileRecord:
    return FileRecord(new_id("file-"), name, "fine-tune", 1, 1, "/nowhere")


def test_a_key_is_found_by_its_secret_only_while_usable(backend):  # noqa: F811
    access = Access(_store(backend))
    assert not access.keys_exist()
    secret, record = access.create_key("team-a", "reader", name="ci")
    assert secret.startswith("tsk-") and len(secret) >= 40 and record.hint == secret[:8]
    assert access.key_for(secret) == record and access.key_for(secret + "x") is None and access.key_for("") is None
    assert access.keys_exist() and [k.id for k in access.list_keys("team-a")] == [record.id]
    assert access.list_keys("team-b") == []
    assert access.revoke_key(record.id) and not access.revoke_key(record.id)
    assert access.key_for(secret) is None
    expired, _ = access.create_key("team-a", "member", expires_days=1e-9)
    time.sleep(0.01)
    assert access.key_for(expired) is None


def test_bad_names_and_roles_are_refused_with_one_line(backend):  # noqa: F811
    access = Access(_store(backend))
    for project, role in (("Team A", "member"), ("../x", "member"), ("", "member"), ("a", "owner")):
        with pytest.raises(ConfigError):
            access.create_key(project, role)
    assert not access.keys_exist()


def test_a_session_ends_when_its_key_is_revoked_and_stores_only_digests(backend):  # noqa: F811
    store = _store(backend)
    access = Access(store)
    secret, record = access.create_key("a", "member")
    token = access.open_session(record.id, record.project, record.role)
    assert access.session(token).project == "a" and access.session(token + "x") is None
    with store.db.connect() as db:
        keys = [dict(row) for row in db.execute("SELECT * FROM api_keys").fetchall()]
        sessions = [dict(row) for row in db.execute("SELECT * FROM sessions").fetchall()]
    assert secret not in str(keys) and token not in str(sessions)
    assert keys[0]["digest"] == digest(secret) and sessions[0]["digest"] == digest(token)
    access.revoke_key(record.id)
    assert access.session(token) is None
    actions = [entry["action"] for entry in access.audit().items]
    assert actions == ["key.revoke", "session.create", "key.create"]


def test_a_projects_view_finds_lists_and_changes_only_its_own(backend):  # noqa: F811
    store = _store(backend)
    a, b = store.scoped("a"), store.scoped("b")
    mine, job = _file(), _job()
    a.add_file(mine)
    a.add_job(job)
    assert store.file(mine.id).project == "a" and store.job(job.id).project == "a"
    assert b.file(mine.id) is None and b.job(job.id) is None and b.files(None, 10, None).items == []
    assert b.jobs(None, 10).items == [] and b.active_jobs() == 0 and a.active_jobs() == 1
    assert not b.delete_file(mine.id) and store.file(mine.id) is not None
    assert [f.id for f in a.files(None, 10, None).items] == [mine.id]
    task = b.ask_task("check", "k", {})
    assert a.task(task.id) is None and b.task(task.id) is not None


def test_the_keys_and_audit_commands(tmp_path, monkeypatch):
    """`keys create` prints the key once (stdout, nothing else there), `keys list` shows only its first characters,
    `keys revoke` ends it (a second revoke, or a bad project name, is one line and exit 2), `audit` lists both."""
    from typer.testing import CliRunner

    from tunesmith.cli import app
    from tunesmith.jobs.database import DATABASE_URL

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path))
    monkeypatch.delenv(DATABASE_URL, raising=False)
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--project", "team-a", "--role", "reader", "--expires", "30"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    assert secret.startswith("tsk-") and "\n" not in secret
    listed = runner.invoke(app, ["keys", "list", "--json"])
    key = json.loads(listed.stdout)
    assert key["project"] == "team-a" and key["role"] == "reader" and key["expires_at"] and secret not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", key["id"]]).exit_code == 0
    again = runner.invoke(app, ["keys", "revoke", key["id"]])
    assert again.exit_code == 2 and len(again.output.strip().splitlines()) == 1
    bad = runner.invoke(app, ["keys", "create", "--project", "Team A"])
    assert bad.exit_code == 2 and "project 'Team A'" in bad.output and "Traceback" not in bad.output
    log = runner.invoke(app, ["audit", "--json"])
    assert [json.loads(line)["action"] for line in log.stdout.splitlines()] == ["key.revoke", "key.create"]


def test_a_jobs_end_is_owed_only_to_its_projects_webhook_endpoints(backend):  # noqa: F811
    from tunesmith.jobs.records import EndpointRecord

    store = _store(backend)
    ends = ["fine_tuning.job.succeeded"]
    for project in ("a", "b"):
        store.scoped(project).add_endpoint(EndpointRecord(new_id("we_"), project, "http://x", ends, "s", 1, 1))
    job = _job("running")
    store.scoped("a").add_job(job)
    assert store.move(job.id, "succeeded", only_from=("running",))
    owed = store.due_deliveries(time.time() + 1)
    assert [endpoint.name for _, endpoint in owed] == ["a"]
