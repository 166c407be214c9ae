"""The `people` group: cluster a collection's faces into people, list and show them, and correct them
(merge, split, label, confirm). Every command is written to the audit log."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from facefinder.interfaces.cli.common import CatalogId, JsonOpt, engine, errors, print_table, reading, say

people_app = typer.Typer(
    help="People: faces of a collection grouped by who they show (machine suggestions a human confirms).",
    no_args_is_help=True,
)
CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="The collection.")]


def _person_line(person) -> str:
    label = f" {person.label!r}" if person.label else ""
    state = "confirmed" if person.confirmed else "suggested"
    return f"person {person.person_id}{label} ({state}): {person.faces} faces in {person.photos} photos"


@people_app.command("cluster")
def people_cluster(
    collection: CollectionOpt,
    full: Annotated[
        bool,
        typer.Option("--full", help="Re-cluster every face, dropping the suggestions no human confirmed or changed."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Group the collection's new faces into people (with --full, all of them)."""
    with errors(), engine() as ff:
        report = ff.people.cluster(collection, full=full)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    say(
        f"{collection}: {report.considered} faces considered; {report.joined} joined people, "
        f"{report.new_people_faces} formed {report.new_people} new people, {report.unassigned} left unassigned "
        f"({report.below_quality} below the quality floor, {report.opted_out} opted out); "
        f"{report.people} people in all ({report.seconds:.1f} s)"
    )


@people_app.command("list")
def people_list(
    collection: CollectionOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON Lines, one person a line.")] = False,
    members: Annotated[bool, typer.Option("--members", help="With each person's faces.")] = False,
) -> None:
    """The collection's people, most faces first."""
    with reading() as ff:
        people = ff.people.list(collection, members=members)
    if as_json:
        for person in people:
            print(json.dumps(person.line(members)))
        return
    table = Table("person", "label", "confirmed", "faces", "photos", "representative face")
    for p in people:
        table.add_row(
            str(p.person_id), p.label or "", "yes" if p.confirmed else "no", str(p.faces), str(p.photos),
            str(p.representative_face_id),
        )  # fmt: skip
    print_table(table)
    if members:
        for p in people:
            say(f"person {p.person_id}: faces {', '.join(str(m.face_id) for m in p.members or [])}")


@people_app.command("show")
def people_show(person_id: CatalogId, as_json: JsonOpt = False) -> None:
    """One person with every face: its photo, score and who assigned it."""
    with reading() as ff:
        person = ff.people.show(person_id)
    if as_json:
        print(json.dumps(person.to_dict()))
        return
    say(_person_line(person) + f", collection {person.collection}")
    table = Table("face", "image", "score", "quality", "assigned by", "source")
    table.columns[5].overflow = "fold"
    for m in person.members or []:
        table.add_row(str(m.face_id), str(m.image_id), f"{m.score:.3f}", f"{m.quality:.2f}", m.assigned_by, m.source)
    print_table(table)


@people_app.command("merge")
def people_merge(person_id: CatalogId, other_id: CatalogId) -> None:
    """Merge person OTHER_ID into PERSON_ID: they are the same person."""
    with errors(), engine() as ff:
        person = ff.people.merge(person_id, other_id)
    say(f"merged person {other_id} into {_person_line(person)}")


@people_app.command("split")
def people_split(
    person_id: CatalogId,
    face: Annotated[list[int], typer.Option("--face", help="A face to take out into a new person (repeatable).")],
) -> None:
    """Take faces out of a person into a new one: they are someone else."""
    with errors(), engine() as ff:
        result = ff.people.split(person_id, face)
    say(f"split: {_person_line(result.kept)}; new {_person_line(result.split)}")


@people_app.command("label")
def people_label(person_id: CatalogId, text: Annotated[str, typer.Argument(help="The label ('' removes it).")]) -> None:
    """Give a person a label (free text)."""
    with errors(), engine() as ff:
        person = ff.people.label(person_id, text)
    say(f"labelled {_person_line(person)}")


@people_app.command("confirm")
def people_confirm(person_id: CatalogId) -> None:
    """Confirm a person: a human checked that these faces are one person."""
    with errors(), engine() as ff:
        person = ff.people.confirm(person_id)
    say(f"confirmed {_person_line(person)}")
