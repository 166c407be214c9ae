"""`people search`: people like the faces of probe photos, or like a person (services/people/search.py).

A command of the `people` group, kept apart from the corrections in people.py; main.py imports it so
that it registers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from facefinder.interfaces.cli.common import console, fail, print_table, reading, short_path
from facefinder.interfaces.cli.people import people_app


@people_app.command("search")
def people_search(
    photos: Annotated[Optional[list[Path]], typer.Argument(help="Probe photos, or folders of them.")] = None,
    person: Annotated[
        Optional[int], typer.Option("--person", min=1, max=2_147_483_647, help="Use this person as the probe instead.")
    ] = None,
    collection: Annotated[
        Optional[list[str]],
        typer.Option(
            "--collection",
            "-c",
            help="Search only this collection (repeatable) [default: all; with --person, the person's own].",
        ),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=1000, help="People (and faces) per probe.")] = 10,
    threshold: Annotated[
        Optional[float], typer.Option(help="Lowest person score reported [default: calibrated, see README].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines: one record per probe face.")] = False,
    case: Annotated[Optional[str], typer.Option(help="Case number, written to the audit log.")] = None,
    purpose: Annotated[Optional[str], typer.Option(help="Why this search is run, written to the audit log.")] = None,
) -> None:
    """People like the faces in PHOTOS (or like --person ID), ranked by their fused template. Leads, not
    identifications."""
    if bool(photos) == (person is not None):
        fail("people search: give probe PHOTOS or --person ID, not both and not neither")
    with reading() as ff:
        if person is not None:
            records = [ff.people_search.person(person, collection, top_k, threshold, case, purpose)]
        else:
            records = ff.people_search.photos(list(photos or []), collection, top_k, threshold, case, purpose)
    for record in records:
        if as_json:
            print(json.dumps(record.to_dict()), flush=True)
        else:
            _print_record(record)


def _print_record(record) -> None:
    title = short_path(record.probe)
    if record.face is not None:
        title += f" face {record.face} at {[round(v) for v in record.box]} (quality {record.quality:.2f})"
    if record.error:
        console.print(f"[bold]{title}[/bold]: [yellow]{record.error}[/yellow]", highlight=False)
        return
    if not record.people and not record.faces:
        console.print(f"[bold]{title}[/bold]: no match", highlight=False)
        return
    table = Table("#", "person", "score", "band", "faces", "label", "nearest face", title=title, title_justify="left")
    for p in record.people:
        state = "" if p.confirmed else " (suggested)"
        nearest = f"{short_path(p.nearest_face.source)} (face {p.nearest_face.face_id})"
        table.add_row(
            str(p.rank), f"{p.person_id}{state}", f"{p.score:.3f}", p.band, str(p.faces), p.label or "", nearest
        )
    print_table(table)
    if record.faces:
        faces = Table("#", "score", "band", "source", "face id", title="faces like this person", title_justify="left")
        for c in record.faces:
            faces.add_row(str(c.rank), f"{c.score:.3f}", c.band, short_path(c.source), str(c.face_id))
        print_table(faces)
