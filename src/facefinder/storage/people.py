"""Keeping the people tables true to the faces: what a deletion of faces leaves to tidy, in its own transaction.

Deleting a face removes its assignment to a person (``person_faces`` cascades) and empties a person's
representative that was that face (``SET NULL``), in SQLite and PostgreSQL alike. What the database
cannot do on its own is done here, in the same transaction as the deletion (``FaceStore.delete_faces``):
a person left without faces is removed, label and all, and a person that lost its representative gets
another. So erasure, purge, consent withdrawal and opt-out erasure all leave people as they should be,
and no label outlives the faces it named. A collection's deletion cascades to its people.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from facefinder.storage.catalog import FaceRecord, Person, PersonFace, utcnow

CHUNK = 2048  # people settled per statement


def people_of(session: Session, face_ids: Iterable[int]) -> set[int]:
    """The people these faces are assigned to (read before the faces go)."""
    ids = list(face_ids)
    if not ids:
        return set()
    return set(session.scalars(select(PersonFace.person_id).where(PersonFace.face_id.in_(ids)).distinct()))


def settle_people(session: Session, person_ids: Iterable[int]) -> tuple[int, int]:
    """Remove the given people that have no face left, and make each other one's representative its
    best member (highest quality, then lowest id): the face it lost, or a better one it gained.
    Returns (people removed, representatives changed)."""
    ids = sorted(set(person_ids))
    removed = changed = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        best: dict[int, tuple[float, int]] = {}
        members = session.execute(
            select(PersonFace.person_id, FaceRecord.id, FaceRecord.quality)
            .join(FaceRecord, FaceRecord.id == PersonFace.face_id)
            .where(PersonFace.person_id.in_(chunk))
        )
        for person, face, quality in members:
            if person not in best or (-quality, face) < (-best[person][0], best[person][1]):
                best[person] = (quality, face)
        empty = [p for p in chunk if p not in best]
        if empty:
            session.execute(delete(Person).where(Person.id.in_(empty)))
        current = dict(
            session.execute(select(Person.id, Person.representative_face_id).where(Person.id.in_(chunk))).all()
        )
        updates = [
            {"id": person, "representative_face_id": face, "updated_at": utcnow()}
            for person, (_, face) in best.items()
            if current.get(person, face) != face
        ]
        if updates:
            session.execute(update(Person), updates)
        removed, changed = removed + len(empty), changed + len(updates)
    return removed, changed
