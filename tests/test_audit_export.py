"""CSV injection: text anyone can put into the audit log (a username, a failed sign-in's name, a case
number, a purpose) never reaches an auditor's spreadsheet as a formula. Every CSV cell that starts with
= + - @ or a tab or carriage return is prefixed with a single quote (the OWASP rule), in the API's and
the CLI's export; the JSON export keeps the values as stored, and the hash chain verifies from it.
On SQLite and on PostgreSQL, through the real app and the real CLI."""

from __future__ import annotations

import csv
import io
import json

import pytest
from service_helpers import COLLECTION, backend, make_served, run_search  # noqa: F401
from typer.testing import CliRunner

from facefinder.interfaces.cli import app as cli_app
from facefinder.services.audit import FORMULA_STARTS, GENESIS, csv_cell, entry_hash
from facefinder.services.server.accounts import Principal

HOSTILE_USER = '=HYPERLINK("http://x","y")'
HOSTILE_PURPOSE = "+cmd|' /C calc'!A0 find the person"
HOSTILE_CASE = "@SUM(1+1)"
FAILED_NAMES = ("-2+3", "\t=1+1", "\r=1+1")


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    """A seeded app whose log holds the hostile values: an account named like a formula (made through the
    accounts service) that searches with a formula-like purpose and case, and failed sign-ins."""
    served = make_served(tmp_path_factory.mktemp(f"csv-{backend.name}") / "data", pipeline, backend.new_url())
    accounts = served.service.accounts
    principal = accounts.add_user(HOSTILE_USER, "a-good-password", "investigator", by="test-setup")
    accounts.grant(Principal(0, "test-setup", "admin"), HOSTILE_USER, COLLECTION)
    served.tokens[HOSTILE_USER] = accounts.create_token(principal, "tests")
    record = run_search(served.client(HOSTILE_USER), case_id=HOSTILE_CASE, purpose=HOSTILE_PURPOSE)
    assert record["username"] == HOSTILE_USER and record["purpose"] == HOSTILE_PURPOSE
    anonymous = served.client(None)
    for name in FAILED_NAMES:
        assert anonymous.post("/api/session", json={"username": name, "password": "wrong-password"}).status_code == 401
    yield served
    served.close()


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def assert_no_formula(rows: list[list[str]]) -> None:
    assert len(rows) > 5 and rows[0][:4] == ["id", "at", "actor", "action"]
    bad = [cell for row in rows for cell in row if cell.startswith(FORMULA_STARTS)]
    assert bad == []


def assert_neutralised_values(rows: list[list[str]]) -> None:
    """The hostile values are there, each behind a single quote, never starting a cell bare."""
    actors = {row[2] for row in rows[1:]}
    assert "'" + HOSTILE_USER in actors
    assert {"'" + name for name in FAILED_NAMES} <= actors
    assert "'" + HOSTILE_CASE in {row[4] for row in rows[1:]}
    search_rows = [row for row in rows[1:] if row[3] == "search"]
    assert search_rows and json.loads(search_rows[0][5])["purpose"] == HOSTILE_PURPOSE  # inside JSON: no formula


def test_csv_cell_rule():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert csv_cell(start + "1") == "'" + start + "1"
    assert csv_cell("ivan") == "ivan" and csv_cell(None) == "" and csv_cell(12) == "12"
    assert csv_cell('{"a": "=1"}') == '{"a": "=1"}' and csv_cell("a=1") == "a=1"


def test_api_csv_export_has_no_formula(served):
    response = served.client("aud").get("/api/audit/export", params={"format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = cells(response.text)
    assert_no_formula(rows)
    assert_neutralised_values(rows)


def test_cli_csv_export_has_no_formula(served, tmp_path):
    db = ["--database-url", served.catalog_url] if served.catalog_url else []
    out = tmp_path / "audit.csv"
    result = CliRunner().invoke(
        cli_app, ["--data-dir", str(served.data_dir), "audit", *db, "export", "--format", "csv", "-o", str(out)]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    with out.open(newline="") as file:  # as csv reads files: a carriage return inside a cell stays one
        rows = cells(file.read())
    assert_no_formula(rows)
    assert_neutralised_values(rows)
    # to stdout as well, filtered by the hostile actor
    result = CliRunner().invoke(
        cli_app, ["--data-dir", str(served.data_dir), "audit", *db, "export", "--actor", HOSTILE_USER]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    rows = cells(result.stdout)
    assert {row[2] for row in rows[1:]} == {"'" + HOSTILE_USER}
    assert not [cell for row in rows for cell in row if cell.startswith(FORMULA_STARTS)]


def test_json_export_keeps_the_stored_values_and_the_chain_verifies_from_it(served):
    client = served.client("aud")
    entries = client.get("/api/audit/export", params={"format": "json"}).json()
    assert HOSTILE_USER in {e["actor"] for e in entries} and set(FAILED_NAMES) <= {e["actor"] for e in entries}
    assert HOSTILE_CASE in {e["case_id"] for e in entries}
    prev = GENESIS
    for entry in entries:  # the whole log, oldest first: the chain recomputed from the export alone
        details = json.dumps(entry["details"], sort_keys=True, separators=(",", ":"), default=str)
        expected = entry_hash(
            entry["id"], entry["at"], entry["actor"], entry["action"], entry["case_id"], details, prev
        )
        assert entry["prev_hash"] == prev and entry["hash"] == expected, entry
        prev = entry["hash"]
    assert client.get("/api/audit/verify").json()["ok"] is True
