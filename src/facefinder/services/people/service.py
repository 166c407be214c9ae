"""``ff.people``: the people of a collection, clustered by the machine and corrected by humans.

Clustering (clustering.py, graph.py) only ever makes *suggestions*: people with ``confirmed`` False.
Merge, split, label and confirm are human actions, each written to the audit log under its actor, and
a full re-cluster keeps every person a human touched. Viewing people is logged too (a person's faces
are biometric data grouped by identity), once per look: one entry per actor and view in 10 minutes
(``OncePer``, as the server does for search results).

The views never show a face on the opt-out list (the same screen search uses,
services/privacy/optout.py): such a face is neither listed nor counted, a person left with none is not
shown, and a representative on the list gives way to the best face that is not. Erasure needs nothing
from here: deleting faces settles their people in the same transaction (storage/people.py).

Who may see or change which collection's people is the server's business (interfaces/http/people.py
checks grants like search does); locally, whoever opens the data directory holds it all already.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import func, select, update

from facefinder.errors import FieldError, NotFound
from facefinder.services.audit import AuditLog, OncePer
from facefinder.services.people.clustering import ClusterSettings, cluster
from facefinder.services.people.results import ClusterReport, Member, PersonInfo, SplitResult
from facefinder.services.privacy.optout import screen_for
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Collection, FaceRecord, ImageRecord
from facefinder.storage.people import FaceRejection, Person, PersonFace, settle_people
from facefinder.storage.store import FaceStore

LABEL_MAX = 200
VIEWS = OncePer(600.0)  # people views logged once per actor, view and 10 minutes, in this process


class People:
    """Clustering, the people views and the human corrections over one store, audited under ``actor``."""

    def __init__(self, store: FaceStore, audit: AuditLog, actor: str, settings: ClusterSettings | None = None) -> None:
        self.store, self.catalog, self.audit, self.actor = store, store.catalog, audit, actor
        self.settings = settings or ClusterSettings()

    def _actor(self, actor: str | None) -> str:
        return actor or self.actor

    # ----- clustering ------------------------------------------------------------------------------
    def cluster(self, collection: str, full: bool = False, actor: str | None = None) -> ClusterReport:
        """Group the collection's new faces (all of them with ``full``) into people; see clustering.py."""
        report = cluster(self.store, self.store.collection(collection), self.settings, full)
        details = report.to_dict()
        details.pop("collection")
        self.audit.record(self._actor(actor), "people.cluster", collection=collection, **details)
        return report

    # ----- views -----------------------------------------------------------------------------------
    def list(self, collection: str, members: bool = False, actor: str | None = None) -> list[PersonInfo]:
        """The collection's people, most faces first; ``members`` adds each one's faces."""
        row = self.store.collection(collection)
        people = self._infos(select(Person).where(Person.collection_id == row.id), row)
        self._view(actor, "people.list", (collection, members), collection=collection, members=members)
        if not members:
            for person in people:
                person.members = None
        return people

    def show(self, person_id: int, actor: str | None = None) -> PersonInfo:
        """One person with their faces."""
        found = self._infos(select(Person).where(Person.id == person_id))
        if not found:
            raise NotFound(f"person {person_id} does not exist")
        self._view(actor, "people.show", person_id, person_id=person_id, collection=found[0].collection)
        return found[0]

    def collection_of(self, person_id: int) -> str:
        """The name of the collection a person belongs to (what the server checks grants against)."""
        with self.catalog.session() as session:
            name = session.scalar(
                select(Collection.name)
                .join(Person, Person.collection_id == Collection.id)
                .where(Person.id == person_id)
            )
        if name is None:
            raise NotFound(f"person {person_id} does not exist")
        return name

    def thumbnail(self, person_id: int, face_id: int, actor: str | None = None) -> bytes:
        """The aligned crop of one of a person's faces (never one on the opt-out list); logged once per
        look at a person's faces, at the first one fetched."""
        person = self._infos(select(Person).where(Person.id == person_id))
        if not person or face_id not in {m.face_id for m in person[0].members or []}:
            raise NotFound(f"person {person_id} has no face {face_id}")
        held = self.store.faces([face_id]).get(face_id)
        if held is None:  # erased since the person was read
            raise NotFound(f"person {person_id} has no face {face_id}")
        data = held[0].thumbnail
        self._view(actor, "people.faces.view", person_id, person_id=person_id, face_id=face_id)
        return data

    def _view(self, actor: str | None, action: str, key: object, **details: Any) -> None:
        """Log a view unless this actor had the same one logged within the window."""
        claim = (id(self.catalog), self._actor(actor), action, key)
        if not VIEWS.claim(claim):
            return
        try:
            self.audit.record(self._actor(actor), action, **details)
        except BaseException:
            VIEWS.release(claim)
            raise

    def _infos(self, query, collection: Collection | None = None) -> list[PersonInfo]:
        """The people the query selects, as the views show them (opted-out faces left out)."""
        with self.catalog.session() as session:
            people = list(session.scalars(query))
            if not people:
                return []
            if collection is None:
                collection = session.get(Collection, people[0].collection_id)
            rows = session.execute(
                select(PersonFace, FaceRecord.image_id, FaceRecord.quality, FaceRecord.box, ImageRecord.source)
                .join(FaceRecord, FaceRecord.id == PersonFace.face_id)
                .join(ImageRecord, ImageRecord.id == FaceRecord.image_id)
                .where(PersonFace.person_id.in_([p.id for p in people]))
                .order_by(PersonFace.face_id)
            ).all()
        hidden = self._hidden([r[0].face_id for r in rows], collection.model_id)
        by_person: dict[int, list[Member]] = defaultdict(list)
        for link, image_id, quality, box, source in rows:
            if link.face_id not in hidden:
                member = Member(link.face_id, image_id, source, link.score, link.assigned_by, quality, box)
                by_person[link.person_id].append(member)
        infos = [_info(p, collection.name, by_person[p.id]) for p in people if by_person[p.id]]
        return sorted(infos, key=lambda info: (-info.faces, info.person_id))

    def _hidden(self, face_ids: list[int], model_id: str | None) -> set[int]:
        """The faces among these that are on the opt-out list."""
        screen = screen_for(self.catalog)
        if not face_ids or not model_id or not screen.size(model_id):
            return set()
        hidden: set[int] = set()
        for start in range(0, len(face_ids), 2048):
            with self.catalog.session() as session:
                rows = session.execute(
                    select(FaceRecord.id, FaceRecord.embedding).where(FaceRecord.id.in_(face_ids[start : start + 2048]))
                ).all()
            if rows:
                hits = screen.match(np.stack([np.frombuffer(r.embedding, np.float32) for r in rows]), model_id)
                hidden |= {r.id for r, hit in zip(rows, hits) if hit}
        return hidden

    # ----- human actions ---------------------------------------------------------------------------
    def merge(self, person_id: int, other_id: int, actor: str | None = None) -> PersonInfo:
        """Move every face of ``other_id`` into ``person_id`` and remove ``other_id``: a human says they
        are one person. The label stays (or comes from the other); confirmed only if both were."""
        if person_id == other_id:
            raise FieldError("other", f"person {person_id} cannot be merged with itself")
        who = self._actor(actor)
        with self.catalog.session() as session, session.begin():
            keep, other = self._person(session, person_id), self._person(session, other_id)
            if keep.collection_id != other.collection_id:
                raise FieldError("other", f"persons {person_id} and {other_id} are in different collections")
            moved = session.scalar(select(func.count()).where(PersonFace.person_id == other_id))
            session.execute(
                update(PersonFace)
                .where(PersonFace.person_id == other_id)
                .values(person_id=person_id, assigned_by=who, assigned_at=utcnow())
            )
            session.execute(  # a face a human took out of either is not this person either
                update(FaceRejection).where(FaceRejection.person_id == other_id).values(person_id=person_id)
            )
            keep.label = keep.label or other.label
            keep.confirmed = keep.confirmed and other.confirmed
            keep.updated_at = utcnow()
            session.flush()
            settle_people(session, [person_id, other_id])
        self._record(who, "people.merge", person_id, merged=other_id, faces_moved=moved)
        return self._shown(person_id)

    def split(self, person_id: int, face_ids: list[int], actor: str | None = None) -> SplitResult:
        """Take these faces out of a person into a new, unconfirmed one: a human says they are someone else."""
        chosen = sorted(set(face_ids))
        if not chosen:
            raise FieldError("face_ids", "name at least one face to split off")
        shown = {m.face_id for m in self._shown(person_id).members or []}
        strangers = [f for f in chosen if f not in shown]
        if strangers:
            raise FieldError("face_ids", f"face {strangers[0]} is not one of person {person_id}'s faces")
        who = self._actor(actor)
        with self.catalog.session() as session, session.begin():
            person = self._person(session, person_id)
            total = session.scalar(select(func.count()).where(PersonFace.person_id == person_id))
            if len(chosen) >= total:
                raise FieldError("face_ids", "a split must leave at least one face with the person; merge instead")
            new = Person(collection_id=person.collection_id)
            session.add(new)
            session.flush()
            session.execute(
                update(PersonFace)
                .where(PersonFace.person_id == person_id, PersonFace.face_id.in_(chosen))
                .values(person_id=new.id, assigned_by=who, assigned_at=utcnow())
            )
            person.updated_at = utcnow()
            session.flush()
            settle_people(session, [person_id, new.id])
            new_id = new.id
        self._record(who, "people.split", person_id, new_person_id=new_id, face_ids=chosen)
        return SplitResult(self._shown(person_id), self._shown(new_id))

    def label(self, person_id: int, text: str, actor: str | None = None) -> PersonInfo:
        """Give a person a label (free text; an empty one removes it)."""
        text = (text or "").strip()
        if len(text) > LABEL_MAX:
            raise FieldError("label", f"at most {LABEL_MAX} characters")
        return self._change(person_id, "people.label", actor, label=text or None)

    def confirm(self, person_id: int, actor: str | None = None) -> PersonInfo:
        """A human checked that these faces are one person: the person is confirmed (and kept by --full)."""
        return self._change(person_id, "people.confirm", actor, confirmed=True)

    def _change(self, person_id: int, action: str, actor: str | None, **values: Any) -> PersonInfo:
        who = self._actor(actor)
        with self.catalog.session() as session, session.begin():
            person = self._person(session, person_id)
            for key, value in values.items():
                setattr(person, key, value)
            person.updated_at = utcnow()
        self._record(who, action, person_id, **values)
        return self._shown(person_id)

    def _record(self, actor: str, action: str, person_id: int, **details: Any) -> None:
        self.audit.record(actor, action, person_id=person_id, collection=self.collection_of(person_id), **details)

    def _person(self, session, person_id: int) -> Person:
        person = session.get(Person, person_id)
        if person is None:
            raise NotFound(f"person {person_id} does not exist")
        return person

    def _shown(self, person_id: int) -> PersonInfo:
        found = self._infos(select(Person).where(Person.id == person_id))
        if not found:
            raise NotFound(f"person {person_id} does not exist")
        return found[0]


def _info(person: Person, collection: str, members: list[Member]) -> PersonInfo:
    """A person as shown: counts over the faces shown; the representative is the best one shown."""
    shown = {m.face_id for m in members}
    representative = person.representative_face_id
    if representative not in shown:
        representative = max(members, key=lambda m: (m.quality, -m.face_id)).face_id
    return PersonInfo(
        person_id=person.id,
        collection=collection,
        label=person.label,
        confirmed=bool(person.confirmed),
        faces=len(members),
        photos=len({m.image_id for m in members}),
        representative_face_id=representative,
        created_at=person.created_at,
        updated_at=person.updated_at,
        members=members,
    )
