"""What the person page shows beside a person's faces: their photos, the first and last capture time,
the faces users drew, and the people seen with them (other people with a face in the same photos).

Faces on the opt-out list count for nothing here either: a person is never said to appear beside
someone through a face the views hide.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from facefinder.services.people.results import PersonInfo
from facefinder.services.people.service import People
from facefinder.storage.catalog import FaceRecord, ImageRecord
from facefinder.storage.people import DrawnFace, Person, PersonFace


@dataclass
class Photo:
    """One photo a person is in, with when it was taken (when the provenance says) and their faces in it."""

    image_id: int
    source: str
    captured_at: str | None
    width: int
    height: int
    face_ids: list[int]


@dataclass
class SeenWith:
    """Another person with a face in some of the same photos."""

    person_id: int
    label: str | None
    confirmed: bool
    representative_face_id: int | None
    photos: list[int]  # the shared photos' image ids


@dataclass
class PersonDetails:
    """A person as their page shows them."""

    person: PersonInfo
    photos: list[Photo] = field(default_factory=list)
    first_captured: str | None = None  # earliest captured_at of their photos (provenance; ISO text)
    last_captured: str | None = None
    undated: int = 0  # photos without a capture time
    seen_with: list[SeenWith] = field(default_factory=list)  # most shared photos first
    drawn: dict[int, str] = field(default_factory=dict)  # face id -> the user who drew it

    def to_dict(self) -> dict[str, Any]:
        return {
            "person": self.person.to_dict(members=True),
            "photos": [vars(p) for p in self.photos],
            "first_captured": self.first_captured,
            "last_captured": self.last_captured,
            "undated": self.undated,
            "seen_with": [vars(s) for s in self.seen_with],
            "drawn": self.drawn,
        }


def person_details(people: People, person_id: int, actor: str | None = None) -> PersonDetails:
    """The person (audited as ``people.show``, once per look) and the facts around them."""
    person = people.show(person_id, actor=actor)
    members = person.members or []
    faces_in: dict[int, list[int]] = defaultdict(list)
    for member in members:
        faces_in[member.image_id].append(member.face_id)
    with people.catalog.session() as session:
        images = session.scalars(select(ImageRecord).where(ImageRecord.id.in_(list(faces_in)))).all()
        photos = sorted(
            (Photo(i.id, i.source, i.captured_at, i.width, i.height, faces_in[i.id]) for i in images),
            key=lambda p: (p.captured_at is None, p.captured_at or "", p.image_id),
        )
        drawn = dict(
            session.execute(
                select(DrawnFace.face_id, DrawnFace.added_by).where(DrawnFace.face_id.in_([m.face_id for m in members]))
            ).all()
        )
    dated = [p.captured_at for p in photos if p.captured_at]
    return PersonDetails(
        person=person,
        photos=photos,
        first_captured=min(dated) if dated else None,
        last_captured=max(dated) if dated else None,
        undated=len(photos) - len(dated),
        seen_with=_seen_with(people, person_id, list(faces_in)),
        drawn=drawn,
    )


def _seen_with(people: People, person_id: int, image_ids: list[int]) -> list[SeenWith]:
    """The other people with a face (not on the opt-out list) in these photos."""
    if not image_ids:
        return []
    with people.catalog.session() as session:
        rows = session.execute(
            select(PersonFace.face_id, PersonFace.person_id, FaceRecord.image_id, FaceRecord.model_id)
            .join(FaceRecord, FaceRecord.id == PersonFace.face_id)
            .where(FaceRecord.image_id.in_(image_ids), PersonFace.person_id != person_id)
        ).all()
        if not rows:
            return []
        hidden = people._hidden([r.face_id for r in rows], rows[0].model_id)
        shared: dict[int, set[int]] = defaultdict(set)
        for row in rows:
            if row.face_id not in hidden:
                shared[row.person_id].add(row.image_id)
        others = session.scalars(select(Person).where(Person.id.in_(list(shared)))).all()
        found = [
            SeenWith(p.id, p.label, bool(p.confirmed), p.representative_face_id, sorted(shared[p.id])) for p in others
        ]
    return sorted(found, key=lambda s: (-len(s.photos), s.person_id))
