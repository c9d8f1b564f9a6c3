"""The jobs store's schema: version N is MIGRATIONS[:N], each in SQLite's words (database.postgres_ddl says them
in PostgreSQL's). A database is moved forward on open, never back; a migration is never edited once released."""

from __future__ import annotations

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
    # projects: what each file, job, task and webhook endpoint belongs to (what was there: the default project),
    # keys (their SHA-256 only), the dashboard's sessions (their token's SHA-256 only) and the audit log
    """
    ALTER TABLE files ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE jobs ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE tasks ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE webhook_endpoints ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX files_project ON files (project, seq);
    CREATE INDEX jobs_project ON jobs (project, seq);
    CREATE TABLE api_keys (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, project TEXT NOT NULL, role TEXT NOT NULL,
        digest TEXT UNIQUE NOT NULL, hint TEXT NOT NULL, name TEXT, created_at INTEGER NOT NULL,
        expires_at INTEGER, revoked_at INTEGER, requests_per_minute INTEGER
    );
    CREATE TABLE sessions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT UNIQUE NOT NULL, key_id TEXT NOT NULL,
        project TEXT, role TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, key_id TEXT NOT NULL, project TEXT,
        action TEXT NOT NULL, target TEXT, detail TEXT
    );
    """,
)
"""Schema version N is MIGRATIONS[:N] applied in order; a database is moved forward on open, never back."""
