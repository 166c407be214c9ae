"""``ff.people_review``: the review queue, where humans settle what clustering left open or doubtful.

The queue of a collection holds its **unassigned** faces (no person took them) and its
**low-confidence** ones (put in a person by clustering with a score below ``below``, 0.75 by default:
the first band above the clustering threshold of 0.70). For each, a human either **assigns** it to a
person (or to a new one), which also confirms a doubtful assignment (it is then the human's, and
leaves the queue), or **rejects** it: "not this person" (it leaves that person and is never put back
there by clustering) or "not a person to group" (it leaves the queue and clustering never assigns it).
Rejections are kept in ``face_rejections`` (storage/people.py) and go with the face.

Drawn faces (a box around a face the detector missed) are services/people/drawn.py; the person page's
facts (photos, capture times, people seen with them) are services/people/details.py. Every action is
in the audit log under its actor; views are logged once per look, as ``ff.people`` logs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, delete, exists, func, select

from facefinder.errors import FieldError, NotFound
from facefinder.services.people import drawn
from facefinder.services.people.clustering import CLUSTER
from facefinder.services.people.results import PersonInfo
from facefinder.services.people.service import People
from facefinder.services.privacy.optout import screen_for
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Collection, FaceRecord, ImageRecord
from facefinder.storage.people import (
    DrawnFace,
    FaceRejection,
    Person,
    PersonFace,
    add_drawn_face,
    rejections,
    settle_people,
)
from facefinder.vision.image import DEFAULT_MAX_PIXELS
from facefinder.vision.pipeline import FacePipeline

LOW_SCORE = 0.75  # clustering assignments below this are shown for review (the threshold is 0.70)
SUGGEST_FLOOR = 0.635  # an unassigned face's nearest person is suggested at or above search's threshold
NEIGHBOURS = 10  # neighbours looked at to suggest a person for an unassigned face


@dataclass
class ReviewItem:
    """One face waiting for a human: unassigned (with the nearest person, if one is near) or doubtful."""

    face_id: int
    image_id: int
    source: str
    quality: float
    box: list[float]
    kind: str  # "unassigned" | "low_confidence"
    person_id: int | None = None  # low_confidence: the person clustering put it in
    score: float | None = None  # low_confidence: the score that put it there
    suggested_person_id: int | None = None  # unassigned: the person of its nearest neighbour, if near
    suggested_score: float | None = None
    drawn_by: str | None = None  # a face a user drew: who


@dataclass
class ReviewQueue:
    """One page of a collection's review queue: the doubtful faces first (lowest score first), then the
    unassigned ones (best quality first). Totals count faces before the opt-out screen."""

    collection: str
    below: float
    low_confidence: int
    unassigned: int
    offset: int
    limit: int
    items: list[ReviewItem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PhotoFaces:
    """A photo (its own pixels) and its faces as the drawing page shows them."""

    image_id: int
    collection: str
    source: str
    width: int
    height: int
    faces: list[dict[str, Any]]


class Review:
    """The review queue, its actions and drawn faces over one store, audited under ``people``'s actor.
    ``pipeline`` loads the models (drawn faces only); ``fenced`` and ``max_pixels``: how the server
    reads source photos (services/sources/folders.py ``read_source``)."""

    def __init__(
        self,
        people: People,
        pipeline: Callable[[], FacePipeline],
        fenced: Sequence[str | Path] = (),
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.people, self.store, self.catalog, self.audit = people, people.store, people.catalog, people.audit
        self.pipeline, self.fenced, self.max_pixels = pipeline, list(fenced), max_pixels

    # ----- the queue ---------------------------------------------------------------------------------
    def queue(
        self, collection: str, below: float = LOW_SCORE, offset: int = 0, limit: int = 50, actor: str | None = None
    ) -> ReviewQueue:
        """One page of the collection's faces waiting for a human (see the module docstring)."""
        row = self.store.collection(collection)
        if not 0.0 < below <= 1.0:
            raise FieldError("below", "a score between 0 and 1")
        low_q, open_q = self._low_query(row.id, below), self._unassigned_query(row.id)
        with self.catalog.session() as session:
            n_low = session.scalar(select(func.count()).select_from(low_q.subquery()))
            n_open = session.scalar(select(func.count()).select_from(open_q.subquery()))
            low = session.execute(low_q.offset(offset).limit(limit)).all() if offset < n_low else []
            rest = limit - len(low)
            unassigned = session.execute(open_q.offset(max(0, offset - n_low)).limit(rest)).all() if rest > 0 else []
            drawn = dict(
                session.execute(
                    select(DrawnFace.face_id, DrawnFace.added_by).where(
                        DrawnFace.face_id.in_([r.id for r in [*low, *unassigned]])
                    )
                ).all()
            )
        items = [
            ReviewItem(r.id, r.image_id, r.source, r.quality, r.box, "low_confidence", r.person_id, r.score)
            for r in low
        ]
        items += [ReviewItem(r.id, r.image_id, r.source, r.quality, r.box, "unassigned") for r in unassigned]
        hidden = self.people._hidden([i.face_id for i in items], row.model_id)
        items = [i for i in items if i.face_id not in hidden]
        for item in items:
            item.drawn_by = drawn.get(item.face_id)
        self._suggest(row.id, [i for i in items if i.kind == "unassigned"])
        self.people._view(actor, "people.review", (collection, below, offset, limit), collection=collection)
        return ReviewQueue(collection, below, n_low, n_open, offset, limit, items)

    @staticmethod
    def _low_query(collection_id: int, below: float):
        return (
            select(
                FaceRecord.id,
                FaceRecord.image_id,
                FaceRecord.quality,
                FaceRecord.box,
                ImageRecord.source,
                PersonFace.person_id,
                PersonFace.score,
            )
            .join(ImageRecord, ImageRecord.id == FaceRecord.image_id)
            .join(PersonFace, PersonFace.face_id == FaceRecord.id)
            .where(FaceRecord.collection_id == collection_id, PersonFace.assigned_by == CLUSTER)
            .where(PersonFace.score < below)
            .order_by(PersonFace.score, FaceRecord.id)
        )

    @staticmethod
    def _unassigned_query(collection_id: int):
        refused = exists().where(and_(FaceRejection.face_id == FaceRecord.id, FaceRejection.person_id.is_(None)))
        held = exists().where(PersonFace.face_id == FaceRecord.id)
        return (
            select(FaceRecord.id, FaceRecord.image_id, FaceRecord.quality, FaceRecord.box, ImageRecord.source)
            .join(ImageRecord, ImageRecord.id == FaceRecord.image_id)
            .where(FaceRecord.collection_id == collection_id, ~held, ~refused)
            .order_by(FaceRecord.quality.desc(), FaceRecord.id)
        )

    def _suggest(self, collection_id: int, items: list[ReviewItem]) -> None:
        """Each unassigned face's nearest person (through the vector index), unless rejected from it."""
        if not items:
            return
        vectors = self._embeddings([i.face_id for i in items])
        found = [i for i in items if i.face_id in vectors]
        if not found:
            return
        hits = self.store.search([collection_id], np.stack([vectors[i.face_id] for i in found]), NEIGHBOURS + 1)
        met = sorted({n for row in hits for n, _ in row})
        with self.catalog.session() as session:
            person_of = dict(
                session.execute(
                    select(PersonFace.face_id, PersonFace.person_id).where(PersonFace.face_id.in_(met))
                ).all()
            )
            refused = rejections(session, collection_id)
        for item, row in zip(found, hits):
            for other, score in row:
                person = person_of.get(other)
                if other != item.face_id and person is not None and person not in refused.get(item.face_id, ()):
                    if score >= SUGGEST_FLOOR:
                        item.suggested_person_id, item.suggested_score = person, round(float(score), 4)
                    break

    def _embeddings(self, face_ids: list[int]) -> dict[int, np.ndarray]:
        with self.catalog.session() as session:
            rows = session.execute(select(FaceRecord.id, FaceRecord.embedding).where(FaceRecord.id.in_(face_ids)))
            return {r.id: np.frombuffer(r.embedding, np.float32) for r in rows}

    # ----- the actions -------------------------------------------------------------------------------
    def collection_of_face(self, face_id: int) -> str:
        """The name of the collection a face is in (what the server checks grants against)."""
        with self.catalog.session() as session:
            name = session.scalar(
                select(Collection.name)
                .join(FaceRecord, FaceRecord.collection_id == Collection.id)
                .where(FaceRecord.id == face_id)
            )
        if name is None:
            raise NotFound(f"face {face_id} does not exist")
        return name

    def thumbnail(self, face_id: int, actor: str | None = None) -> bytes:
        """The aligned crop of a face in the queue (never one on the opt-out list); logged once per look."""
        face = self._face(face_id)
        held = self.store.faces([face_id]).get(face_id)
        if held is None:
            raise NotFound(f"face {face_id} does not exist")
        self.people._view(actor, "people.review.faces.view", face_id, face_id=face_id, collection=face[1])
        return held[0].thumbnail

    def assign(self, face_id: int, person_id: int | None, actor: str | None = None) -> PersonInfo:
        """Put a face in a person (``None``: a new person of its own), as a human's assignment: it
        leaves the queue, and its rejections from that person (and from grouping) are lifted."""
        who = self.people._actor(actor)
        cid, collection = self._face(face_id)
        vector = self._embeddings([face_id])[face_id]
        with self.catalog.session() as session, session.begin():
            current = session.get(PersonFace, face_id)
            previous = current.person_id if current else None
            if person_id is None:
                person = Person(collection_id=cid)
                session.add(person)
                session.flush()
                score = 1.0
            else:
                person = session.get(Person, person_id)
                if person is None or person.collection_id != cid:
                    raise FieldError("person_id", f"person {person_id} is not in collection {collection!r}")
                score = self._score(session, vector, person.id, face_id)
            if current is not None:
                session.delete(current)
                session.flush()
            session.add(PersonFace(face_id=face_id, person_id=person.id, score=score, assigned_by=who))
            session.execute(
                delete(FaceRejection).where(
                    FaceRejection.face_id == face_id,
                    (FaceRejection.person_id == person.id) | FaceRejection.person_id.is_(None),
                )
            )
            person.updated_at = utcnow()
            session.flush()
            settle_people(session, [p for p in (previous, person.id) if p is not None])
            target = person.id
        details = {"face_id": face_id, "from_person_id": previous, "new_person": person_id is None, "score": score}
        self.audit.record(who, "people.assign", person_id=target, collection=collection, **details)
        return self.people._shown(target)

    def reject(self, face_id: int, person_id: int | None, actor: str | None = None) -> None:
        """A human's "no": not this person (``person_id``; the face leaves them if it is theirs), or
        not a person to group (``None``; the face leaves whichever person holds it). Kept, so that
        clustering never suggests it again."""
        who = self.people._actor(actor)
        cid, collection = self._face(face_id)
        with self.catalog.session() as session, session.begin():
            if person_id is not None:
                person = session.get(Person, person_id)
                if person is None or person.collection_id != cid:
                    raise FieldError("person_id", f"person {person_id} is not in collection {collection!r}")
            current = session.get(PersonFace, face_id)
            previous = current.person_id if current else None
            if current is not None and (person_id is None or previous == person_id):
                session.delete(current)
            session.add(FaceRejection(face_id=face_id, person_id=person_id, rejected_by=who))
            session.flush()
            if previous is not None:
                settle_people(session, [previous])
        left = previous if previous is not None and (person_id is None or previous == person_id) else None
        self.audit.record(
            who,
            "people.reject",
            face_id=face_id,
            person_id=person_id,
            rejected="not this person" if person_id is not None else "not a person to group",
            removed_from=left,
            collection=collection,
        )

    def _face(self, face_id: int) -> tuple[int, str]:
        """(collection id, name) of a face that exists and is not on the opt-out list (404 otherwise)."""
        with self.catalog.session() as session:
            row = session.execute(
                select(FaceRecord.collection_id, Collection.name, Collection.model_id)
                .join(Collection, Collection.id == FaceRecord.collection_id)
                .where(FaceRecord.id == face_id)
            ).first()
        if row is None or self.people._hidden([face_id], row.model_id):
            raise NotFound(f"face {face_id} does not exist")
        return row.collection_id, row.name

    def _score(self, session, vector: np.ndarray, person_id: int, face_id: int) -> float:
        """Cosine of a face to the nearest member of a person (what ``score`` means everywhere)."""
        rows = session.scalars(
            select(FaceRecord.embedding)
            .join(PersonFace, PersonFace.face_id == FaceRecord.id)
            .where(PersonFace.person_id == person_id, FaceRecord.id != face_id)
        ).all()
        if not rows:
            return 1.0
        members = np.stack([np.frombuffer(r, np.float32) for r in rows])
        return round(float((members @ vector).max()), 4)

    # ----- drawn faces -------------------------------------------------------------------------------
    def image(self, image_id: int) -> PhotoFaces:
        """A photo and its faces (id, box, person, drawn by), for the drawing page; faces on the
        opt-out list are left out."""
        image, collection, model_id = self._image(image_id)
        with self.catalog.session() as session:
            rows = session.execute(
                select(FaceRecord.id, FaceRecord.box, PersonFace.person_id, DrawnFace.added_by)
                .outerjoin(PersonFace, PersonFace.face_id == FaceRecord.id)
                .outerjoin(DrawnFace, DrawnFace.face_id == FaceRecord.id)
                .where(FaceRecord.image_id == image_id)
                .order_by(FaceRecord.id)
            ).all()
        hidden = self.people._hidden([r.id for r in rows], model_id)
        faces = [
            {"face_id": r.id, "box": r.box, "person_id": r.person_id, "drawn_by": r.added_by}
            for r in rows
            if r.id not in hidden
        ]
        return PhotoFaces(image.id, collection, image.source, image.width, image.height, faces)

    def collection_of_image(self, image_id: int) -> str:
        """The name of the collection a photo is in (what the server checks grants against)."""
        return self._image(image_id)[1]

    def _image(self, image_id: int) -> tuple[ImageRecord, str, str | None]:
        with self.catalog.session() as session:
            found = session.execute(
                select(ImageRecord, Collection.name, Collection.model_id)
                .join(Collection, Collection.id == ImageRecord.collection_id)
                .where(ImageRecord.id == image_id)
            ).first()
        if found is None:
            raise NotFound(f"image {image_id} does not exist")
        return found[0], found.name, found.model_id

    def photo(self, image_id: int, actor: str | None = None) -> bytes:
        """The photo (at most 1600 px) to draw a missed face on; logged once per look. Not a photo with a
        face on the opt-out list (as a search result's photo is withheld): a 404."""
        image, collection, model_id = self._image(image_id)
        with self.catalog.session() as session:
            faces = list(session.scalars(select(FaceRecord.id).where(FaceRecord.image_id == image_id)))
        if self.people._hidden(faces, model_id):
            raise NotFound(f"image {image_id} does not exist")
        data = drawn.shown_jpeg(drawn.read_photo(image, self.fenced, self.max_pixels, shown=True))
        self.people._view(actor, "people.photo.view", image_id, image_id=image_id, collection=collection)
        return data

    def draw(
        self, image_id: int, box: list[float], person_id: int | None = None, actor: str | None = None
    ) -> tuple[int, str, PersonInfo | None]:
        """Add the face a user drew a box around (photo pixels) as ingest adds one: its row and index
        journal entry in one transaction, marked as drawn by the actor; then, given ``person_id``, put
        it in that person. Returns (face id, "landmarks" or "box": what aligned it, the person)."""
        who = self.people._actor(actor)
        image, collection, _ = self._image(image_id)
        row = self.store.collection(collection)
        pipeline = self.pipeline()
        if row.model_id and row.model_id != pipeline.model_id:
            raise FieldError(
                "box",
                f"collection {collection!r} holds {row.model_id} faces; this server embeds with {pipeline.model_id}",
            )
        photo = drawn.read_photo(image, self.fenced, self.max_pixels)
        box_px = drawn.checked_box(box, photo.width, photo.height)
        face = drawn.analyse(pipeline, photo, box_px, image, pipeline.model_id)
        embedding = np.frombuffer(face.row.embedding, np.float32)[None, :]
        if screen_for(self.catalog).match(embedding, pipeline.model_id)[0]:  # as ingest drops such a face
            raise FieldError("box", "this face is on the opt-out list: it is not stored")
        if image.collection_id in self.store.lost:
            raise FieldError("box", self.store.lost[image.collection_id])
        with self.catalog.session() as session, session.begin():
            self.catalog.lock_journal(session)
            face_id = add_drawn_face(session, face.row, who, face.aligned_by)
        self.store.refresh()
        self.audit.record(
            who,
            "people.face.draw",
            face_id=face_id,
            image_id=image_id,
            box=face.row.box,
            aligned_by=face.aligned_by,
            quality=face.row.quality,
            collection=collection,
        )
        person = self.assign(face_id, person_id, actor=who) if person_id is not None else None
        return face_id, face.aligned_by, person
