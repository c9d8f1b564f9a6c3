"""A PostgreSQL server for the tests (bench/postgres_server.py: Debian's package, initdb and pg_ctl in a temporary
folder, as an unprivileged user when the tests run as root), one per test process, stopped when the session ends.
Where none can start, the tests that need it are skipped with the reason."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.postgres_server import Server, Unavailable, temporary_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    """A running PostgreSQL server (skips the test where none can start)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    try:
        with temporary_postgres() as server:
            yield server
    except Unavailable as exc:
        pytest.skip(str(exc))
