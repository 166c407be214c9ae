"""Erasure and opt-out that reach the whole person: every face held that is likely the person's, for review.

A person's photo matches only some of their held faces at the strict privacy threshold: another age,
pose or light scores lower (on LFW a third of a person's photos fall below it). Their own faces, once
found, match the rest. So the list grows from the direct matches (at or above the threshold against
the person's photo or opt-out templates), in rounds, by two rules:

* **via a face**: a held face that scores at or above ``link`` against at least ``support`` faces
  already listed (and ``support_share`` of them: a person with hundreds of photos offers a lookalike
  hundreds of chances), or at or above ``strong`` against one; one chance match against a lookalike
  does not chain on (a lookalike of the person rarely looks like two of their photos).
* **via a person**: the other faces of a person (services/people/, the clustering of a collection)
  of whom at least ``person_support`` faces are listed.

Each listed face says why (direct; via face X, with the score of that link; via person P) and its
score against the person's own photo. Nothing is erased here: the list is for a human to review, and
services/privacy/service.py erases the faces they confirm. ``grow`` works on plain callables so that
benchmarks/privacy_expansion.py runs the very same rule over arrays; it chose the defaults on LFW
(docs/privacy.md, "Reaching the whole person").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from facefinder.services.search import Match, Searcher
from facefinder.storage.people import PersonFace

if TYPE_CHECKING:
    from facefinder.services.privacy.service import Privacy

REASONS = ("direct", "face", "person")

# listed face ids -> {listed face: [(held face, score), ...]} at or above the link threshold
Neighbours = Callable[[list[int]], dict[int, list[tuple[int, float]]]]
PeopleOf = Callable[[list[int]], dict[int, int]]  # face ids -> {face: person it is grouped into}
Members = Callable[[list[int]], dict[int, list[int]]]  # person ids -> {person: its face ids}


@dataclass(frozen=True)
class ExpansionRule:
    """How far the list grows. Defaults chosen on LFW by benchmarks/privacy_expansion.py (docs/privacy.md).

    ``link`` None means the threshold of the request (the privacy threshold unless overridden)."""

    link: float | None = None  # cosine at or above which a held face matches a listed one
    support: int = 2  # listed faces it must match at ``link`` ...
    support_share: float = 0.02  # ... and at least this share of the faces listed so far
    strong: float = 0.80  # ... or one listed face at this score
    person_support: int = 2  # listed faces of a person that bring in the rest of them (0: people unused)
    rounds: int = 10  # at most this many rounds of growth


@dataclass
class Reason:
    """Why one face is listed: ``reason`` one of REASONS; ``via`` the face (face) or person (person)
    that brought it in; ``link`` the score of that face link; ``support`` the listed faces (face) or
    listed members (person) behind it; ``step`` (the round that listed it) 0 for direct matches."""

    reason: str
    via: int | None = None
    link: float | None = None
    support: int = 1
    step: int = 0


@dataclass(kw_only=True)
class Listed(Match):
    """A face on the expanded list: a Match (``score`` against the person's own photo or templates),
    with why it is listed."""

    reason: str
    via: int | None = None
    link: float | None = None
    support: int = 1
    step: int = 0


def grow(
    direct: dict[int, float],
    neighbours: Neighbours,
    people_of: PeopleOf | None,
    members: Members | None,
    rule: ExpansionRule,
    link: float,
) -> dict[int, Reason]:
    """The expanded list: face id -> why, from the direct matches (face id -> score). ``neighbours``
    must return the held faces at or above ``link`` (the rule's link, resolved by the caller)."""
    listed = {face: Reason("direct") for face in direct}
    links: dict[int, dict[int, float]] = {}  # face not listed -> {listed face: score}
    people_done: set[int] = set()
    frontier = list(direct)
    for number in range(1, rule.rounds + 1):
        if not frontier:
            break
        for source, pairs in neighbours(frontier).items():
            for face, score in pairs:
                if face not in listed and score >= link:
                    links.setdefault(face, {})[source] = score
        new, need = [], max(rule.support, math.ceil(rule.support_share * len(listed)))
        for face, by in links.items():
            if face in listed:
                continue
            source, best = max(by.items(), key=lambda pair: (pair[1], -pair[0]))
            if len(by) >= need or best >= rule.strong:
                listed[face] = Reason("face", source, round(best, 4), len(by), number)
                new.append(face)
        if rule.person_support and people_of is not None and members is not None:
            new += _via_people(listed, people_of, members, rule.person_support, people_done, number)
        frontier = new
    return listed


def _via_people(
    listed: dict[int, Reason], people_of: PeopleOf, members: Members, support: int, done: set[int], number: int
) -> list[int]:
    """List the other faces of each person with at least ``support`` faces listed (each person once)."""
    counts: dict[int, int] = {}
    for person in people_of(list(listed)).values():
        counts[person] = counts.get(person, 0) + 1
    ready = sorted(p for p, n in counts.items() if n >= support and p not in done)
    done.update(ready)
    new = []
    for person, faces in members(ready).items():
        for face in faces:
            if face not in listed:
                listed[face] = Reason("person", person, None, counts[person], number)
                new.append(face)
    return new


# ----- over a store -------------------------------------------------------------------------------------
class StoreGraph:
    """``grow``'s callables over the vector index and the people tables of some collections."""

    def __init__(self, privacy: Privacy, collection_ids: list[int], link: float) -> None:
        self.store, self.collection_ids, self.link = privacy.store, collection_ids, link

    def neighbours(self, face_ids: list[int]) -> dict[int, list[tuple[int, float]]]:
        rows = self.store.faces(face_ids)
        ids = [f for f in face_ids if f in rows]
        if not ids:
            return {}
        vectors = np.stack([np.frombuffer(rows[f][0].embedding, np.float32) for f in ids])
        found = self.store.search_above(self.collection_ids, vectors, self.link)
        return {f: [(g, s) for g, s in pairs if g != f] for f, pairs in zip(ids, found)}

    def people_of(self, face_ids: list[int]) -> dict[int, int]:
        with self.store.catalog.session() as session:
            rows = session.execute(
                select(PersonFace.face_id, PersonFace.person_id).where(PersonFace.face_id.in_(face_ids))
            ).all()
        return {r.face_id: r.person_id for r in rows}

    def members(self, person_ids: list[int]) -> dict[int, list[int]]:
        if not person_ids:
            return {}
        with self.store.catalog.session() as session:
            rows = session.execute(
                select(PersonFace.person_id, PersonFace.face_id).where(PersonFace.person_id.in_(person_ids))
            ).all()
        grouped: dict[int, list[int]] = {}
        for r in rows:
            grouped.setdefault(r.person_id, []).append(r.face_id)
        return {p: sorted(faces) for p, faces in grouped.items()}


def expand(
    privacy: Privacy,
    embeddings: np.ndarray,
    collections: list[str] | None = None,
    threshold: float | None = None,
    rule: ExpansionRule | None = None,
) -> list[Listed]:
    """Every face held that is likely the person's (``embeddings``: their photo's face, or an opt-out's
    templates), direct matches first, then by score against them; each with why it is listed."""
    threshold = privacy.threshold if threshold is None else threshold
    rule = rule or ExpansionRule()
    link = threshold if rule.link is None else rule.link
    searcher = Searcher(privacy.store, privacy.pipeline, privacy.calibration)
    graph = StoreGraph(privacy, searcher.collection_ids(collections), link)
    direct = {m.face_id: m.score for m in privacy.find(embeddings, collections, threshold)}
    reasons = grow(direct, graph.neighbours, graph.people_of, graph.members, rule, link)
    rows = privacy.store.faces(list(reasons))
    probes = np.atleast_2d(np.asarray(embeddings, np.float32))
    listed = []
    for face, why in reasons.items():
        if face not in rows:  # erased meanwhile
            continue
        score = float((probes @ np.frombuffer(rows[face][0].embedding, np.float32)).max())
        listed.append(Listed(**searcher.match_fields(face, score, rows), **vars(why)))
    return sorted(listed, key=lambda m: (REASONS.index(m.reason) > 0, -m.score, m.face_id))


def audit_details(matches: list[Match], expand: bool) -> dict:
    """For the audit entry of an expanded list: that it was expanded, and how many faces each reason listed."""
    if not expand:
        return {}
    counts = {reason: 0 for reason in REASONS}
    for m in matches:
        counts[getattr(m, "reason", "direct")] += 1
    return {"expanded": True, "listed_by": counts}


def keep_templates(privacy: Privacy, optout_id: int, face_ids: list[int]) -> int:
    """Add the embeddings of confirmed faces to an opt-out's templates (before they are erased), those of
    the models in use only; returns how many were added. The opt-out's screen then catches new photos
    of the person that match any face of theirs a reviewer confirmed, not only the photo they gave."""
    from facefinder.services.privacy import optout as optouts

    model_id = privacy.pipeline.model_id
    rows = privacy.store.faces(face_ids)
    templates = [
        (np.frombuffer(record.embedding, np.float32), record.quality)
        for record, _, _ in (rows[f] for f in face_ids if f in rows)
        if record.model_id == model_id
    ]
    return optouts.add_templates(privacy.store.catalog, optout_id, templates, model_id)
