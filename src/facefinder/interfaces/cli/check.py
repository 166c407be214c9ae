"""The `check` command: verify (and with --repair, fix) the catalog, indexes, audit chain and uploads."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from facefinder.interfaces.cli.common import engine, errors


def check(
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed from the catalog.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Verify the catalog, every index against it, their checksums, the audit chain and uploaded files.

    Exits 0 when all is sound (or, with --repair, when everything found was repaired), else 1."""
    from facefinder.services.check import check as run_check

    with errors(), engine() as ff:
        problems = run_check(ff, repair=repair)
    if as_json:
        print(json.dumps({"ok": all(p.repaired for p in problems), "problems": [asdict(p) for p in problems]}))
    elif not problems:
        print("ok: catalog, indexes, audit log and uploads are sound")
    for p in problems if not as_json else []:
        print(f"{'repaired' if p.repaired else 'problem'}: {p.message}")
    if not all(p.repaired for p in problems):
        raise typer.Exit(1)
