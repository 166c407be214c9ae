"""Search by person: a probe face ranked against people, and a person used as the probe.

A person is scored by the mean of two cosines: to its nearest face, and to its **template** (the
normalised mean of its faces' embeddings). Averaging a person's faces cancels much of what one photo
gets wrong (pose, light, blur); keeping the nearest face keeps a person with one good match in reach.
Measured by benchmarks/person_search.py against ranking the single faces (docs/people.md): rank-1 on
LFW 1:N 97.62% vs 97.44%, FNIR at FPIR 1% 15.5% vs 16.3%; cfp-dev profile probes 77.5% vs 76.3%.

Only people holding one of the probe's ``FACE_HITS`` nearest faces are scored (the index gives those,
so no person template is ever compared with every probe), and faces on the opt-out list neither count
toward a template nor are returned, as in every other view. Scores here are not single-comparison
scores, so a person candidate's false match rate is its nearest face's, and the threshold applies to
the person's score. Each search is audited with its case and purpose, like a face search.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from sqlalchemy import select

from facefinder.errors import FaceFinderError, ImageError, NotFound
from facefinder.services.audit import AuditLog
from facefinder.services.privacy.optout import screen_for
from facefinder.services.search import Candidate, Searcher
from facefinder.services.sources.folders import iter_sources
from facefinder.storage.catalog import Collection, FaceRecord
from facefinder.storage.people import Person, PersonFace
from facefinder.storage.store import FaceStore
from facefinder.vision.image import decode_photo
from facefinder.vision.pipeline import FacePipeline

FACE_HITS = 50  # nearest faces asked of the index per probe; their people are the ones scored


@dataclass(kw_only=True)
class PersonCandidate:
    """A person like the probe: its score (mean of the template's and the nearest face's cosine), and
    that nearest face with its source, so every person result still points at a photo."""

    rank: int
    person_id: int
    collection: str
    label: str | None
    confirmed: bool
    faces: int  # faces counted in the template (opted-out faces are not)
    score: float
    template_score: float
    band: str
    nearest_face: Candidate

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PersonProbe:
    """One probe face (of a photo, or a person used as the probe) with the people like it."""

    probe: str
    face: int | None
    box: list[float] | None
    quality: float | None
    people: list[PersonCandidate] = field(default_factory=list)
    faces: list[Candidate] = field(default_factory=list)  # single faces, for a person used as the probe
    error: str | None = None
    probe_sha256: str | None = None
    threshold: float | None = None  # the threshold searched at: the calibrated one for the gallery's size by default

    def to_dict(self) -> dict:
        return asdict(self)


class PersonSearch:
    """Probe photos or a person -> ranked people (and faces), audited under ``actor``."""

    def __init__(self, store: FaceStore, audit: AuditLog, pipeline: Callable[[], FacePipeline], actor: str) -> None:
        self.store, self.catalog, self.audit, self.actor = store, store.catalog, audit, actor
        self._pipeline = pipeline

    def photos(
        self,
        probes: list[str | os.PathLike],
        collections: list[str] | None = None,
        top_k: int = 10,
        threshold: float | None = None,
        case_id: str | None = None,
        purpose: str | None = None,
        actor: str | None = None,
    ) -> list[PersonProbe]:
        """The people like each face of the probe photos (or folders of them), best first."""
        searcher = self._searcher(top_k)
        collection_ids = searcher.collection_ids(collections)
        threshold = searcher.default_threshold(collection_ids) if threshold is None else threshold
        results = []
        for probe in probes:
            for item in iter_sources(probe, provenance=False):
                try:
                    data = item.read()
                    faces = searcher.pipeline.analyze_decoded([decode_photo(data, item.source)])[0]
                except ImageError as exc:
                    results.append(PersonProbe(item.source, None, None, None, error=exc.reason))
                    continue
                except OSError:
                    results.append(PersonProbe(item.source, None, None, None, error="unreadable"))
                    continue
                if not faces:
                    results.append(PersonProbe(item.source, None, None, None, error="no-face"))
                    continue
                ranked = self.rank(searcher, np.stack([f.embedding for f in faces]), collection_ids, top_k, threshold)
                digest = hashlib.sha256(data).hexdigest()
                for number, (face, people) in enumerate(zip(faces, ranked)):
                    box = [round(float(v), 2) for v in face.box]
                    record = PersonProbe(item.source, number, box, round(face.quality.score, 4), people)
                    record.probe_sha256 = digest
                    results.append(record)
        for record in results:
            self._record(actor, case_id, purpose, collections, top_k, threshold, record)
        return results

    def person(
        self,
        person_id: int,
        collections: list[str] | None = None,
        top_k: int = 10,
        threshold: float | None = None,
        case_id: str | None = None,
        purpose: str | None = None,
        actor: str | None = None,
        **audit: object,
    ) -> PersonProbe:
        """A person as the probe: their template searched for other faces and other people (their own
        faces and the person itself left out). Default collections: the person's own."""
        searcher = self._searcher(top_k)
        collection, members = self._members(person_id)
        own = set(members)
        template = _template(list(members.values()))
        if template is None:
            raise NotFound(f"person {person_id} does not exist")
        collection_ids = searcher.collection_ids(collections or [collection])
        threshold = searcher.default_threshold(collection_ids) if threshold is None else threshold
        people = self.rank(searcher, template[None, :], collection_ids, top_k + 1, threshold)[0]
        people = [p for p in people if p.person_id != person_id][:top_k]
        for rank, candidate in enumerate(people, 1):
            candidate.rank = rank
        hits = searcher.search_embeddings(template[None, :], collection_ids, top_k + len(own), threshold)[0]
        faces = [c for c in hits if c.face_id not in own][:top_k]
        for rank, candidate in enumerate(faces, 1):
            candidate.rank = rank
        record = PersonProbe(f"person:{person_id}", None, None, None, people, faces)
        self._record(actor, case_id, purpose, collections or [collection], top_k, threshold, record, **audit)
        return record

    def face(
        self,
        embedding: np.ndarray,
        probe: str,
        collections: list[str] | None = None,
        top_k: int = 10,
        threshold: float | None = None,
        case_id: str | None = None,
        purpose: str | None = None,
        actor: str | None = None,
        face: int | None = None,
        probe_sha256: str | None = None,
        **audit: object,
    ) -> PersonProbe:
        """The people like one face already analysed (face ``face`` of a server's held probe), audited
        with ``audit`` besides the usual details."""
        searcher = self._searcher(top_k)
        ids = searcher.collection_ids(collections)
        threshold = searcher.default_threshold(ids) if threshold is None else threshold
        people = self.rank(searcher, embedding[None, :], ids, top_k, threshold)[0]
        record = PersonProbe(probe, face, None, None, people, probe_sha256=probe_sha256)
        self._record(actor, case_id, purpose, collections, top_k, threshold, record, **audit)
        return record

    def rank(
        self, searcher: Searcher, embeddings: np.ndarray, collection_ids: list[int], top_k: int, threshold: float
    ) -> list[list[PersonCandidate]]:
        """Per probe embedding, the people holding its nearest faces, scored and ranked (see the module)."""
        hits = searcher.search_embeddings(embeddings, collection_ids, FACE_HITS, -1.0)
        default = searcher.default_threshold(collection_ids)  # bands are read against the gallery's default
        person_of = self._person_of([c.face_id for row in hits for c in row])
        people = self._people({p for p in person_of.values()})
        results = []
        for embedding, row in zip(embeddings, hits):
            nearest: dict[int, Candidate] = {}
            for candidate in row:  # best first, so the first face seen of a person is its nearest
                person_id = person_of.get(candidate.face_id)
                if person_id in people and person_id not in nearest:
                    nearest[person_id] = candidate
            scored = []
            for person_id, face in nearest.items():
                info, template, count = people[person_id]
                template_score = float(template @ embedding)
                score = (face.score + template_score) / 2
                if score >= threshold:
                    scored.append((score, template_score, person_id, info, count, face))
            scored.sort(key=lambda s: (-s[0], s[2]))
            results.append(
                [
                    PersonCandidate(
                        rank=rank,
                        person_id=person_id,
                        collection=face.collection,
                        label=info.label,
                        confirmed=info.confirmed,
                        faces=count,
                        score=round(score, 4),
                        template_score=round(template_score, 4),
                        band=searcher.calibration.band(score, default),
                        nearest_face=face,
                    )
                    for rank, (score, template_score, person_id, info, count, face) in enumerate(scored[:top_k], 1)
                ]
            )
        return results

    def _searcher(self, top_k: int) -> Searcher:
        if top_k < 1:
            raise FaceFinderError("top_k: must be at least 1")
        return Searcher(self.store, self._pipeline())

    def _person_of(self, face_ids: list[int]) -> dict[int, int]:
        if not face_ids:
            return {}
        with self.catalog.session() as session:
            rows = session.execute(
                select(PersonFace.face_id, PersonFace.person_id).where(PersonFace.face_id.in_(set(face_ids)))
            ).all()
        return dict(rows)

    def _people(self, person_ids: set[int]) -> dict[int, tuple[Person, np.ndarray, int]]:
        """person id -> (row, template, faces in it), opted-out faces left out."""
        if not person_ids:
            return {}
        with self.catalog.session() as session:
            people = {p.id: p for p in session.scalars(select(Person).where(Person.id.in_(person_ids)))}
            rows = _member_rows(session, PersonFace.person_id, PersonFace.person_id.in_(person_ids))
        vectors: dict[int, list[np.ndarray]] = defaultdict(list)
        for person_id, embedding, model_id in _visible(self.catalog, rows):
            vectors[person_id].append(embedding)
        found = {}
        for person_id, faces in vectors.items():
            template = _template(faces)
            if template is not None and person_id in people:
                found[person_id] = (people[person_id], template, len(faces))
        return found

    def _members(self, person_id: int) -> tuple[str, dict[int, np.ndarray]]:
        """The person's collection and their faces' embeddings (opted-out faces left out)."""
        with self.catalog.session() as session:
            collection = session.scalar(
                select(Collection.name)
                .join(Person, Person.collection_id == Collection.id)
                .where(Person.id == person_id)
            )
            if collection is None:
                raise NotFound(f"person {person_id} does not exist")
            rows = _member_rows(session, PersonFace.face_id, PersonFace.person_id == person_id)
        return collection, {face_id: embedding for face_id, embedding, _ in _visible(self.catalog, rows)}

    def _record(self, actor, case_id, purpose, collections, top_k, threshold, record: PersonProbe, **audit) -> None:
        record.threshold = threshold
        self.audit.record(
            actor or self.actor,
            "people.search",
            case_id,
            purpose=purpose,
            probe=record.probe,
            probe_sha256=record.probe_sha256,
            face=record.face,
            collections=collections or "all",
            top_k=top_k,
            threshold=threshold,
            people=[[p.person_id, p.score] for p in record.people],
            candidates=[[c.face_id, c.score] for c in record.faces],
            error=record.error,
            **audit,
        )


def _member_rows(session, key, condition) -> list:
    """(``key``, embedding, model id) of the people's faces that ``condition`` picks."""
    return session.execute(
        select(key, FaceRecord.embedding, Collection.model_id)
        .join(FaceRecord, FaceRecord.id == PersonFace.face_id)
        .join(Person, Person.id == PersonFace.person_id)
        .join(Collection, Collection.id == Person.collection_id)
        .where(condition)
    ).all()


def _visible(catalog, rows) -> list[tuple[int, np.ndarray, str | None]]:
    """(key, embedding, model) of the rows whose face is not on the opt-out list."""
    decoded = [(key, np.frombuffer(blob, np.float32), model_id) for key, blob, model_id in rows]
    screen = screen_for(catalog)
    by_model: dict[str | None, list[int]] = defaultdict(list)
    for n, (_, _, model_id) in enumerate(decoded):
        by_model[model_id].append(n)
    hidden: set[int] = set()
    for model_id, numbers in by_model.items():
        if model_id and screen.size(model_id):
            hits = screen.match(np.stack([decoded[n][1] for n in numbers]), model_id)
            hidden |= {n for n, hit in zip(numbers, hits) if hit}
    return [row for n, row in enumerate(decoded) if n not in hidden]


def _template(embeddings: list[np.ndarray]) -> np.ndarray | None:
    """The normalised mean of normalised embeddings; None for none."""
    if not embeddings:
        return None
    stacked = np.stack(embeddings).astype(np.float32)
    mean = (stacked / np.linalg.norm(stacked, axis=1, keepdims=True)).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None
