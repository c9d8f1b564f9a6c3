"""A throwaway PostgreSQL server: Debian's `postgresql` package, a data folder made by initdb in a temporary folder
and started by pg_ctl (as an unprivileged user when run as root: initdb refuses root), on a Unix socket only, fsync
off; stopped and removed after. The tests (tests/postgres.py) and bench/scale.py use it."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

UNPRIVILEGED = "nobody"
_names = itertools.count()


class Unavailable(Exception):
    """No PostgreSQL server can start here (not installed, or it failed): the reason."""


@dataclass(frozen=True)
class Server:
    socket_dir: str
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://tunesmith@/{database}?host={self.socket_dir}&port={self.port}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _as_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", UNPRIVILEGED, "--", *command] if os.geteuid() == 0 else command


@contextmanager
def temporary_postgres() -> Iterator[Server]:
    """A running server for the length of the block; Unavailable when none can start."""
    binaries = _binaries()
    if binaries is None:
        raise Unavailable("PostgreSQL is not installed (Debian's postgresql package; .ci/run installs it)")
    folder = tempfile.mkdtemp(prefix="pg")  # short: a socket's path has at most 107 characters
    if os.geteuid() == 0:
        shutil.chown(folder, UNPRIVILEGED)
    os.chmod(folder, 0o700)
    data, port = os.path.join(folder, "data"), 20000 + os.getpid() % 20000
    options = f"-k {folder} -p {port} -c listen_addresses='' -c fsync=off -c max_connections=200"
    try:
        initdb = [str(binaries / "initdb"), "-D", data, "-A", "trust", "-U", "tunesmith", "--no-sync", "-E", "UTF8"]
        subprocess.run(_as_user(initdb), check=True, capture_output=True, text=True, timeout=120)
        start = [str(binaries / "pg_ctl"), "-D", data, "-o", options, "-l", os.path.join(folder, "log"), "-w", "start"]
        subprocess.run(_as_user(start), check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        detail = (getattr(exc, "stderr", "") or str(exc)).strip()
        raise Unavailable(f"PostgreSQL could not start here: {detail.splitlines()[-1] if detail else exc}") from None
    try:
        yield Server(folder, port)
    finally:
        subprocess.run(_as_user([str(binaries / "pg_ctl"), "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
