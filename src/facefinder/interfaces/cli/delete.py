"""The `delete` group: erase a face, a photo, a whole collection, or every face of a person."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from facefinder.interfaces.cli.common import (
    CatalogId,
    FaceIdsOpt,
    FaceOpt,
    JsonOpt,
    ThresholdOpt,
    YesOpt,
    confirm,
    console,
    engine,
    errors,
    fail,
    matches_table,
    say,
)

delete_app = typer.Typer(help="Erase faces, photos or whole collections (catalog and index).", no_args_is_help=True)


@delete_app.command("face")
def delete_face(face_id: CatalogId) -> None:
    """Erase one face."""
    with engine() as ff:
        if not ff.delete_face(face_id):
            fail(f"face {face_id} does not exist")
    console.print(f"deleted face {face_id}")


@delete_app.command("image")
def delete_image(image_id: CatalogId) -> None:
    """Erase one photo and all its faces."""
    with errors(), engine() as ff:
        count = ff.delete_image(image_id)
    console.print(f"deleted image {image_id} and its {count} faces")


@delete_app.command("collection")
def delete_collection(
    name: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask to confirm.")] = False
) -> None:
    """Erase a whole collection."""
    confirm(f"Erase collection {name!r} and every face in it?", yes)
    with errors(), engine() as ff:
        ff.delete_collection(name)
    console.print(f"deleted collection {name}")


ExpandOpt = Annotated[
    bool,
    typer.Option(
        "--expand",
        help="List every face likely the person's (from their strict matches and their people), each with "
        "why, for review; erase only with --face-id or --confirm-all.",
    ),
]
ConfirmAllOpt = Annotated[
    bool, typer.Option("--confirm-all", help="With --expand: erase every listed face (you reviewed the list).")
]


def listed_table(matches: Sequence[Any], title: str) -> None:
    """An expanded list (services/privacy/expansion.py) as a table on stderr: each face with why it is listed."""
    table = Table("face", "score", "why", "collection", "image", "source", title=title, title_justify="left")
    table.columns[5].overflow = "fold"
    for m in matches:
        table.add_row(
            str(m.face_id),
            f"{m.score:.3f}",
            _why(m),
            m.collection,
            str(m.image_id),
            m.source,
        )
    Console(stderr=True).print(table)


def _why(m: Any) -> str:
    if m.reason == "direct":
        return "direct match"
    if m.reason == "face":
        return f"via face {m.via} ({m.link:.3f}; matches {m.support} listed)"
    return f"via person {m.via} ({m.support} of them listed)"


def chosen_faces(listed: list[int], face_id: list[int] | None, confirm_all: bool, yes: bool) -> list[int] | None:
    """What an expanded review erases: the --face-id ones, every listed one with --confirm-all, or none
    (the list was for review only: None)."""
    if face_id:
        confirm(f"Erase the {len(face_id)} confirmed faces (and photos left without a face)?", yes)
        return face_id
    if confirm_all:
        confirm(f"Erase all {len(listed)} listed faces (and photos left without a face)?", yes)
        return listed
    say("listed for review; erase with --face-id ID (repeatable) for each face confirmed, or --confirm-all")
    return None


@delete_app.command("person")
def delete_person(
    probe: Annotated[Path, typer.Argument(help="A photo of the person.")],
    face: FaceOpt = None,
    threshold: ThresholdOpt = None,
    collection: Annotated[
        Optional[list[str]],
        typer.Option("--collection", "-c", help="Only this collection (repeatable) [default: all]."),
    ] = None,
    face_id: FaceIdsOpt = None,
    expand: ExpandOpt = False,
    confirm_all: ConfirmAllOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase every face of a person: lists the faces above the strict threshold, then erases them
    (with --expand, every face likely theirs, erased only as confirmed)."""
    with errors(), engine() as ff:
        found = ff.privacy.find_person(probe, face, collection, threshold, expand=expand)
        if not found.matches:
            say(f"nothing held matches {probe} at or above {found.threshold:.3f}")
            if as_json:
                print(json.dumps({**found.to_dict(), "erased": None}))
            return
        if expand:
            listed_table(found.matches, f"{len(found.matches)} faces likely the person in {probe}, for review")
            chosen = chosen_faces(found.face_ids, face_id, confirm_all, yes)
        else:
            matches_table(found.matches, f"{len(found.matches)} faces match {probe} (score >= {found.threshold:.3f})")
            chosen = face_id or found.face_ids
            confirm(f"Erase {len(chosen)} of these faces (and photos left without a face)?", yes)
        erased = ff.privacy.erase_person(found, chosen) if chosen else None
    if as_json:
        print(json.dumps({**found.to_dict(), "erased": erased.to_dict() if erased else None}))
    if erased:
        say(f"erased {erased.faces} faces and {erased.images} photos left without a face")
