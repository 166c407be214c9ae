"""One clustering run over one collection: read its faces, ask the vector index for each one's nearest
neighbours (``FaceStore.search``: k per face, never all pairs), group them (graph.py), and write the new
people and assignments in one transaction.

Incremental (the default) looks only at faces newer than the last run's watermark, plus the older
unassigned faces they meet: new faces join the people they belong to or form new ones. A full run
first drops every machine suggestion (a person no human confirmed, labelled, merged, split, added a
face to or took one out of), then groups every face not held by a person a human touched. Faces
below the quality floor, faces on the opt-out list and faces a human rejected as not a person to
group are never assigned. The settings were chosen by benchmarks/people.py on LFW.

Runs on one collection are serialised where it matters, at the write: it takes a per-collection lock
(SQLite's write lock; a PostgreSQL advisory lock) and checks that no other run wrote since this one
read. If one did, this run is stale and starts again on what the other left (``cluster``), so two
processes clustering at once give the same people as one after the other. Faces a human assigned, and
people a human merged away, while a run was reading are left as the human left them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, exists, func, insert, select, text, update

from facefinder.services.people import graph
from facefinder.services.people.results import ClusterReport
from facefinder.services.privacy.optout import screen_for
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Collection, FaceRecord
from facefinder.storage.people import FaceRejection, PeopleRun, Person, PersonFace, rejections, settle_people
from facefinder.storage.store import FaceStore

CLUSTER = "cluster"  # assigned_by of machine assignments; anything else names a human
BATCH = 2048  # faces read and searched at a time
PEOPLE_LOCK_KEY = 0x70656F70  # PostgreSQL advisory lock class of clustering writes ("peop"), per collection
ATTEMPTS = 5  # a run that finds another one wrote first starts again, at most this many times


class StaleRun(Exception):
    """Another run on the collection wrote while this one read: its grouping no longer holds."""


def cluster(store: FaceStore, collection: Collection, settings: ClusterSettings, full: bool) -> ClusterReport:
    """One run, started again on the new state when another run on the collection wrote first."""
    for _ in range(ATTEMPTS - 1):
        try:
            return ClusterRun(store, collection, settings, full).run()
        except StaleRun:
            continue
    return ClusterRun(store, collection, settings, full).run()


@dataclass(frozen=True)
class ClusterSettings:
    """How strict clustering is. Defaults measured on LFW by benchmarks/people.py (docs/people.md)."""

    threshold: float = 0.70  # cosine at or above which two faces may be linked
    neighbours: int = 30  # k of the k-NN lists
    quality_floor: float = 0.30  # faces below stay unassigned
    support: int = 2  # neighbours of one person a face needs to join it
    min_size: int = 2  # faces a new person needs
    method: str = "components"  # graph.METHODS


class ClusterRun:
    """A clustering run's state: the collection, its faces' quality, who is already whose, what was read."""

    def __init__(self, store: FaceStore, collection: Collection, settings: ClusterSettings, full: bool) -> None:
        self.store, self.catalog, self.settings, self.full = store, store.catalog, settings, full
        self.cid, self.model_id = collection.id, collection.model_id
        self.report = ClusterReport(collection.name, full, settings.method, settings.threshold, settings.quality_floor)
        self.screen = screen_for(self.catalog)
        self.listed: dict[int, bool] = {}  # face id -> on the opt-out list (checked as faces are read)

    def run(self) -> ClusterReport:
        started = time.perf_counter()
        with self.catalog.session() as session:
            watermark = session.scalar(select(func.max(FaceRecord.id)).where(FaceRecord.collection_id == self.cid)) or 0
            run = session.get(PeopleRun, self.cid)
            previous = 0 if self.full or run is None else run.face_watermark
            self.token = None if run is None else run.at  # changed by every run's write
        if self.full:
            self.report.dropped_people = self._drop_suggestions()
        self.quality, self.member_of = self._faces(watermark)
        with self.catalog.session() as session:
            self.refused = rejections(session, self.cid)  # a human's "no" (services/people/review.py)
        pending = [f for f in self.quality if previous < f <= watermark and f not in self.member_of]
        neighbours = self._neighbour_lists(self._eligible(pending, count=True))
        older = {n for lists in neighbours.values() for n, _ in lists} - set(neighbours) - set(self.member_of)
        neighbours |= self._neighbour_lists(sorted(older))  # older unassigned faces met: their lists, for mutuality
        s = self.settings
        grouping = graph.group(sorted(neighbours), neighbours, self.member_of, s.method, s.support, s.min_size)
        for face, (person, _) in list(grouping.assigned.items()):
            if person >= 0 and person in self.refused.get(face, ()):  # never back into a person it was taken from
                del grouping.assigned[face]
        self._write(grouping, watermark)
        self.report.joined = grouping.joined_existing()
        self.report.new_people = len(grouping.new_people)
        self.report.new_people_faces = sum(len(faces) for faces in grouping.new_people.values())
        considered = self.report.considered - self.report.below_quality - self.report.opted_out
        self.report.unassigned = considered - sum(1 for f in pending if f in grouping.assigned)
        with self.catalog.session() as session:
            self.report.people = session.scalar(select(func.count()).where(Person.collection_id == self.cid))
        self.report.seconds = round(time.perf_counter() - started, 3)
        return self.report

    # ----- reading ---------------------------------------------------------------------------------
    def _drop_suggestions(self) -> int:
        """Remove the people no human touched (not confirmed, no label, every face put there by clustering,
        no face rejected from them: a "not this person" would go with them, and the face back in)."""
        human = exists().where(PersonFace.person_id == Person.id, PersonFace.assigned_by != CLUSTER)
        human |= exists().where(FaceRejection.person_id == Person.id)
        with self.catalog.session() as session, session.begin():
            ids = list(
                session.scalars(
                    select(Person.id).where(
                        Person.collection_id == self.cid, ~Person.confirmed, Person.label.is_(None), ~human
                    )
                )
            )
            for start in range(0, len(ids), BATCH):
                session.execute(delete(Person).where(Person.id.in_(ids[start : start + BATCH])))
        return len(ids)

    def _faces(self, watermark: int) -> tuple[dict[int, float], dict[int, int]]:
        """(face id -> quality of every face up to the watermark, face id -> person of assigned faces)."""
        with self.catalog.session() as session:
            quality = dict(
                session.execute(
                    select(FaceRecord.id, FaceRecord.quality).where(
                        FaceRecord.collection_id == self.cid, FaceRecord.id <= watermark
                    )
                ).all()
            )
            members = dict(
                session.execute(
                    select(PersonFace.face_id, PersonFace.person_id)
                    .join(Person, Person.id == PersonFace.person_id)
                    .where(Person.collection_id == self.cid)
                ).all()
            )
        return quality, members

    def _embeddings(self, face_ids: list[int]) -> dict[int, np.ndarray]:
        with self.catalog.session() as session:
            rows = session.execute(select(FaceRecord.id, FaceRecord.embedding).where(FaceRecord.id.in_(face_ids))).all()
        return {row.id: np.frombuffer(row.embedding, np.float32) for row in rows}

    def _screen(self, face_ids: list[int]) -> None:
        """Note which of these faces are on the opt-out list (their embeddings are read only when it has
        templates of this collection's model)."""
        fresh = [f for f in face_ids if f not in self.listed]
        if not self.model_id or not self.screen.size(self.model_id):
            self.listed.update(dict.fromkeys(fresh, False))
            return
        for start in range(0, len(fresh), BATCH):
            vectors = self._embeddings(fresh[start : start + BATCH])
            found = list(vectors)
            if found:
                hits = self.screen.match(np.stack([vectors[f] for f in found]), self.model_id)
                self.listed.update({f: bool(h) for f, h in zip(found, hits)})

    def _eligible(self, face_ids: list[int], count: bool = False) -> list[int]:
        """The faces that may be assigned: at or above the quality floor, not rejected by a human from
        grouping, not opted out (and counted)."""
        above = [f for f in face_ids if self.quality.get(f, 0.0) >= self.settings.quality_floor]
        good = [f for f in above if None not in self.refused.get(f, ())]
        self._screen(good)
        eligible = [f for f in good if not self.listed.get(f, False)]
        if count:
            self.report.considered += len(face_ids)
            self.report.below_quality += len(face_ids) - len(above)
            self.report.rejected += len(above) - len(good)
            self.report.opted_out += len(good) - len(eligible)
        return eligible

    def _neighbour_lists(self, face_ids: list[int]) -> dict[int, list[tuple[int, float]]]:
        """Each face's k nearest eligible faces in the collection at or above the threshold, best first."""
        s, lists = self.settings, {}
        for start in range(0, len(face_ids), BATCH):
            vectors = self._embeddings(face_ids[start : start + BATCH])
            ids = [f for f in face_ids[start : start + BATCH] if f in vectors]
            if not ids:
                continue
            hits = self.store.search([self.cid], np.stack([vectors[f] for f in ids]), s.neighbours + 1)
            met = sorted({n for row in hits for n, score in row if score >= s.threshold} - set(self.listed))
            self._eligible(met)  # screens the neighbours met for the first time
            for face, row in zip(ids, hits):
                lists[face] = [
                    (n, round(score, 4))
                    for n, score in row
                    if n != face
                    and score >= s.threshold
                    and self.quality.get(n, 0.0) >= s.quality_floor
                    and not self.listed.get(n, True)
                ][: s.neighbours]
        return lists

    # ----- writing ---------------------------------------------------------------------------------
    def _write(self, grouping: graph.Grouping, watermark: int) -> None:
        """The new people and every assignment, the representatives and the watermark: all or nothing.
        Faces erased since they were read are left out."""
        with self.catalog.session() as session, session.begin():
            self._lock(session)
            faces, still = sorted(grouping.assigned), set()
            for start in range(0, len(faces), BATCH):
                chunk = faces[start : start + BATCH]
                still |= set(session.scalars(select(FaceRecord.id).where(FaceRecord.id.in_(chunk))))
                # A face a human assigned meanwhile stays where they put it.
                still -= set(session.scalars(select(PersonFace.face_id).where(PersonFace.face_id.in_(chunk))))
                # And one a human said no about meanwhile (not a person to group, or not this person) is not written.
                for face, person in session.execute(
                    select(FaceRejection.face_id, FaceRejection.person_id).where(FaceRejection.face_id.in_(chunk))
                ):
                    if person is None or person == grouping.assigned[face][0]:
                        still.discard(face)
            joined = sorted({person for person, _ in grouping.assigned.values() if person >= 0})
            alive = set()  # people a human merged away meanwhile are gone
            for start in range(0, len(joined), BATCH):
                alive |= set(session.scalars(select(Person.id).where(Person.id.in_(joined[start : start + BATCH]))))
            made = [
                temporary
                for temporary in sorted(grouping.new_people, reverse=True)
                if sum(1 for f in grouping.new_people[temporary] if f in still) >= self.settings.min_size
            ]
            now = utcnow()
            ids = dict(zip(made, self._new_people(session, len(made), now)))
            usable = alive | set(ids.values())
            rows = []
            for face in faces:
                person, score = grouping.assigned[face]
                person = ids.get(person) if person < 0 else person
                if face in still and person in usable:
                    rows.append({"face_id": face, "person_id": person, "score": score, "assigned_by": CLUSTER})
            for start in range(0, len(rows), BATCH):
                session.execute(
                    insert(PersonFace), [{**row, "assigned_at": now} for row in rows[start : start + BATCH]]
                )
            touched = sorted({row["person_id"] for row in rows})
            for start in range(0, len(touched), BATCH):
                chunk = touched[start : start + BATCH]
                session.execute(update(Person).where(Person.id.in_(chunk)).values(updated_at=now))
            settle_people(session, touched)
            session.merge(PeopleRun(collection_id=self.cid, face_watermark=watermark, at=now))

    def _lock(self, session) -> None:
        """Hold the collection's clustering lock to the end of this transaction, then make sure no
        other run wrote since this one read (else StaleRun: ``cluster`` starts again)."""
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key, :cid)"), {"key": PEOPLE_LOCK_KEY, "cid": self.cid})
        else:  # any write takes SQLite's one write lock, held to the commit
            session.execute(update(Collection).where(Collection.id == self.cid).values(id=Collection.id))
        token = session.scalar(select(PeopleRun.at).where(PeopleRun.collection_id == self.cid))
        if token != self.token:
            raise StaleRun(f"another clustering run on collection {self.report.collection!r} wrote first")

    def _new_people(self, session, count: int, now) -> list[int]:
        """Ids of ``count`` new people of this collection, in order."""
        ids: list[int] = []
        for start in range(0, count, BATCH):
            rows = [{"collection_id": self.cid, "created_at": now, "updated_at": now}] * min(BATCH, count - start)
            ids += session.scalars(insert(Person).returning(Person.id, sort_by_parameter_order=True), rows).all()
        return ids
