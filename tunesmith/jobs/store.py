"""The jobs store: files, jobs, events and checkpoints in SQLite (WAL) at TUNESMITH_HOME/tunesmith.db, or in the
PostgreSQL database TUNESMITH_DATABASE_URL names (`database.py`).

Everything the server and the workers share goes through `Store`'s methods, never through SQL elsewhere. Each method
is one short transaction; state changes that two processes race for (claiming a job, a cancel against a finish) are
compare-and-set on the job's status, and a claimed job is the claiming worker's while it heartbeats (its lease).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunesmith import paths
from tunesmith.jobs.database import Connection, open_database
from tunesmith.jobs.records import (
    WEBHOOK_EVENTS,
    CheckpointRecord,
    DeliveryRecord,
    EndpointRecord,
    EventRecord,
    FileRecord,
    JobRecord,
    TaskRecord,
    new_id,
)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, filename TEXT NOT NULL,
        purpose TEXT NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, path TEXT NOT NULL
    );
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, created_at INTEGER NOT NULL,
        model TEXT NOT NULL, training_file TEXT NOT NULL, validation_file TEXT, hyperparameters TEXT NOT NULL,
        method TEXT NOT NULL, suffix TEXT, seed INTEGER NOT NULL, metadata TEXT, status TEXT NOT NULL,
        requested TEXT, error TEXT, settings TEXT NOT NULL DEFAULT '{}', fine_tuned_model TEXT,
        finished_at INTEGER, trained_tokens INTEGER, estimated_finish INTEGER, result_files TEXT NOT NULL
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL, key TEXT NOT NULL,
        created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL, data TEXT,
        UNIQUE (job_id, key)
    );
    CREATE TABLE checkpoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
        created_at INTEGER NOT NULL, step INTEGER NOT NULL, metrics TEXT NOT NULL, path TEXT NOT NULL,
        UNIQUE (job_id, step)
    );
    """,
    "ALTER TABLE jobs ADD COLUMN model_deleted INTEGER NOT NULL DEFAULT 0;",
    """
    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
        args TEXT NOT NULL, status TEXT NOT NULL, result TEXT, error TEXT, created_at INTEGER NOT NULL,
        UNIQUE (kind, key)
    );
    """,
    """
    CREATE TABLE webhook_endpoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, name TEXT NOT NULL, url TEXT NOT NULL,
        event_types TEXT NOT NULL, secret TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
        status TEXT NOT NULL, last_error TEXT, created_at INTEGER NOT NULL, UNIQUE (endpoint_id, event_id)
    );
    """,
    "ALTER TABLE jobs ADD COLUMN integrations TEXT NOT NULL DEFAULT '[]';",
    """
    ALTER TABLE jobs ADD COLUMN worker TEXT;
    ALTER TABLE jobs ADD COLUMN heartbeat_at REAL;
    ALTER TABLE tasks ADD COLUMN claimed_at REAL;
    """,
)
"""Schema version N is MIGRATIONS[:N] applied in order; a database is moved forward on open, never back."""

ACTIVE = ("validating_files", "queued", "running", "pausing", "paused")
"""Statuses of a job that has not ended."""


class UnknownCursor(Exception):
    """A list's `after` names no object of that list."""

    def __init__(self, after: str) -> None:
        super().__init__(after)
        self.after = after


class FileInUse(Exception):
    """A file that a job which has not ended still needs."""

    def __init__(self, file_id: str, job_id: str) -> None:
        super().__init__(file_id)
        self.file_id, self.job_id = file_id, job_id


def database_path() -> Path:
    return paths.home() / "tunesmith.db"


@dataclass(frozen=True)
class Page:
    """A slice of a list, newest first unless asked otherwise, and whether more follow."""

    items: list[Any]
    """The records of this page."""
    has_more: bool
    """More records follow the last one."""


class Store:
    """The store. Cheap to make: it opens a connection per operation, so any thread or process may use one."""

    def __init__(self, path: Path | None = None) -> None:
        self.db = open_database(path or database_path())
        self.db.migrate(MIGRATIONS)

    # files

    def add_file(self, record: FileRecord) -> None:
        with self.db.connect() as db:
            db.execute(
                "INSERT INTO files (id, filename, purpose, bytes, created_at, path) VALUES (?, ?, ?, ?, ?, ?)",
                (record.id, record.filename, record.purpose, record.bytes, record.created_at, record.path),
            )

    def file(self, file_id: str) -> FileRecord | None:
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return FileRecord.from_row(row) if row else None

    def files(self, after: str | None, limit: int, purpose: str | None, newest_first: bool = True) -> Page:
        where, args = ("purpose = ?", [purpose]) if purpose else ("TRUE", [])
        rows = self._page(f"SELECT * FROM files WHERE {where}", args, "files", after, limit, newest_first)
        return Page([FileRecord.from_row(r) for r in rows[:limit]], len(rows) > limit)

    def delete_file(self, file_id: str) -> bool:
        """Forget a file; False when there is none. A job that has not ended still needs its files: FileInUse, and
        the file stays (checked and deleted in one transaction, so no job can be created on it in between)."""
        statuses = ", ".join("?" * len(ACTIVE))
        with self.db.transaction() as db:  # the write lock first: no job can be created on the file in between
            user = db.execute(
                f"SELECT id FROM jobs WHERE status IN ({statuses}) AND (training_file = ? OR validation_file = ?) "
                "ORDER BY seq LIMIT 1",
                [*ACTIVE, file_id, file_id],
            ).fetchone()
            if user is not None:
                raise FileInUse(file_id, user["id"])
            return db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0

    def _page(
        self, query: str, args: list[Any], table: str, after: str | None, limit: int, newest_first: bool
    ) -> list[Any]:
        """limit + 1 rows after the row `after` in seq order (the extra row says whether more follow)."""
        sign, order = ("<", "DESC") if newest_first else (">", "ASC")
        with self.db.connect() as db:
            if after is not None:
                cursor = db.execute(f"{query} AND id = ?", [*args, after]).fetchone()
                if cursor is None:  # else the list would silently start again from the top
                    raise UnknownCursor(after)
                query += f" AND seq {sign} ?"
                args = [*args, cursor["seq"]]
            return db.execute(f"{query} ORDER BY seq {order} LIMIT ?", [*args, limit + 1]).fetchall()

    # jobs

    def add_job(self, job: JobRecord) -> None:
        values = job.to_row()
        with self.db.connect() as db:
            db.execute(
                f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})", list(values.values())
            )

    def job(self, job_id: str) -> JobRecord | None:
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def jobs(self, after: str | None, limit: int, metadata: Mapping[str, str] | None = None) -> Page:
        where, args = "TRUE", []
        for key, value in (metadata or {}).items():
            field, param = self.db.json_text("metadata", key)
            where += f" AND {field} = ?"
            args += [param, value]
        rows = self._page(f"SELECT * FROM jobs WHERE {where}", args, "jobs", after, limit, True)
        return Page([JobRecord.from_row(r) for r in rows[:limit]], len(rows) > limit)

    def job_by_model(self, model_id: str) -> JobRecord | None:
        """The job that made a fine-tuned model."""
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE fine_tuned_model = ?", (model_id,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def checkpoint(self, job_id: str, step: int) -> CheckpointRecord | None:
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM checkpoints WHERE job_id = ? AND step = ?", (job_id, step)).fetchone()
        return CheckpointRecord.from_row(row) if row else None

    def jobs_with_status(self, status: str) -> list[JobRecord]:
        """Oldest first."""
        with self.db.connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq", (status,)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def move(self, job_id: str, to: str, *, only_from: tuple[str, ...]) -> bool:
        """Set a job's status if it is one of `only_from` (compare-and-set); True when it moved. A move to an end
        (succeeded, failed, cancelled) owes its webhook event to every endpoint that asked for it, written in the
        same transaction: no end is ever left unannounced."""
        marks = ", ".join("?" * len(only_from))
        with self.db.transaction() as db:
            cursor = db.execute(
                f"UPDATE jobs SET status = ? WHERE id = ? AND status IN ({marks})", (to, job_id, *only_from)
            )
            moved = cursor.rowcount > 0
            if moved and f"fine_tuning.job.{to}" in WEBHOOK_EVENTS:
                _owe_event(db, f"fine_tuning.job.{to}", {"id": job_id})
        return moved

    def update_job(self, job_id: str, changes: Mapping[str, Any]) -> None:
        """Write some of a job's fields (JSON-valued ones as JSON)."""
        values = JobRecord.encode(dict(changes))
        with self.db.connect() as db:
            assignments = ", ".join(f"{k} = ?" for k in values)
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*values.values(), job_id])

    def request(self, job_id: str, what: str | None) -> None:
        """Ask the worker to cancel or pause a running job (None: nothing asked)."""
        self.update_job(job_id, {"requested": what})

    def claim_next(self, worker: str = "", lease: float = 0.0) -> JobRecord | None:
        """The job `worker` should run now, made its own: one whose worker stopped heartbeating more than `lease`
        seconds ago (it crashed or restarted: resumed from its checkpoint), else the oldest queued one, moved to
        running. One transaction with the rows locked, so two workers never take the same job. A worker that is the
        only one (SQLite's, holding TUNESMITH_HOME's lock) passes lease 0: what was running is its own."""
        now = time.time()
        with self.db.transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' OR (status IN ('running', 'pausing') "
                "AND (heartbeat_at IS NULL OR heartbeat_at <= ?)) "
                "ORDER BY CASE WHEN status = 'queued' THEN 1 ELSE 0 END, seq LIMIT 1" + self.db.lock_rows,
                (now - lease,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = CASE WHEN status = 'queued' THEN 'running' ELSE status END, worker = ?, "
                "heartbeat_at = ? WHERE id = ?",
                (worker, now, row["id"]),
            )
        return self.job(row["id"])

    def heartbeat(self, job_id: str, worker: str) -> bool:
        """The worker still runs the job: its lease renewed. False when the job is no longer that worker's (another
        took it over after the lease ran out)."""
        with self.db.connect() as db:
            cursor = db.execute(
                "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND worker = ?", (time.time(), job_id, worker)
            )
            return cursor.rowcount > 0

    # tasks: the heavy work a dashboard page asks for, done by the worker

    def task(self, task_id: str) -> TaskRecord | None:
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return TaskRecord.from_row(row) if row else None

    def ask_task(self, kind: str, key: str, args: Mapping[str, Any]) -> TaskRecord:
        """The task of this kind for `key`: the one asked before (a failed one queued again), else a new one."""
        with self.db.connect() as db:
            db.execute(
                "INSERT INTO tasks (id, kind, key, args, status, created_at) "
                "VALUES (?, ?, ?, ?, 'queued', ?) ON CONFLICT DO NOTHING",
                (new_id("task-"), kind, key, json.dumps(dict(args)), int(time.time())),
            )
            db.execute(
                "UPDATE tasks SET status = 'queued', error = NULL WHERE kind = ? AND key = ? AND status = 'failed'",
                (kind, key),
            )
            row = db.execute("SELECT * FROM tasks WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return TaskRecord.from_row(row)

    def claim_task(self) -> TaskRecord | None:
        """The oldest queued task, moved to running (compare-and-set: one taker)."""
        with self.db.connect() as db:
            for row in db.execute("SELECT id FROM tasks WHERE status = 'queued' ORDER BY seq").fetchall():
                taken = db.execute(
                    "UPDATE tasks SET status = 'running' WHERE id = ? AND status = 'queued'", (row["id"],)
                )
                if taken.rowcount:
                    return self.task(row["id"])
        return None

    def end_task(self, task_id: str, result: Mapping[str, Any] | None, error: Mapping[str, Any] | None) -> None:
        """A task succeeded with `result`, or failed with OpenAI's error object fields."""
        status = "failed" if error is not None else "succeeded"
        with self.db.connect() as db:
            db.execute(
                "UPDATE tasks SET status = ?, result = ?, error = ? WHERE id = ?",
                (status, _json(result), _json(error), task_id),
            )

    def requeue_tasks(self, older_than: float = 0.0) -> None:
        """Tasks left running by a worker that stopped are queued again: every running one (the only worker, at its
        start), or those claimed more than `older_than` seconds ago (workers that share the store: a task takes
        seconds, so one running that long was left by a worker that died)."""
        with self.db.connect() as db:
            db.execute(
                "UPDATE tasks SET status = 'queued' "
                "WHERE status = 'running' AND (claimed_at IS NULL OR claimed_at <= ?)",
                (time.time() - older_than,),
            )

    # webhook endpoints, and the events owed to them

    def add_endpoint(self, record: EndpointRecord) -> None:
        values = asdict(record) | {"event_types": json.dumps(record.event_types)}
        with self.db.connect() as db:
            db.execute(
                f"INSERT INTO webhook_endpoints ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                list(values.values()),
            )

    def endpoint(self, endpoint_id: str) -> EndpointRecord | None:
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM webhook_endpoints WHERE id = ?", (endpoint_id,)).fetchone()
        return EndpointRecord.from_row(row) if row else None

    def endpoints(self, after: str | None, limit: int) -> Page:
        rows = self._page("SELECT * FROM webhook_endpoints WHERE TRUE", [], "webhook_endpoints", after, limit, True)
        return Page([EndpointRecord.from_row(r) for r in rows[:limit]], len(rows) > limit)

    def update_endpoint(self, endpoint_id: str, changes: Mapping[str, Any]) -> None:
        values = {k: json.dumps(v) if k == "event_types" else v for k, v in changes.items()}
        values["updated_at"] = int(time.time())
        with self.db.connect() as db:
            assignments = ", ".join(f"{k} = ?" for k in values)
            db.execute(f"UPDATE webhook_endpoints SET {assignments} WHERE id = ?", [*values.values(), endpoint_id])

    def delete_endpoint(self, endpoint_id: str) -> bool:
        """Forget an endpoint and what was still owed to it."""
        with self.db.connect() as db:
            db.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,))
            return db.execute("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,)).rowcount > 0

    def due_deliveries(self, now: float) -> list[tuple[DeliveryRecord, EndpointRecord]]:
        """Pending deliveries whose time has come, oldest first, each with its endpoint."""
        with self.db.connect() as db:
            rows = db.execute(
                "SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_at <= ? ORDER BY seq", (now,)
            ).fetchall()
            if not rows:
                return []
            endpoints = {
                e.id: e for e in map(EndpointRecord.from_row, db.execute("SELECT * FROM webhook_endpoints").fetchall())
            }
        deliveries = [DeliveryRecord.from_row(r) for r in rows]
        return [(d, endpoints[d.endpoint_id]) for d in deliveries if d.endpoint_id in endpoints]

    def take_delivery(self, delivery_id: str, until: float) -> bool:
        """Hold a due delivery for this worker until `until` (compare-and-set on its time): False when another
        worker took it first."""
        now = time.time()
        with self.db.connect() as db:
            cursor = db.execute(
                "UPDATE webhook_deliveries SET next_at = ? WHERE id = ? AND status = 'pending' AND next_at <= ?",
                (until, delivery_id, now),
            )
            return cursor.rowcount > 0

    def attempted(self, delivery_id: str, status: str, next_at: float, error: str | None) -> None:
        """Record an attempt: delivered, pending again from next_at, or failed for good."""
        with self.db.connect() as db:
            db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = ?, next_at = ?, last_error = ? "
                "WHERE id = ?",
                (status, next_at, error, delivery_id),
            )

    # events and checkpoints

    def add_event(self, job_id: str, key: str, message: str, *, data: dict[str, Any] | None = None) -> bool:
        """Record an event once: a second event with the same key (a step run again after a crash) is dropped."""
        kind, level = ("metrics", "info") if key.startswith("metrics:") else ("message", _level(key))
        with self.db.connect() as db:
            cursor = db.execute(
                "INSERT INTO events (id, job_id, key, created_at, level, message, type, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (new_id("ftevent-"), job_id, key, int(time.time()), level, message, kind, _json(data)),
            )
            return cursor.rowcount > 0

    def events(self, job_id: str, after: str | None, limit: int) -> Page:
        rows = self._page("SELECT * FROM events WHERE job_id = ?", [job_id], "events", after, limit, True)
        return Page([EventRecord.from_row(r) for r in rows[:limit]], len(rows) > limit)

    def add_checkpoint(self, record: CheckpointRecord) -> None:
        with self.db.connect() as db:
            db.execute(
                "INSERT INTO checkpoints (id, job_id, created_at, step, metrics, path) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (record.id, record.job_id, record.created_at, record.step, json.dumps(record.metrics), record.path),
            )

    def checkpoints(self, job_id: str, after: str | None, limit: int) -> Page:
        rows = self._page("SELECT * FROM checkpoints WHERE job_id = ?", [job_id], "checkpoints", after, limit, True)
        return Page([CheckpointRecord.from_row(r) for r in rows[:limit]], len(rows) > limit)

    def drop_checkpoints(self, job_id: str, keep_paths: set[str]) -> None:
        """Forget the checkpoints of a job whose folders are gone (the run keeps only its latest)."""
        page = self.checkpoints(job_id, None, 10_000)
        gone = [c.id for c in page.items if c.path not in keep_paths]
        with self.db.transaction() as db:
            for checkpoint_id in gone:
                db.execute("DELETE FROM checkpoints WHERE id = ?", (checkpoint_id,))


def _owe_event(db: Connection, kind: str, data: dict[str, Any]) -> None:
    """One delivery of a new event to each endpoint that asked for its type."""
    now = int(time.time())
    event_id = new_id("evt_")
    body = json.dumps({"id": event_id, "object": "event", "type": kind, "created_at": now, "data": data})
    for row in db.execute("SELECT id, event_types FROM webhook_endpoints").fetchall():
        if kind in json.loads(row["event_types"]):
            db.execute(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, body, next_at, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (new_id("wd_"), row["id"], event_id, body, time.time(), now),
            )


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _level(key: str) -> str:
    return "error" if key == "failed" else "warn" if key.startswith("warning") else "info"
