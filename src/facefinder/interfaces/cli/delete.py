"""The `delete` group: erase a face, a photo, a whole collection, or every face of a person."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from facefinder.interfaces.cli.common import (
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
def delete_face(face_id: int) -> None:
    """Erase one face."""
    with engine() as ff:
        if not ff.delete_face(face_id):
            fail(f"face {face_id} does not exist")
    console.print(f"deleted face {face_id}")


@delete_app.command("image")
def delete_image(image_id: int) -> None:
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
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase every face of a person: lists the faces above the strict threshold, then erases them."""
    with errors(), engine() as ff:
        found = ff.privacy.find_person(probe, face, collection, threshold)
        if not found.matches:
            say(f"nothing held matches {probe} at or above {found.threshold:.3f}")
            if as_json:
                print(json.dumps({**found.to_dict(), "erased": None}))
            return
        matches_table(found.matches, f"{len(found.matches)} faces match {probe} (score >= {found.threshold:.3f})")
        chosen = face_id or found.face_ids
        confirm(f"Erase {len(chosen)} of these faces (and photos left without a face)?", yes)
        erased = ff.privacy.erase_person(found, face_id)
    if as_json:
        print(json.dumps({**found.to_dict(), "erased": erased.to_dict()}))
    say(f"erased {erased.faces} faces and {erased.images} photos left without a face")
