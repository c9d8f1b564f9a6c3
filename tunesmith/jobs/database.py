"""The jobs store's database: SQLite (one file in TUNESMITH_HOME, the default) or PostgreSQL (TUNESMITH_DATABASE_URL=
postgresql://..., psycopg 3), for a server and workers on several hosts.

`Store` writes its SQL once, in the dialect both share (`?` parameters, `ON CONFLICT DO NOTHING`, `TRUE`); a
`Database` runs it: connections, write transactions, the schema's migrations, and the few phrases that differ (a
JSON field, a row lock). The schema is written once too, in SQLite's words, and translated for PostgreSQL
(`postgres_ddl`).
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from tunesmith.errors import ConfigError

DATABASE_URL = "TUNESMITH_DATABASE_URL"
"""The environment variable naming a PostgreSQL database (postgresql://user@host:port/name); unset: SQLite."""


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...


class Database(Protocol):
    """What the store needs of a database."""

    name: str
    """Where it is, for messages (a file path, or the URL without its password)."""
    lock_rows: str
    """Appended to a SELECT inside a write transaction to lock the rows it takes, skipping rows another worker holds
    (PostgreSQL); empty where the transaction itself is the lock (SQLite)."""

    def connect(self) -> Iterator[Connection]:
        """A connection for one short operation (autocommit)."""
        ...

    def transaction(self) -> Iterator[Connection]:
        """A connection inside one write transaction: committed when the block ends, rolled back when it raises."""
        ...

    def migrate(self, migrations: Sequence[str]) -> None:
        """Bring the schema to len(migrations): those not yet applied, in order, each with its version number."""
        ...

    def json_text(self, column: str, key: str) -> tuple[str, str]:
        """(SQL for the text of `column`'s JSON object's field `key`, its parameter)."""
        ...


def database_url() -> str:
    """The PostgreSQL database TUNESMITH_DATABASE_URL names, or "" for SQLite (one worker per TUNESMITH_HOME)."""
    return os.environ.get(DATABASE_URL, "").strip()


def open_database(path: Path) -> Database:
    """PostgreSQL when TUNESMITH_DATABASE_URL names one, else SQLite at `path`."""
    url = database_url()
    return Postgres(url) if url else SQLite(path)


class SQLite:
    """One file; writers take the database's write lock first (BEGIN IMMEDIATE), so a transaction sees no race."""

    lock_rows = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            yield db  # type: ignore[misc]
        finally:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def migrate(self, migrations: Sequence[str]) -> None:
        with self.connect() as db:
            raw: sqlite3.Connection = db  # type: ignore[assignment]
            raw.execute("PRAGMA journal_mode=WAL")
            version = raw.execute("PRAGMA user_version").fetchone()[0]
            _check_version(self.name, version, len(migrations))
            for number in range(version, len(migrations)):
                raw.executescript(f"BEGIN; {migrations[number]} PRAGMA user_version = {number + 1}; COMMIT;")

    def json_text(self, column: str, key: str) -> tuple[str, str]:
        return f"json_extract({column}, ?)", f'$."{key}"'


class _PostgresConnection:
    """A psycopg connection taking the store's `?` parameters (psycopg's are %s)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.raw.execute(sql.replace("%", "%%").replace("?", "%s"), list(params))  # type: ignore[no-any-return]


class Postgres:
    """A PostgreSQL database: rows claimed with SELECT ... FOR UPDATE SKIP LOCKED, so that any number of workers
    on any hosts can share it."""

    lock_rows = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                f"{DATABASE_URL} names PostgreSQL but psycopg is not installed",
                hint="pip install 'psycopg[binary]', or unset it to use SQLite",
            ) from None
        self.url = url
        self.name = re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", url)  # never a password in a message
        self._psycopg = psycopg
        with self.connect():  # fail now, with one line, when the server is not there
            pass

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        from psycopg.rows import dict_row

        try:
            raw = self._psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        except self._psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"{DATABASE_URL}: cannot connect to {self.name} ({first})",
                hint="start the PostgreSQL server, or fix the URL (postgresql://user:password@host:port/database)",
            ) from None
        try:
            yield _PostgresConnection(raw)
        finally:
            raw.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.connect() as db:
            raw = db.raw  # type: ignore[attr-defined]
            with raw.transaction():
                yield db

    def migrate(self, migrations: Sequence[str]) -> None:
        with self.transaction() as db:
            # one migrator at a time: two processes starting together would both apply version N
            db.execute("SELECT pg_advisory_xact_lock(72010048)")
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row["version"] if row else 0
            _check_version(self.name, version, len(migrations))
            for number in range(version, len(migrations)):
                db.raw.execute(postgres_ddl(migrations[number]))  # type: ignore[attr-defined]
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (len(migrations),))

    def json_text(self, column: str, key: str) -> tuple[str, str]:
        return f"(({column})::jsonb ->> ?)", key


def postgres_ddl(sqlite_ddl: str) -> str:
    """The schema's SQLite statements in PostgreSQL's words: a sequence for AUTOINCREMENT, 64-bit integers (token
    counts and timestamps outgrow 32 bits), double precision for REAL (a 4-byte real loses seconds of a timestamp)."""
    text = sqlite_ddl.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    text = re.sub(r"\bINTEGER\b", "BIGINT", text)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", text)


def _check_version(name: str, version: int, known: int) -> None:
    if version > known:
        raise ConfigError(
            f"{name} is jobs schema version {version}, newer than this tunesmith knows ({known})",
            hint="upgrade tunesmith on this host to the version the others run",
        )
