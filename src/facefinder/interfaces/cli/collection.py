"""The `collections` group: list collections, create one, set its retention policy."""

# Named collection.py, not collections.py: that would shadow the standard library's module for a
# script run from this folder.

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.table import Table

from facefinder.interfaces.cli.common import engine, errors, print_table, reading, say

collections_app = typer.Typer(
    help="List collections (no subcommand), or create one / set its retention policy.", invoke_without_command=True
)


@collections_app.callback()
def collections(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List collections with their photo, face and failure counts and their retention policy."""
    if ctx.invoked_subcommand is not None:
        return
    with reading() as ff:
        infos = ff.collections()
    if as_json:
        print(json.dumps([asdict(c) for c in infos], indent=2))
        return
    table = Table("name", "photos", "faces", "failed", "model", "retention", "purpose", "legal basis")
    for c in infos:
        table.add_row(
            c.name,
            str(c.images),
            str(c.faces),
            str(c.failures),
            c.model_id or "-",
            f"{c.retention_days} days" if c.retention_days else "[red]not set[/red]",
            c.purpose or "-",
            c.legal_basis or "-",
        )
    print_table(table)


@collections_app.command("create")
def collections_create(
    name: str,
    purpose: Annotated[str, typer.Option(help="Why the photos are held.")],
    legal_basis: Annotated[
        str, typer.Option(help="The legal basis for holding them (e.g. GDPR Art. 6(1)(e) and 9(2)(g), or consent).")
    ],
    retention_days: Annotated[
        int, typer.Option(min=1, help="Days each photo is kept before `facefinder purge` erases it.")
    ],
    description: Annotated[str, typer.Option(help="Free text.")] = "",
) -> None:
    """Create a collection. It cannot exist without a purpose, a legal basis and a retention period."""
    with errors(), engine() as ff:
        ff.create_collection(
            name, purpose=purpose, legal_basis=legal_basis, retention_days=retention_days, description=description
        )
    say(f"created collection {name}: kept {retention_days} days per photo")


@collections_app.command("set")
def collections_set(
    name: str,
    purpose: Annotated[Optional[str], typer.Option(help="Why the photos are held.")] = None,
    legal_basis: Annotated[Optional[str], typer.Option(help="The legal basis for holding them.")] = None,
    retention_days: Annotated[Optional[int], typer.Option(min=1, help="Days each photo is kept.")] = None,
) -> None:
    """Change a collection's purpose, legal basis or retention period (applies at the next purge)."""
    with errors(), engine() as ff:
        ff.set_collection_policy(name, purpose=purpose, legal_basis=legal_basis, retention_days=retention_days)
    say(f"updated collection {name}")
