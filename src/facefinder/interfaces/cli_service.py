"""The service's command line: `facefinder serve`, `facefinder users ...` and `facefinder audit ...`.

Local commands act as ``local:<os user>`` in the audit log: whoever can run them on the data
directory already holds the whole catalog. Every command takes ``--database-url`` (or
``FACEFINDER_DATABASE_URL``) to work on a PostgreSQL catalog instead of ``<data dir>/catalog.db``.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from facefinder.errors import FaceFinderError

DATABASE_URL_ENV = "FACEFINDER_DATABASE_URL"

users_app = typer.Typer(help="Accounts of the service: users, roles, collection grants, API tokens.",
                        no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log: verify, export, head.", no_args_is_help=True)
console = Console(stderr=True)


class _Options:
    database_url: Optional[str] = None


options = _Options()
DatabaseUrl = Annotated[Optional[str], typer.Option(
    "--database-url", envvar=DATABASE_URL_ENV,
    help="SQLAlchemy URL of the catalog (e.g. postgresql+psycopg://user@host/db) [default: <data dir>/catalog.db].")]


@users_app.callback()
def _users(database_url: DatabaseUrl = None) -> None:
    options.database_url = database_url


@audit_app.callback()
def _audit(database_url: DatabaseUrl = None) -> None:
    options.database_url = database_url


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _local_actor() -> str:
    return f"local:{getpass.getuser()}"


def _catalog():
    """The catalog alone (no index, no models): accounts and the audit log need nothing more."""
    from facefinder.config import data_dir as resolve_data_dir
    from facefinder.interfaces.cli import state
    from facefinder.storage.catalog import Catalog

    url = options.database_url
    if not url:
        folder = resolve_data_dir(state.data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{folder / 'catalog.db'}"
    return Catalog(url)


def _accounts():
    from facefinder.services.accounts import Accounts
    from facefinder.services.audit import AuditLog

    catalog = _catalog()
    return Accounts(catalog, AuditLog(catalog)), catalog


def _local_admin():
    from facefinder.services.accounts import Principal

    return Principal(0, _local_actor(), "admin")


# ----- users -------------------------------------------------------------------------------------------
@users_app.command("add")
def users_add(
    username: str,
    role: Annotated[str, typer.Option(help="admin, investigator or auditor.")] = "investigator",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin (one line).")] = False,
) -> None:
    """Create a user (the first one: --role admin). Asks for the password unless --password-stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    accounts, catalog = _accounts()
    try:
        accounts.add_user(username, password, role, by=_local_actor())
    except FaceFinderError as exc:
        _fail(str(exc))
    finally:
        catalog.close()
    console.print(f"created {role} {username}", highlight=False)


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Users with their role, status and collection grants."""
    accounts, catalog = _accounts()
    try:
        grants = accounts.grants()
        rows = [{"username": u.username, "role": u.role, "active": u.active,
                 "created_at": u.created_at.isoformat(timespec="seconds"), "grants": grants.get(u.username, [])}
                for u in accounts.users()]
    finally:
        catalog.close()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("user", "role", "active", "grants", "created")
    for r in rows:
        table.add_row(r["username"], r["role"], "yes" if r["active"] else "no", ", ".join(r["grants"]) or "-",
                      r["created_at"])
    Console().print(table)


def _admin_action(action) -> None:
    accounts, catalog = _accounts()
    try:
        action(accounts, _local_admin())
    except FaceFinderError as exc:
        _fail(str(exc))
    finally:
        catalog.close()


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable an account: its sessions and API tokens stop working at once."""
    _admin_action(lambda accounts, admin: accounts.set_active(admin, username, False))
    console.print(f"disabled {username}", highlight=False)


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Enable a disabled account again."""
    _admin_action(lambda accounts, admin: accounts.set_active(admin, username, True))
    console.print(f"enabled {username}", highlight=False)


@users_app.command("grant")
def users_grant(username: str, collection: str) -> None:
    """Let an investigator ingest into and search COLLECTION."""
    _admin_action(lambda accounts, admin: accounts.grant(admin, username, collection, allow=True))
    console.print(f"granted {collection} to {username}", highlight=False)


@users_app.command("revoke")
def users_revoke(username: str, collection: str) -> None:
    """Take a collection grant away."""
    _admin_action(lambda accounts, admin: accounts.grant(admin, username, collection, allow=False))
    console.print(f"revoked {collection} from {username}", highlight=False)


@users_app.command("token")
def users_token(username: str, name: Annotated[str, typer.Option(help="What the token is for.")] = "cli") -> None:
    """Create an API token for USERNAME and print it (once; only its hash is kept)."""
    from sqlalchemy import select

    from facefinder.services.accounts import Principal
    from facefinder.storage.catalog import User

    accounts, catalog = _accounts()
    try:
        with catalog.session() as session:
            user = session.scalar(select(User).where(User.username == username))
        if user is None:
            _fail(f"username: no user {username!r}")
        if not user.active:
            _fail(f"username: {username!r} is disabled")
        token = accounts.create_token(Principal(user.id, user.username, user.role), name)
    finally:
        catalog.close()
    print(token)


# ----- audit -------------------------------------------------------------------------------------------
def _audit_log():
    from facefinder.services.audit import AuditLog

    catalog = _catalog()
    return AuditLog(catalog), catalog


@audit_app.command("verify")
def audit_verify(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Check the hash chain. Exits 1 and names each entry that was edited, removed or reordered."""
    log, catalog = _audit_log()
    try:
        problems = log.verify()
        head = log.head()
        count = len(log.entries())
    finally:
        catalog.close()
    if as_json:
        print(json.dumps({"ok": not problems, "entries": count, "head": head,
                          "problems": [{"entry_id": p.entry_id, "problem": p.problem} for p in problems]}, indent=2))
    elif problems:
        for p in problems:
            console.print(f"[red]tampered:[/red] {p}", highlight=False, soft_wrap=True)
    else:
        console.print(f"audit log intact: {count} entries, head {head['id']} {head['hash']}", highlight=False,
                      soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    action: Annotated[Optional[str], typer.Option(help="Only this action (e.g. search, login).")] = None,
    actor: Annotated[Optional[str], typer.Option(help="Only this actor.")] = None,
    case: Annotated[Optional[str], typer.Option(help="Only this case number.")] = None,
    since: Annotated[Optional[str], typer.Option(help="From this ISO 8601 time (UTC).")] = None,
    until: Annotated[Optional[str], typer.Option(help="Up to this ISO 8601 time (UTC).")] = None,
) -> None:
    """Export entries (filtered) as CSV or JSON; the export itself is written to the log."""
    from facefinder.services.audit import as_dict, export_csv

    if format not in ("csv", "json"):
        _fail("format: must be csv or json")
    log, catalog = _audit_log()
    try:
        entries = log.entries(action=action, actor=actor, case_id=case, since=since, until=until)
        text = export_csv(entries) if format == "csv" else json.dumps([as_dict(e) for e in entries], indent=1) + "\n"
        log.record(_local_actor(), "audit.export", format=format, entries=len(entries),
                   filters={k: v for k, v in {"action": action, "actor": actor, "case_id": case, "since": since,
                                              "until": until}.items() if v})
    finally:
        catalog.close()
    if output:
        output.write_text(text)
        console.print(f"wrote {len(entries)} entries to {output}", highlight=False)
    else:
        sys.stdout.write(text)


@audit_app.command("head")
def audit_head() -> None:
    """The last entry's id and hash, as JSON: keep it somewhere else to pin the log."""
    log, catalog = _audit_log()
    try:
        print(json.dumps(log.head()))
    finally:
        catalog.close()


# ----- serve -------------------------------------------------------------------------------------------
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (keep 127.0.0.1 behind a TLS proxy).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    database_url: DatabaseUrl = None,
    import_root: Annotated[Optional[list[Path]], typer.Option("--import-root", help="A server folder ingests may read from (repeatable); default: none, uploads only.")] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest request body (archive upload), in MB.")] = 512,
    max_probe_mb: Annotated[int, typer.Option(help="Largest probe photo, in MB.")] = 20,
    workers: Annotated[int, typer.Option(help="Ingest worker processes (0 = in the server process).")] = 0,
    secure_cookies: Annotated[bool, typer.Option(help="Mark session cookies Secure (when served over HTTPS).")] = False,
) -> None:
    """Start the web UI and JSON API (OpenAPI at /api/docs) in one process."""
    import uvicorn

    from facefinder.interfaces.http.app import MiB, ServiceConfig, create_app
    from facefinder.interfaces.cli import state

    for root in import_root or []:
        if not root.expanduser().is_dir():
            _fail(f"import-root: {root} is not a folder")
    config = ServiceConfig(max_upload_bytes=max_upload_mb * MiB, max_probe_bytes=max_probe_mb * MiB,
                           import_roots=list(import_root or []), ingest_workers=workers,
                           secure_cookies=secure_cookies)
    try:
        app = create_app(state.data_dir, database_url or state.database_url, config=config, detector=state.detector,
                         recognizer=state.recognizer, vectors=state.vectors)
    except FaceFinderError as exc:
        _fail(str(exc))
    service = app.state.service
    try:
        service.finder.pipeline  # load the models now: a missing model is one clear error, before serving
    except FaceFinderError as exc:
        _fail(str(exc))
    if not service.accounts.users():
        console.print("[yellow]no users yet:[/yellow] create the first admin with "
                      "`facefinder users add NAME --role admin`", highlight=False)
    console.print(f"facefinder serving on http://{host}:{port}  (API docs: /api/docs)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False, server_header=False)
