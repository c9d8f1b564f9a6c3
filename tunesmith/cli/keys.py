"""`tunesmith keys` and `tunesmith audit`: a shared server's projects, their API keys and who did what, in the jobs
store (TUNESMITH_HOME, or TUNESMITH_DATABASE_URL's PostgreSQL)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated

import typer
from rich.table import Table

from tunesmith.cli.common import err, out, user_errors

keys_app = typer.Typer(help="API keys of projects: create (shown once), list, revoke.", no_args_is_help=True)
Project = Annotated[
    str, typer.Option(help="The project: the key sees and makes only that project's files, jobs, models.")
]


def _when(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if seconds else "-"


@keys_app.command("create")
def create(
    project: Project,
    role: Annotated[
        str,
        typer.Option(
            help="admin (all, webhooks, deleting models), member (upload, train, call), reader "
            "(read, call), inference (list and call models)"
        ),
    ] = "member",
    expires: Annotated[
        float | None, typer.Option(min=0.001, help="Days until it stops working (default: never).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label to recognise it by in listings.")] = None,
    requests_per_minute: Annotated[int | None, typer.Option(min=1, help="Its own request limit per minute.")] = None,
) -> None:
    """Make a key of a project and print it, this once: only its SHA-256 is kept."""
    from tunesmith.jobs.access import Access
    from tunesmith.jobs.store import Store

    with user_errors():
        secret, record = Access(Store()).create_key(
            project, role, name=name, expires_days=expires, requests_per_minute=requests_per_minute
        )
    err.print(f"{record.id}: a {record.role} key of project {record.project}; it is shown this once, keep it now")
    out.print(secret, markup=False, soft_wrap=True)


@keys_app.command("list")
def list_keys(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Every key: id, project, role, its first characters, when it was made, expires, was revoked."""
    from tunesmith.jobs.access import Access
    from tunesmith.jobs.store import Store

    with user_errors():
        keys = Access(Store()).list_keys(project)
    if as_json:
        for key in keys:
            out.print(json.dumps(key.as_object()), markup=False, soft_wrap=True)
        return
    table = Table("id", "project", "role", "key", "name", "created", "expires", "revoked")
    for key in keys:
        table.add_row(key.id, key.project, key.role, key.hint + "...", key.name or "", _when(key.created_at),
                      _when(key.expires_at), _when(key.revoked_at))  # fmt: skip
    out.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id, key-... (from `tunesmith keys list`).")]) -> None:
    """Revoke a key: its next request is refused, its dashboard sessions end, a stream it holds is cut."""
    from tunesmith.errors import ConfigError
    from tunesmith.jobs.access import Access
    from tunesmith.jobs.store import Store

    with user_errors():
        if not Access(Store()).revoke_key(key_id):
            raise ConfigError(f"{key_id}: no such key, or it was revoked already", hint="see `tunesmith keys list`")
    out.print(f"{key_id} revoked")


def audit(
    project: Annotated[str | None, typer.Option(help="Only what was done in this project.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="The newest N entries.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Who (key id, project) did what (uploads, jobs made or cancelled, models deleted, exports, keys made or
    revoked, sign-ins), when: the append-only audit log, newest first."""
    from tunesmith.jobs.access import Access
    from tunesmith.jobs.store import Store

    with user_errors():
        entries = Access(Store()).audit(project, limit).items
    if as_json:
        for entry in entries:
            out.print(json.dumps(entry), markup=False, soft_wrap=True)
        return
    table = Table("when", "key", "project", "action", "target", "detail")
    for e in entries:
        table.add_row(
            _when(e["at"]), e["key_id"], e["project"] or "*", e["action"], e["target"] or "", e["detail"] or ""
        )
    out.print(table)
