"""The people tables (a collection's faces grouped by who they show), and keeping them true to the faces.

Deleting a face removes its assignment to a person (``person_faces`` cascades) and empties a person's
representative that was that face (``SET NULL``), in SQLite and PostgreSQL alike. What the database
cannot do on its own is done here, in the same transaction as the deletion (``FaceStore.delete_faces``):
a person left without faces is removed, label and all, and a person that lost its representative gets
another. So erasure, purge, consent withdrawal and opt-out erasure all leave people as they should be,
and no label outlives the faces it named. A collection's deletion cascades to its people.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.schema import ForeignKey
from sqlalchemy.types import Float, Integer, String, Text

from facefinder.storage.base import Base, utcnow
from facefinder.storage.catalog import FaceRecord, JournalEntry


class Person(Base):
    """Faces of one collection grouped as one someone (services/people/): a machine suggestion until a
    human confirms it. Removed with its last face (storage/people.py), so a label never outlives them."""

    __tablename__ = "people"
    __table_args__ = {"sqlite_autoincrement": True}  # a removed person's id never names another
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    label: Mapped[str | None] = mapped_column(Text)  # free text a human gave; never required to be a name
    confirmed: Mapped[bool] = mapped_column(default=False)  # set only by a human
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    representative_face_id: Mapped[int | None] = mapped_column(ForeignKey("faces.id", ondelete="SET NULL"), index=True)


class PersonFace(Base):
    """A face's person: one at most; the score that put it there; 'cluster' or the human who did."""

    __tablename__ = "person_faces"
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    score: Mapped[float] = mapped_column(Float)  # cosine to the nearest member when it was assigned
    assigned_by: Mapped[str] = mapped_column(String(100))  # "cluster" | a username
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class PeopleRun(Base):
    """How far clustering got in a collection: faces up to ``face_watermark`` were considered, so an
    incremental run looks only at newer ones."""

    __tablename__ = "people_runs"
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    face_watermark: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)


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


class FaceRejection(Base):
    """A human's "no" about a face (services/people/review.py): not this person (``person_id``), or not
    a person to group at all (``person_id`` NULL). Clustering never suggests it again; it goes with the
    face, and a "not this person" with the person."""

    __tablename__ = "face_rejections"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    rejected_by: Mapped[str] = mapped_column(String(100))
    rejected_at: Mapped[datetime] = mapped_column(default=utcnow)


class DrawnFace(Base):
    """A face a user drew a box around because the detector missed it: who added it, and whether it was
    aligned on landmarks found in the box or on the box itself. Goes with the face."""

    __tablename__ = "drawn_faces"
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    added_by: Mapped[str] = mapped_column(String(100))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    aligned_by: Mapped[str] = mapped_column(String(20))  # "landmarks" | "box"


def rejections(session: Session, collection_id: int) -> dict[int, set[int | None]]:
    """face id -> the people it was rejected from (None: from grouping at all), in one collection."""
    found: dict[int, set[int | None]] = {}
    rows = session.execute(
        select(FaceRejection.face_id, FaceRejection.person_id)
        .join(FaceRecord, FaceRecord.id == FaceRejection.face_id)
        .where(FaceRecord.collection_id == collection_id)
    )
    for face, person in rows:
        found.setdefault(face, set()).add(person)
    return found


def add_drawn_face(session: Session, face: FaceRecord, added_by: str, aligned_by: str) -> int:
    """Write a drawn face as ingest writes one (its row and its index journal entry, in the caller's
    transaction, which holds the journal lock), marked with who drew it. Returns its id."""
    session.add(face)
    session.flush()
    session.add(JournalEntry(collection_id=face.collection_id, face_id=face.id, op="add"))
    session.add(DrawnFace(face_id=face.id, added_by=added_by, aligned_by=aligned_by))
    session.flush()
    return face.id
