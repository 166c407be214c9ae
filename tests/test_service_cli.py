"""`facefinder users ...` and `facefinder audit ...`: accounts from the shell, and tampering with the audit
log in the database (an edited, deleted or swapped row) caught by `facefinder audit verify`, which names
the entries and exits non-zero. On SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import pytest
from helpers import cli_command
from service_helpers import backend  # noqa: F401
from sqlalchemy import delete, update
from typer.testing import CliRunner

from facefinder.interfaces.cli import app
from facefinder.storage.catalog import AuditEntry, Catalog


@pytest.fixture
def cli(backend, tmp_path):
    """Run the CLI in-process on a fresh catalog of this backend: cli("users", "list") -> result."""
    runner = CliRunner()
    data = tmp_path / "data"
    url = backend.new_url()

    def run(group: str, *args: str, expect: int = 0, input: str | None = None):
        db = ["--database-url", url] if url else []
        result = runner.invoke(app, ["--data-dir", str(data), group, *db, *map(str, args)], input=input)
        assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr, result.exception)
        return result

    run.url = url or f"sqlite:///{data / 'catalog.db'}"
    run.data = data
    return run


def test_users_commands(cli):
    cli("users", "add", "root", "--role", "admin", "--password-stdin", input="a-good-password\n")
    cli("users", "add", "ivan", "--password-stdin", input="another-password\n")
    cli("users", "add", "ivan", "--password-stdin", input="another-password\n", expect=2)
    result = cli("users", "add", "shorty", "--password-stdin", input="short\n", expect=2)
    assert "password" in result.stderr
    cli("users", "add", "x", "--role", "wizard", "--password-stdin", input="a-good-password\n", expect=2)
    # the password prompt asks twice
    cli("users", "add", "aud", "--role", "auditor", input="prompted-password\nprompted-password\n")
    catalog = Catalog(cli.url)
    try:
        from facefinder.services.audit import AuditLog
        from facefinder.services.server.accounts import Accounts
        from facefinder.storage.store import FaceStore

        FaceStore(cli.data, cli.url if cli.url.startswith("postgresql") else None).create_collection(
            "people", purpose="p", legal_basis="l", retention_days=5
        )
        cli("users", "grant", "ivan", "people")
        cli("users", "grant", "ivan", "nope", expect=2)
        listed = {u["username"]: u for u in json.loads(cli("users", "list", "--json").stdout)}
        assert listed["ivan"]["grants"] == ["people"] and listed["root"]["role"] == "admin"
        assert listed["aud"]["role"] == "auditor"
        token = cli("users", "token", "ivan", "--name", "nightly").stdout.strip()
        accounts = Accounts(catalog, AuditLog(catalog))
        assert token.startswith("ff_") and accounts.principal_for_token(token).username == "ivan"
        cli("users", "revoke", "ivan", "people")
        cli("users", "disable", "ivan")
        assert json.loads(cli("users", "list", "--json").stdout)[1]["active"] is False
        cli("users", "token", "ivan", expect=2)
        cli("users", "enable", "ivan")
        assert accounts.authenticate("aud", "prompted-password").role == "auditor"
        actions = [(e.actor.split(":")[0], e.action) for e in AuditLog(catalog).entries()]
        for action in ("user.create", "grant.add", "grant.remove", "token.create", "user.disable", "user.enable"):
            assert ("local", action) in actions or any(a == action for _, a in actions), action
    finally:
        catalog.close()


def make_log(cli, n: int = 6) -> None:
    """n entries: a user (user.create), then exports (audit.export), which are cheap to make."""
    cli("users", "add", "user0", "--password-stdin", input="a-good-password\n")
    for _ in range(n - 1):
        cli("audit", "export", "--format", "json", "--action", "none")


def tamper(url: str, change) -> None:
    catalog = Catalog(url)
    try:
        with catalog.session() as session, session.begin():
            change(session)
    finally:
        catalog.close()


def test_audit_verify_passes_on_an_intact_log_and_prints_the_head(cli):
    make_log(cli)
    result = cli("audit", "verify")
    assert "audit log intact: 6 entries" in result.stderr
    head = json.loads(cli("audit", "head").stdout)
    assert head["id"] == 6 and len(head["hash"]) == 64
    report = json.loads(cli("audit", "verify", "--json").stdout)
    assert report["ok"] and report["entries"] == 6 and report["head"] == head


def test_editing_a_row_is_caught(cli):
    make_log(cli)
    tamper(cli.url, lambda s: s.execute(update(AuditEntry).where(AuditEntry.id == 3).values(actor="mallory")))
    result = cli("audit", "verify", expect=1)
    assert "entry 3" in result.stderr and "edited" in result.stderr
    report = json.loads(cli("audit", "verify", "--json", expect=1).stdout)
    assert [p["entry_id"] for p in report["problems"]] == [3] and report["ok"] is False


def test_editing_details_is_caught(cli):
    make_log(cli)
    tamper(
        cli.url,
        lambda s: s.execute(
            update(AuditEntry).where(AuditEntry.id == 1).values(details='{"role":"admin","username":"user0"}')
        ),
    )
    assert "entry 1" in cli("audit", "verify", expect=1).stderr


def test_deleting_a_row_is_caught(cli):
    make_log(cli)
    tamper(cli.url, lambda s: s.execute(delete(AuditEntry).where(AuditEntry.id == 4)))
    result = cli("audit", "verify", expect=1)
    assert "entry 5" in result.stderr and "removed" in result.stderr


def test_deleting_the_last_rows_is_caught(cli):
    make_log(cli)
    tamper(cli.url, lambda s: s.execute(delete(AuditEntry).where(AuditEntry.id >= 5)))
    assert "should end at entry 6" in cli("audit", "verify", expect=1).stderr


def test_swapping_two_rows_is_caught(cli):
    make_log(cli)

    def swap(session):
        a, b = session.get(AuditEntry, 2), session.get(AuditEntry, 3)
        fields = ("at", "actor", "action", "case_id", "details", "prev_hash", "hash")
        va, vb = ({f: getattr(x, f) for f in fields} for x in (a, b))
        for f in fields:
            setattr(a, f, vb[f])
            setattr(b, f, va[f])

    tamper(cli.url, swap)
    result = cli("audit", "verify", expect=1)
    assert "entry 2" in result.stderr and "entry 3" in result.stderr


def test_rewriting_a_hash_to_match_is_still_caught_downstream(cli):
    """Recomputing the edited row's own hash breaks the link from the next one."""
    from facefinder.services.audit import entry_hash

    make_log(cli)

    def rewrite(session):
        row = session.get(AuditEntry, 2)
        row.actor = "mallory"
        row.hash = entry_hash(row.id, row.at, row.actor, row.action, row.case_id, row.details, row.prev_hash)

    tamper(cli.url, rewrite)
    assert "entry 3" in cli("audit", "verify", expect=1).stderr


def test_audit_export_csv_and_json(cli, tmp_path):
    for name in ("a", "b"):
        cli("users", "add", name, "--password-stdin", input="a-good-password\n")
    rows = list(csv.DictReader(io.StringIO(cli("audit", "export", "--format", "csv").stdout)))
    assert [r["id"] for r in rows] == ["1", "2"] and rows[0]["action"] == "user.create"
    assert json.loads(rows[1]["details"]) == {"role": "investigator", "username": "b"}
    out = tmp_path / "audit.json"
    cli("audit", "export", "--format", "json", "--action", "user.create", "--output", str(out))
    entries = json.loads(out.read_text())
    assert len(entries) == 2 and all(e["action"] == "user.create" for e in entries)
    assert entries[0]["details"]["username"] == "a"
    cli("audit", "export", "--format", "xml", expect=2)
    exports = json.loads(cli("audit", "export", "--format", "json", "--action", "audit.export").stdout)
    assert [e["details"]["format"] for e in exports] == ["csv", "json"]
    assert exports[1]["details"]["filters"] == {"action": "user.create"}
    cli("audit", "verify")


def test_audit_verify_in_a_real_process(cli):
    """The installed `facefinder` script: exit status 0 when intact, 1 naming the entry when tampered."""
    make_log(cli, 3)
    command = [*cli_command(), "--data-dir", str(cli.data), "audit", "--database-url", cli.url, "verify"]
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    tamper(cli.url, lambda s: s.execute(update(AuditEntry).where(AuditEntry.id == 1).values(action="nothing")))
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 1 and "entry 1" in done.stderr
