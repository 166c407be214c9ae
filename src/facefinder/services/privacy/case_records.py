"""Erasure reaching the case records: after faces or a person are erased, the case searches stop
showing them.

A candidate whose face was erased is stamped (``mark_erased_candidates``: its thumbnail came from the
faces table, so it is gone with the face; the stamp lets the record say when), and the probe face of
every case search whose probe was the erased person is emptied (``erase_probes_of``), and so is any
more probe face of a fused search (``same_person``) that was the person. The records
keep the case, the sha256 and the scores, never the face.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select, update

from facefinder.errors import ImageError
from facefinder.storage.cases import CaseCandidate, CaseSearch, SamePersonFace
from facefinder.storage.catalog import Catalog, FaceRecord
from facefinder.vision.image import decode_image, decode_photo


@dataclass
class ProbeErasure:
    """Which case searches an erasure emptied: their probe face, or only a kept probe photo."""

    # a probe face (thumbnail, template, kept photo), or one more probe face of a fused search, emptied
    searches: list[int] = field(default_factory=list)
    photos: list[int] = field(default_factory=list)  # only the kept probe photo dropped: the person was in it


def mark_erased_candidates(catalog: Catalog, at: datetime) -> int:
    """Stamp ``erased_at`` on every candidate whose face the catalog no longer holds; returns how many.

    Run after any erasure, whatever its route: face ids are never reused, so a face that is gone was
    erased. The thumbnail always came from the faces table, so it is gone with the face; the stamp is
    what lets the record say when."""
    gone = ~select(FaceRecord.id).where(FaceRecord.id == CaseCandidate.face_id).exists()
    with catalog.session() as session, session.begin():
        result = session.execute(
            update(CaseCandidate).where(CaseCandidate.erased_at.is_(None), gone).values(erased_at=at)
        )
        return result.rowcount or 0


def erase_probes_of(
    catalog: Catalog,
    templates: dict[str, np.ndarray],
    threshold: float,
    at: datetime,
    pipeline: Callable[[], Any] | None = None,
) -> ProbeErasure:
    """A person was erased: empty the probe face of every case search whose probe was that person.

    Whose probe it was is decided the way the erasure decided which held faces were the person's:
    the searched face's template (``probe_embedding``, kept with each search for this purpose; it
    says no more than the thumbnail kept beside it, from which it can be recomputed) scores at or
    above ``threshold`` (the privacy threshold) against any of ``templates`` (model id -> rows of
    unit vectors: the erased faces' own templates, the subject's face, an opt-out's templates).
    Matching by candidates instead (a search that returned an erased face at a strict score) would
    miss every search whose probe was the person but which did not return that face, and would take
    a lookalike's probe for the person's. Searches recorded before templates were kept get theirs
    from the kept thumbnail, the aligned crop the recognizer reads, once (needs ``pipeline``).

    The thumbnail is replaced by an empty value (the column predates erasure and is NOT NULL in old
    catalogs), the template and any kept probe photo are cleared, and ``probe_erased_at`` is set: the
    record and the audit log keep the case, the sha256 and the scores, never the face. A kept probe
    photo in which any face (not only the searched one) is the person's is dropped too. The other probe
    faces of fused searches (always kept with their template) are matched and emptied the same way;
    the searches they belong to are listed in ``searches`` too.
    """
    result = ProbeErasure()
    if not templates:
        return result
    if pipeline is not None:
        _backfill_probe_templates(catalog, pipeline, set(templates))
    result.searches = _searches_probing(catalog, templates, threshold)
    if pipeline is not None:
        result.photos = _kept_photos_showing(catalog, pipeline, templates, threshold, set(result.searches))
    extra = _same_person_matching(catalog, templates, threshold)
    _clear_probes(catalog, result, at, extra)
    result.searches = sorted(set(result.searches) | {search_id for _, search_id in extra})
    return result


def _same_person_matching(
    catalog: Catalog, templates: dict[str, np.ndarray], threshold: float
) -> list[tuple[int, int]]:
    """(row id, search id) of every extra probe face of a fused search, not yet emptied, whose template
    matches ``templates``."""
    query = (
        select(SamePersonFace.id, SamePersonFace.search_id, CaseSearch.model_id, SamePersonFace.probe_embedding)
        .join(CaseSearch, CaseSearch.id == SamePersonFace.search_id)
        .where(SamePersonFace.erased_at.is_(None), SamePersonFace.probe_embedding.is_not(None))
        .where(CaseSearch.model_id.in_(list(templates)))
    )
    with catalog.session() as session:
        rows = session.execute(query).all()
    return [
        (row.id, row.search_id)
        for row in rows
        if _matches(templates[row.model_id], np.frombuffer(row.probe_embedding, np.float32)[None], threshold)
    ]


def _searches_probing(catalog: Catalog, templates: dict[str, np.ndarray], threshold: float) -> list[int]:
    """Searches not yet emptied whose kept probe template scores at or above ``threshold`` against ``templates``."""
    with catalog.session() as session:
        rows = session.execute(
            select(CaseSearch.id, CaseSearch.model_id, CaseSearch.probe_embedding).where(
                CaseSearch.probe_erased_at.is_(None),
                CaseSearch.probe_embedding.is_not(None),
                CaseSearch.model_id.in_(list(templates)),
            )
        ).all()
    found = []
    for row in rows:
        probe = np.frombuffer(row.probe_embedding, dtype=np.float32)
        if _matches(templates[row.model_id], probe[None], threshold):
            found.append(row.id)
    return found


def _clear_probes(catalog: Catalog, result: ProbeErasure, at: datetime, extra: list[tuple[int, int]]) -> None:
    """Empty the probe face (thumbnail, template, kept photo) of ``result.searches``, stamped ``at``;
    drop only the kept probe photo of ``result.photos``; empty the extra probe faces ``extra`` (row id,
    search id) of fused searches. One transaction: a failure leaves none of it half done."""
    with catalog.session() as session, session.begin():
        if extra:
            session.execute(
                update(SamePersonFace)
                .where(SamePersonFace.id.in_([row_id for row_id, _ in extra]))
                .values(probe_thumbnail=b"", probe_embedding=None, erased_at=at)
            )
        if result.searches:
            session.execute(
                update(CaseSearch)
                .where(CaseSearch.id.in_(result.searches))
                .values(
                    probe_thumbnail=b"",
                    probe_embedding=None,
                    probe_photo=None,
                    probe_keep_until=None,
                    probe_erased_at=at,
                )
            )
        if result.photos:
            session.execute(
                update(CaseSearch)
                .where(CaseSearch.id.in_(result.photos))
                .values(probe_photo=None, probe_keep_until=None)
            )


def _matches(templates: np.ndarray, faces: np.ndarray, threshold: float) -> bool:
    if templates.size == 0 or faces.size == 0 or templates.shape[1] != faces.shape[1]:
        return False
    return bool((np.atleast_2d(faces) @ np.atleast_2d(templates).T).max() >= threshold)


def _backfill_probe_templates(catalog: Catalog, pipeline: Callable[[], Any], models: set[str]) -> None:
    """Searches recorded before probe templates were kept: compute them from the kept thumbnails."""
    with catalog.session() as session:
        missing = session.execute(
            select(CaseSearch.id, CaseSearch.model_id, CaseSearch.probe_thumbnail).where(
                CaseSearch.probe_erased_at.is_(None),
                CaseSearch.probe_embedding.is_(None),
                CaseSearch.model_id.in_(list(models)),
            )
        ).all()
    if not missing:
        return
    loaded = pipeline()
    todo = [r for r in missing if r.model_id == loaded.model_id and r.probe_thumbnail]
    for start in range(0, len(todo), 256):
        chunk = todo[start : start + 256]
        # our own 112x112 JPEGs (the aligned crop): decoded as they are, the recognizer's input size
        crops = [decode_image(r.probe_thumbnail, f"search {r.id} probe") for r in chunk]
        vectors = loaded.recognizer.embed(crops)
        with catalog.session() as session, session.begin():
            for r, vector in zip(chunk, vectors):
                session.execute(
                    update(CaseSearch)
                    .where(CaseSearch.id == r.id)
                    .values(probe_embedding=np.asarray(vector, dtype=np.float32).tobytes())
                )


def _kept_photos_showing(
    catalog: Catalog, pipeline: Callable[[], Any], templates: dict[str, np.ndarray], threshold: float, skip: set[int]
) -> list[int]:
    """Searches (other than ``skip``) whose kept probe photo shows the person in any of its faces."""
    with catalog.session() as session:
        kept = session.execute(
            select(CaseSearch.id, CaseSearch.model_id).where(
                CaseSearch.probe_photo.is_not(None), CaseSearch.model_id.in_(list(templates))
            )
        ).all()
    kept = [r for r in kept if r.id not in skip]
    if not kept:
        return []
    loaded = pipeline()
    found = []
    for row in kept:
        if row.model_id != loaded.model_id:
            continue
        with catalog.session() as session:
            photo = session.scalar(select(CaseSearch.probe_photo).where(CaseSearch.id == row.id))
        try:
            faces = loaded.analyze_decoded([decode_photo(photo, f"search {row.id} probe photo")])[0]
        except ImageError:
            continue
        if faces and _matches(templates[row.model_id], np.stack([f.embedding for f in faces]), threshold):
            found.append(row.id)
    return found
