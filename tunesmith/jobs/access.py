"""Projects, their API keys, the dashboard's sessions and the audit log, in the jobs store's database (SQLite or
PostgreSQL alike).

A key is `tsk-` and 43 random URL-safe characters (256 bits), shown once when made; the store keeps its SHA-256 and
a hint of its first characters, never the key. A fast hash is enough for a random 256-bit secret (nothing to guess
from it), and it lets a key be found by one indexed lookup of its digest, the same work whichever key is sent.
A project is a name that keys belong to; what a key makes belongs to its project.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, fields
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.jobs.records import new_id
from tunesmith.jobs.store import Page, Store, in_project

ROLES = ("admin", "member", "reader", "inference")
"""What a key may do in its project: admin everything (webhooks, deleting models), member upload, train and call
models, reader read everything and call models, inference list and call models only."""
KEY_PREFIX = "tsk-"
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SESSION_SECONDS = 12 * 3600
"""How long a dashboard sign-in lasts."""


def digest(secret: str) -> str:
    """The SHA-256 of a key or session token, as stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_project(name: str) -> str:
    if not PROJECT_NAME.fullmatch(name):
        raise ConfigError(
            f"project {name!r}: not a project name",
            hint="use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class KeyRecord:
    """An API key as stored (its digest, never the key)."""

    id: str
    """key-..., how listings and the audit log name it."""
    project: str
    """The project it belongs to."""
    role: str
    """admin, member, reader or inference (ROLES)."""
    hint: str
    """Its first characters, to recognise it by."""
    name: str | None
    """The user's label for it."""
    created_at: int
    """Unix time."""
    expires_at: int | None
    """Unix time it stops working; None: never."""
    revoked_at: int | None
    """Unix time it was revoked; None: not revoked."""
    requests_per_minute: int | None
    """Its request limit; None: the server's."""

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def as_object(self) -> dict[str, Any]:
        return {"object": "api_key", **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True)
class SessionRecord:
    """A dashboard sign-in: whose key, until when."""

    key_id: str
    """The key it signed in with ("server" for the server's own key)."""
    project: str | None
    """That key's project (None: the server's key, every project)."""
    role: str
    """That key's role."""
    expires_at: int
    """Unix time it ends."""
    requests_per_minute: int | None = None
    """That key's own request limit (None: the server's)."""


class Access:
    """Keys, sessions and the audit log of one store."""

    def __init__(self, store: Store) -> None:
        self.db = store.db

    # keys

    def create_key(
        self,
        project: str,
        role: str,
        *,
        name: str | None = None,
        expires_days: float | None = None,
        requests_per_minute: int | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key of `project`: (the key, shown this once; its record)."""
        if role not in ROLES:
            raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}", hint="pass --role admin|member|...")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        now = int(time.time())
        record = KeyRecord(
            id=new_id("key-"),
            project=check_project(project),
            role=role,
            hint=secret[:8],
            name=name,
            created_at=now,
            expires_at=now + int(expires_days * 86400) if expires_days is not None else None,
            revoked_at=None,
            requests_per_minute=requests_per_minute,
        )
        values = {f.name: getattr(record, f.name) for f in fields(record)} | {"digest": digest(secret)}
        with self.db.connect() as db:
            db.execute(
                f"INSERT INTO api_keys ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                list(values.values()),
            )
        self.record("key.create", record.id, record.project, record.id, f"role {role}")
        return secret, record

    def key_for(self, secret: str) -> KeyRecord | None:
        """The usable key whose secret this is (None: unknown, revoked or expired)."""
        if not secret.startswith(KEY_PREFIX):
            return None
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM api_keys WHERE digest = ?", (digest(secret),)).fetchone()
        record = KeyRecord.from_row(row) if row else None
        return record if record is not None and record.usable(time.time()) else None

    def key(self, key_id: str) -> KeyRecord | None:
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return KeyRecord.from_row(row) if row else None

    def keys_exist(self) -> bool:
        """Whether any key was ever made (a server without its own key is open only while none was)."""
        with self.db.connect() as db:
            return db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

    def list_keys(self, project: str | None = None) -> list[KeyRecord]:
        """Every key (of one project), oldest first."""
        where, args = in_project(project or None)
        with self.db.connect() as db:
            rows = db.execute(f"SELECT * FROM api_keys WHERE {where} ORDER BY seq", args).fetchall()
        return [KeyRecord.from_row(r) for r in rows]

    def revoke_key(self, key_id: str, by: str = "cli") -> bool:
        """Revoke a key and end its sessions at once; False when there is no such key (or it was revoked)."""
        with self.db.transaction() as db:
            done = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (int(time.time()), key_id)
            ).rowcount
            db.execute("DELETE FROM sessions WHERE key_id = ?", (key_id,))
        if done:
            record = self.key(key_id)
            self.record("key.revoke", by, record.project if record else None, key_id)
        return bool(done)

    # dashboard sessions

    def open_session(self, key_id: str, project: str | None, role: str) -> str:
        """A new session's token (for the cookie; its digest alone is stored)."""
        token = secrets.token_urlsafe(32)
        now = int(time.time())
        with self.db.connect() as db:
            db.execute(
                "INSERT INTO sessions (digest, key_id, project, role, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (digest(token), key_id, project, role, now, now + SESSION_SECONDS),
            )
        self.record("session.create", key_id, project, None)
        return token

    def session(self, token: str) -> SessionRecord | None:
        """The live session of a cookie's token (None: unknown, expired, or its key revoked)."""
        with self.db.connect() as db:
            row = db.execute("SELECT * FROM sessions WHERE digest = ?", (digest(token),)).fetchone()
        if row is None or row["expires_at"] <= time.time():
            return None
        key = self.key(row["key_id"]) if row["key_id"] != "server" else None
        if key is not None and not key.usable(time.time()):
            return None
        limit = key.requests_per_minute if key else None
        return SessionRecord(row["key_id"], row["project"], row["role"], row["expires_at"], limit)

    def close_session(self, token: str) -> None:
        with self.db.connect() as db:
            db.execute("DELETE FROM sessions WHERE digest = ?", (digest(token),))

    # the audit log: appended to, never changed

    def record(self, action: str, key_id: str, project: str | None, target: str | None, detail: str = "") -> None:
        with self.db.connect() as db:
            db.execute(
                "INSERT INTO audit (at, key_id, project, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), key_id, project, action, target, detail or None),
            )

    def audit(self, project: str | None = None, limit: int = 100) -> Page:
        """The newest entries first (of one project)."""
        where, args = in_project(project or None)
        with self.db.connect() as db:
            rows = db.execute(
                f"SELECT * FROM audit WHERE {where} ORDER BY seq DESC LIMIT ?", [*args, limit + 1]
            ).fetchall()
        entries = [{k: row[k] for k in ("at", "key_id", "project", "action", "target", "detail")} for row in rows]
        return Page(entries[:limit], len(entries) > limit)
