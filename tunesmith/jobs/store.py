"""The jobs store: files, jobs, events and checkpoints in SQLite (WAL) at TUNESMITH_HOME/tunesmith.db, or in the
PostgreSQL database TUNESMITH_DATABASE_URL names (`database.py`).

Everything the server and the workers share goes through `Store`'s methods, never through SQL elsewhere. Each method
is one short transaction; state changes that two processes race for (claiming a job, a cancel against a finish) are
compare-and-set on the job's status, and a claimed job is the claiming worker's while it heartbeats (its lease).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tunesmith import paths
from tunesmith.jobs.database import Connection, open_database
from tunesmith.jobs.records import (
    DEFAULT_PROJECT,
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
from tunesmith.jobs.schema import MIGRATIONS

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


def in_project(project: str | None) -> tuple[str, list[Any]]:
    """The SQL condition (and its argument) that keeps one project's rows (None: every project's)."""
    return ("TRUE", []) if project is None else ("project = ?", [project])


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
    """The store. Cheap to make: it opens a connection per operation, so any thread or process may use one.

    `scoped(project)` is the store as one project sees it: what it finds and lists is that project's (another
    project's id is found no more than an unknown one), what it adds goes there. The server hands each request the
    view of its key's project; workers and the CLI use the whole store."""

    def __init__(self, path: Path | None = None) -> None:
        self.db = open_database(path or database_path())
        self.db.migrate(MIGRATIONS)
        self.project: str | None = None

    def scoped(self, project: str | None) -> Store:
        """This store seen from `project` (None: every project)."""
        view = copy.copy(self)
        view.project = project
        return view

    def _mine(self) -> tuple[str, list[Any]]:
        """The SQL condition (and its argument) of this view's project."""
        return in_project(self.project)

    def _owned(self, record: Any) -> Any:
        """A record to add, in this view's project."""
        return record if self.project is None else replace(record, project=self.project)

    # files

    def add_file(self, record: FileRecord) -> None:
        values = asdict(self._owned(record))
        with self.db.connect() as db:
            db.execute(
                f"INSERT INTO files ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                list(values.values()),
            )

    def file(self, file_id: str) -> FileRecord | None:
        mine, args = self._mine()
        with self.db.connect() as db:
            row = db.execute(f"SELECT * FROM files WHERE id = ? AND {mine}", [file_id, *args]).fetchone()
        return FileRecord.from_row(row) if row else None

    def files(self, after: str | None, limit: int, purpose: str | None, newest_first: bool = True) -> Page:
        where, args = self._mine()
        if purpose:
            where, args = f"{where} AND purpose = ?", [*args, purpose]
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
            mine, args = self._mine()
            return db.execute(f"DELETE FROM files WHERE id = ? AND {mine}", [file_id, *args]).rowcount > 0

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
        values = self._owned(job).to_row()
        with self.db.connect() as db:
            db.execute(
                f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})", list(values.values())
            )

    def job(self, job_id: str) -> JobRecord | None:
        mine, args = self._mine()
        with self.db.connect() as db:
            row = db.execute(f"SELECT * FROM jobs WHERE id = ? AND {mine}", [job_id, *args]).fetchone()
        return JobRecord.from_row(row) if row else None

    def jobs(self, after: str | None, limit: int, metadata: Mapping[str, str] | None = None) -> Page:
        where, args = self._mine()
        for key, value in (metadata or {}).items():
            field, param = self.db.json_text("metadata", key)
            where += f" AND {field} = ?"
            args += [param, value]
        rows = self._page(f"SELECT * FROM jobs WHERE {where}", args, "jobs", after, limit, True)
        return Page([JobRecord.from_row(r) for r in rows[:limit]], len(rows) > limit)

    def active_jobs(self) -> int:
        """How many jobs (of this view's project) have not ended."""
        mine, args = self._mine()
        with self.db.connect() as db:
            row = db.execute(
                f"SELECT COUNT(*) AS n FROM jobs WHERE status IN ({', '.join('?' * len(ACTIVE))}) AND {mine}",
                [*ACTIVE, *args],
            ).fetchone()
        return int(row["n"])

    def job_by_model(self, model_id: str) -> JobRecord | None:
        """The job that made a fine-tuned model."""
        mine, args = self._mine()
        with self.db.connect() as db:
            row = db.execute(f"SELECT * FROM jobs WHERE fine_tuned_model = ? AND {mine}", [model_id, *args]).fetchone()
        return JobRecord.from_row(row) if row else None

    def checkpoint(self, job_id: str, step: int) -> CheckpointRecord | None:
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM checkpoints WHERE job_id = ? AND step = ?", (job_id, step)).fetchone()
        return CheckpointRecord.from_row(row) if row else None

    def jobs_with_status(self, status: str) -> list[JobRecord]:
        """Oldest first."""
        mine, args = self._mine()
        with self.db.connect() as db:
            rows = db.execute(
                f"SELECT * FROM jobs WHERE status = ? AND {mine} ORDER BY seq", [status, *args]
            ).fetchall()
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
                _owe_event(db, f"fine_tuning.job.{to}", job_id)
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
        mine, args = self._mine()
        with self.db.connect() as db:
            row = db.execute(f"SELECT * FROM tasks WHERE id = ? AND {mine}", [task_id, *args]).fetchone()
        return TaskRecord.from_row(row) if row else None

    def ask_task(self, kind: str, key: str, args: Mapping[str, Any]) -> TaskRecord:
        """The task of this kind for `key`: the one asked before (a failed one queued again), else a new one."""
        with self.db.connect() as db:
            db.execute(
                "INSERT INTO tasks (id, kind, key, args, status, created_at, project) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?) ON CONFLICT DO NOTHING",
                (new_id("task-"), kind, key, json.dumps(dict(args)), int(time.time()), self.project or DEFAULT_PROJECT),
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
        values = asdict(self._owned(record)) | {"event_types": json.dumps(record.event_types)}
        with self.db.connect() as db:
            db.execute(
                f"INSERT INTO webhook_endpoints ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                list(values.values()),
            )

    def endpoint(self, endpoint_id: str) -> EndpointRecord | None:
        mine, args = self._mine()
        with self.db.connect() as db:
            row = db.execute(
                f"SELECT * FROM webhook_endpoints WHERE id = ? AND {mine}", [endpoint_id, *args]
            ).fetchone()
        return EndpointRecord.from_row(row) if row else None

    def endpoints(self, after: str | None, limit: int) -> Page:
        mine, args = self._mine()
        rows = self._page(
            f"SELECT * FROM webhook_endpoints WHERE {mine}", args, "webhook_endpoints", after, limit, True
        )
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


def _owe_event(db: Connection, kind: str, job_id: str) -> None:
    """One delivery of a new event about a job to each endpoint of the job's project that asked for its type."""
    now = int(time.time())
    event_id = new_id("evt_")
    body = json.dumps({"id": event_id, "object": "event", "type": kind, "created_at": now, "data": {"id": job_id}})
    query = "SELECT id, event_types FROM webhook_endpoints WHERE project = (SELECT project FROM jobs WHERE id = ?)"
    for row in db.execute(query, (job_id,)).fetchall():
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
