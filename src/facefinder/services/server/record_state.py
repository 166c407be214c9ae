"""The facts of case search records that change after the search and are therefore not columns, filled
in when a record is read (services/server/cases.py):

* *withheld*: a candidate face still held whose person is on the opt-out list (the erasure is under
  review), and a probe face whose person is (the searched one, or one more face of a fused search). Such a face is never shown and never offered as a lead;
  unlike an erased face, it is still in the catalog, and the record says which of the two it is, so
  that an investigator is not told a face was erased when a review is still pending.
* the *probe searches*: every search of a face of the same probe photo (same sha256) for the same
  case that the reader may read, so that the faces of a group photo searched together (or one after
  the other) lead to one another.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import TYPE_CHECKING, Callable

import numpy as np
from sqlalchemy import select

from facefinder.services.privacy import optout
from facefinder.services.server.records import CaseRecord, ProbeSearch
from facefinder.storage.cases import CaseSearch, SamePersonFace

if TYPE_CHECKING:
    from facefinder.storage.store import FaceStore


def current(store: FaceStore, records: list[CaseRecord], readable: Callable[[list[str]], bool]) -> list[CaseRecord]:
    """``records`` with their withheld flags and probe searches as they are now; ``readable`` says
    whether the reader may read a search over those collections."""
    if not records:
        return records
    screen = optout.screen_for(store.catalog)
    listed = screen.size() > 0
    withheld = _withheld_faces(store, screen, records) if listed else set()
    probes, siblings = _probe_facts(store, screen, records, listed, readable)
    extra = _withheld_same_person(store, screen, records) if listed else set()
    return [
        dataclasses.replace(
            record,
            candidates=tuple(
                dataclasses.replace(c, withheld=True) if c.face_id in withheld else c for c in record.candidates
            ),
            probe_withheld=record.id in probes,
            probe_searches=siblings.get((record.probe_sha256, record.case_id), record.probe_searches),
            same_person=tuple(
                dataclasses.replace(f, withheld=True) if (record.id, f.number) in extra else f
                for f in record.same_person
            ),
        )
        for record in records
    ]


def _withheld_faces(store: FaceStore, screen: optout.OptOutScreen, records: list[CaseRecord]) -> set[int]:
    """The candidate faces of ``records`` that are held and match the opt-out list."""
    ids = sorted({c.face_id for r in records for c in r.candidates if c.erased_at is None})
    rows = store.faces(ids) if ids else {}
    by_model: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for face_id, (face, _, _) in rows.items():
        by_model[face.model_id].append((face_id, face.embedding))
    found: set[int] = set()
    for model_id, faces in by_model.items():
        vectors = np.stack([np.frombuffer(embedding, np.float32) for _, embedding in faces])
        found |= {face_id for (face_id, _), hit in zip(faces, screen.match(vectors, model_id)) if hit}
    return found


def _withheld_same_person(
    store: FaceStore, screen: optout.OptOutScreen, records: list[CaseRecord]
) -> set[tuple[int, int]]:
    """(search id, number) of the extra probe faces of fused searches among ``records`` that match the list."""
    fused = {r.id: r.model_id for r in records if r.same_person}
    if not fused:
        return set()
    query = select(SamePersonFace.search_id, SamePersonFace.number, SamePersonFace.probe_embedding).where(
        SamePersonFace.search_id.in_(sorted(fused)), SamePersonFace.probe_embedding.is_not(None)
    )
    with store.catalog.session() as session:
        rows = session.execute(query).all()
    return {
        (search_id, number)
        for search_id, number, embedding in rows
        if screen.match(np.frombuffer(embedding, np.float32)[None], fused[search_id])[0]
    }


def _probe_facts(
    store: FaceStore,
    screen: optout.OptOutScreen,
    records: list[CaseRecord],
    listed: bool,
    readable: Callable[[list[str]], bool],
) -> tuple[set[int], dict[tuple[str, str], tuple[ProbeSearch, ...]]]:
    """The ids of the records whose probe face is withheld, and the readable searches of each
    (probe photo, case) among the records, by face then id."""
    wanted = {r.id for r in records}
    cases = {(r.probe_sha256, r.case_id) for r in records}
    query = select(
        CaseSearch.id,
        CaseSearch.probe_sha256,
        CaseSearch.case_id,
        CaseSearch.probe_face,
        CaseSearch.collections,
        CaseSearch.probe_embedding,
        CaseSearch.model_id,
    ).where(CaseSearch.probe_sha256.in_(sorted({sha for sha, _ in cases})))
    withheld: set[int] = set()
    siblings: dict[tuple[str, str], list[ProbeSearch]] = defaultdict(list)
    with store.catalog.session() as session:
        for search_id, sha, case_id, face, collections, embedding, model_id in session.execute(query):
            if (sha, case_id) in cases and (search_id in wanted or readable(list(collections))):
                siblings[(sha, case_id)].append(ProbeSearch(search_id, face))
            if listed and search_id in wanted and embedding:
                if screen.match(np.frombuffer(embedding, np.float32)[None], model_id)[0]:
                    withheld.add(search_id)
    ordered = {key: tuple(sorted(found, key=lambda s: (s.face, s.search_id))) for key, found in siblings.items()}
    return withheld, ordered
