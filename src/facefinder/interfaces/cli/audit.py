"""The `audit` group: verify, export and pin the hash-chained audit log, on the catalog alone."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from facefinder.interfaces.cli.common import (
    DatabaseUrl,
    catalog_url,
    console,
    fail,
    local_actor,
    service_options,
)

if TYPE_CHECKING:
    from facefinder.services.audit import AuditLog

audit_app = typer.Typer(help="The hash-chained audit log: verify, export, head.", no_args_is_help=True)


@audit_app.callback()
def _audit(database_url: DatabaseUrl = None) -> None:
    service_options.database_url = database_url


@contextmanager
def _audit_log() -> Iterator[AuditLog]:
    """The audit log on the catalog alone, closed when the block ends."""
    from facefinder.services.catalog_access import audit_log_on

    with audit_log_on(catalog_url()) as log:
        yield log


@audit_app.command("verify")
def audit_verify(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Check the hash chain. Exits 1 and names each entry that was edited, removed or reordered."""
    with _audit_log() as log:
        problems = log.verify()
        head = log.head()
        count = len(log.entries())
    if as_json:
        print(
            json.dumps(
                {
                    "ok": not problems,
                    "entries": count,
                    "head": head,
                    "problems": [{"entry_id": p.entry_id, "problem": p.problem} for p in problems],
                },
                indent=2,
            )
        )
    elif problems:
        for p in problems:
            console.print(f"[red]tampered:[/red] {p}", highlight=False, soft_wrap=True)
    else:
        console.print(
            f"audit log intact: {count} entries, head {head['id']} {head['hash']}", highlight=False, soft_wrap=True
        )
    if problems:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    action: Annotated[Optional[str], typer.Option(help="Only this action (e.g. search, login).")] = None,
    actor: Annotated[Optional[str], typer.Option(help="Only this actor.")] = None,
    case: Annotated[Optional[str], typer.Option(help="Only this case number.")] = None,
    since: Annotated[Optional[str], typer.Option(help="From this ISO 8601 date or time (UTC).")] = None,
    until: Annotated[Optional[str], typer.Option(help="Up to this ISO 8601 date or time (UTC), inclusive.")] = None,
) -> None:
    """Export entries (filtered) as CSV or JSON; the export itself is written to the log.

    CSV cells that would start a formula (= + - @ tab CR) get a leading '; JSON keeps stored values.
    """
    from facefinder.errors import FieldError
    from facefinder.services.audit import as_dict, export_csv

    if format not in ("csv", "json"):
        fail("format: must be csv or json")
    with _audit_log() as log:
        try:
            entries = log.entries(action=action, actor=actor, case_id=case, since=since, until=until)
        except FieldError as exc:  # a --since/--until that is not a date: say so, never export nothing
            fail(f"--{str(exc)}")
        text = export_csv(entries) if format == "csv" else json.dumps([as_dict(e) for e in entries], indent=1) + "\n"
        log.record(
            local_actor(),
            "audit.export",
            format=format,
            entries=len(entries),
            filters={
                k: v
                for k, v in {"action": action, "actor": actor, "case_id": case, "since": since, "until": until}.items()
                if v
            },
        )
    if output:
        output.write_text(text)
        console.print(f"wrote {len(entries)} entries to {output}", highlight=False)
    else:
        sys.stdout.write(text)


@audit_app.command("head")
def audit_head() -> None:
    """The last entry's id and hash, as JSON: keep it somewhere else to pin the log."""
    with _audit_log() as log:
        print(json.dumps(log.head()))
