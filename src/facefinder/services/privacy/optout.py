"""Opt-out by face: the list of people who asked to be left out, and the screen that enforces it.

A person (through an admin, or through the public opt-out form when it is switched on) gives a photo
of themselves. Their face template (the embedding) goes on the list; the photo itself is never
stored. From then on:

* ingest drops every face that matches a template before it is written (``OptOutScreen.screen_batch``,
  once per batch of photos);
* search returns nothing for a probe face that matches a template, and drops every candidate that
  matches one (``OptOutScreen.filter_hits``);
* faces already held that match are listed for an admin to review, then erased (services/privacy/service.py).

"Matches" means a cosine score at or above the strict privacy threshold
(``Calibration.privacy_threshold``: the score at a false match rate of 2.5e-6 per comparison).

The screen is one small FAISS flat index per model over all templates, cached per catalog and
reloaded only when the list changes (a version number in the settings table, changed in the same
transaction as the templates). Search reads that version on every call; ingest at most once a second
(so an opt-out added by another process reaches a running ingest within a second; one added through
the same catalog object applies at once). The exact search runs on one thread: the ingest's worker
processes hold the cores, and OpenMP threads waiting for one another there cost milliseconds.
benchmarks/optout_cost.py measures it.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import delete, func, select

from facefinder.errors import FaceFinderError
from facefinder.services.calibration import default_calibration
from facefinder.storage.catalog import Catalog
from facefinder.storage.exact import ExactIndex
from facefinder.storage.privacy import OptOut, OptOutTemplate

VERSION_KEY = "optout_version"
PUBLIC_FORM_KEY = "privacy.public_optout"  # "on" | "off" (default off)
CHANNELS = ("admin", "public")


@dataclass
class OptOutInfo:
    """An opt-out as listed: its reference, how it came in, and how many face templates it holds."""

    id: int
    reference: str
    channel: str
    created_at: datetime
    created_by: str
    templates: int
    erased_at: datetime | None
    erased_by: str | None


class OptOutScreen:
    """The opt-out templates as one FAISS flat index per model, kept in step with the catalog."""

    def __init__(self, catalog: Catalog, threshold: float | None = None) -> None:
        self.catalog = catalog
        self.threshold = default_calibration().privacy_threshold if threshold is None else threshold
        self._version: str | None = None
        self._checked = 0.0  # time.monotonic() of the last version read
        self._indexes: dict[str, tuple[ExactIndex, np.ndarray]] = {}  # model id -> (index, opt-out id per row)
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """The list changed (through this catalog object): reload before the next check."""
        self._version = None

    def refresh(self, max_age: float = 0.0) -> None:
        """Reload the templates if the list changed since we last looked (one settings read), unless we
        looked less than ``max_age`` seconds ago."""
        if self._version is not None and time.monotonic() - self._checked < max_age:
            return
        version = self.catalog.get_setting(VERSION_KEY, "0")
        self._checked = time.monotonic()
        if version == self._version:
            return
        with self._lock:
            with self.catalog.session() as session:
                rows = session.execute(
                    select(OptOutTemplate.optout_id, OptOutTemplate.model_id, OptOutTemplate.embedding)
                ).all()
            grouped: dict[str, list] = {}
            for row in rows:
                grouped.setdefault(row.model_id, []).append(row)
            indexes = {}
            for model_id, group in grouped.items():
                vectors = np.stack([np.frombuffer(r.embedding, np.float32) for r in group])
                indexes[model_id] = (ExactIndex(vectors), np.array([r.optout_id for r in group], dtype=np.int64))
            self._indexes, self._version = indexes, version

    def size(self, model_id: str | None = None) -> int:
        self.refresh()
        return self._size(model_id)

    def _size(self, model_id: str | None) -> int:
        if model_id is None:
            return sum(len(index) for index, _ in self._indexes.values())
        entry = self._indexes.get(model_id)
        return len(entry[0]) if entry else 0

    def match(self, embeddings: np.ndarray, model_id: str) -> np.ndarray:
        """Per embedding: the id of the opt-out it matches (the best one), or 0 for none."""
        self.refresh()
        return self._match(embeddings, model_id)

    def _match(self, embeddings: np.ndarray, model_id: str) -> np.ndarray:
        entry = self._indexes.get(model_id)
        if entry is None or len(embeddings) == 0 or entry[0].dim != np.shape(embeddings)[1]:
            return np.zeros(len(embeddings), dtype=np.int64)
        index, owners = entry
        scores, rows = index.best(embeddings)
        return np.where(scores >= self.threshold, owners[np.maximum(rows, 0)], 0)

    def screen_batch(self, results: list, model_id: str | None) -> int:
        """Ingest: drop the faces on the list from each photo's analysis result, in place.

        ``results`` are ingest's per-photo results (dicts with "faces", or failures, which are left
        alone); a photo that lost faces gets ``"opted_out": n``. Returns how many faces were dropped.
        """
        if not model_id:
            return 0
        faces = [
            (i, j, face)
            for i, result in enumerate(results)
            if isinstance(result, dict)
            for j, face in enumerate(result["faces"])
        ]
        if not faces:
            return 0
        self.refresh(max_age=1.0)
        if not self._size(model_id):
            return 0
        hits = self._match(np.stack([face.embedding for _, _, face in faces]), model_id)
        for (i, j, _), hit in reversed(list(zip(faces, hits))):
            if hit:
                del results[i]["faces"][j]
                results[i]["opted_out"] = results[i].get("opted_out", 0) + 1
        return int(np.count_nonzero(hits))

    def filter_hits(
        self, probes: np.ndarray, hits: list[list[tuple[int, float]]], rows: dict, threshold: float, model_id: str
    ) -> list[list[tuple[int, float]]]:
        """Search: no candidates for a probe face on the list, and no candidate that is on it.

        ``hits`` are (face id, score) per probe embedding; ``rows`` the catalog rows of those faces
        (FaceStore.faces). Only candidates that would be served (score >= threshold) are checked.
        """
        if not self.size(model_id):
            return hits
        probe_listed = self._match(probes, model_id) > 0
        pending = [
            (fid, rows[fid][0].embedding)
            for r, row in enumerate(hits)
            if not probe_listed[r]
            for fid, score in row
            if score >= threshold and fid in rows
        ]
        listed: set[int] = set()
        if pending:
            vectors = np.stack([np.frombuffer(embedding, np.float32) for _, embedding in pending])
            listed = {fid for (fid, _), hit in zip(pending, self._match(vectors, model_id)) if hit}
        return [
            [] if probe_listed[r] else [(fid, s) for fid, s in row if fid not in listed] for r, row in enumerate(hits)
        ]


_screens: "weakref.WeakKeyDictionary[Catalog, OptOutScreen]" = weakref.WeakKeyDictionary()
_screens_lock = threading.Lock()


def _changed(catalog: Catalog) -> None:
    with _screens_lock:
        screen = _screens.get(catalog)
    if screen is not None:
        screen.invalidate()


def screen_for(catalog: Catalog) -> OptOutScreen:
    """The one screen of this catalog (cached: templates load once, then only when the list changes)."""
    with _screens_lock:
        screen = _screens.get(catalog)
        if screen is None:
            screen = _screens[catalog] = OptOutScreen(catalog)
        return screen


# ----- the list ----------------------------------------------------------------------------
def add(
    catalog: Catalog, templates: list[tuple[np.ndarray, float]], model_id: str, reference: str, channel: str, actor: str
) -> int:
    """Put one person's templates (embedding, quality) on the list; returns the opt-out id."""
    if channel not in CHANNELS:
        raise FaceFinderError(f"channel: one of {', '.join(CHANNELS)}, not {channel!r}")
    if not templates:
        raise FaceFinderError("an opt-out needs at least one face")
    with catalog.session() as session, session.begin():
        optout_id = _insert(session, templates, model_id, reference or "", channel, actor)
        catalog.set_setting(session, VERSION_KEY, uuid.uuid4().hex)
    _changed(catalog)
    return optout_id


def add_many(
    catalog: Catalog, people: list[list[np.ndarray]], model_id: str, reference: str, channel: str, actor: str
) -> list[int]:
    """Bulk form of ``add`` (benchmarks and imports): one opt-out per person, one transaction."""
    with catalog.session() as session, session.begin():
        ids = [
            _insert(session, [(e, 1.0) for e in embeddings], model_id, reference, channel, actor)
            for embeddings in people
        ]
        catalog.set_setting(session, VERSION_KEY, uuid.uuid4().hex)
    _changed(catalog)
    return ids


def _insert(
    session, templates: list[tuple[np.ndarray, float]], model_id: str, reference: str, channel: str, actor: str
) -> int:
    """One opt-out row with its templates (embedding, quality), in the caller's transaction; its id."""
    row = OptOut(reference=reference, channel=channel, created_by=actor)
    session.add(row)
    session.flush()
    session.add_all(_template_rows(row.id, templates, model_id))
    return row.id


def _template_rows(optout_id: int, templates: list[tuple[np.ndarray, float]], model_id: str) -> list[OptOutTemplate]:
    return [
        OptOutTemplate(
            optout_id=optout_id,
            model_id=model_id,
            quality=float(quality),
            embedding=np.asarray(embedding, dtype=np.float32).tobytes(),
        )
        for embedding, quality in templates
    ]


def add_templates(catalog: Catalog, optout_id: int, templates: list[tuple[np.ndarray, float]], model_id: str) -> int:
    """More templates (embedding, quality) for an opt-out: faces of the person a reviewer confirmed,
    so that later photos of them are screened by those too. Returns how many were added."""
    if not templates:
        return 0
    with catalog.session() as session, session.begin():
        if session.get(OptOut, optout_id) is None:
            raise FaceFinderError(f"opt-out {optout_id} does not exist")
        session.add_all(_template_rows(optout_id, templates, model_id))
        catalog.set_setting(session, VERSION_KEY, uuid.uuid4().hex)
    _changed(catalog)
    return len(templates)


def templates(catalog: Catalog, optout_id: int) -> dict[str, np.ndarray]:
    """model id -> the opt-out's template embeddings (rows)."""
    with catalog.session() as session:
        if session.get(OptOut, optout_id) is None:
            raise FaceFinderError(f"opt-out {optout_id} does not exist")
        rows = session.execute(
            select(OptOutTemplate.model_id, OptOutTemplate.embedding).where(OptOutTemplate.optout_id == optout_id)
        ).all()
    grouped: dict[str, list[np.ndarray]] = {}
    for row in rows:
        grouped.setdefault(row.model_id, []).append(np.frombuffer(row.embedding, np.float32))
    return {model: np.stack(vectors) for model, vectors in grouped.items()}


def listing(catalog: Catalog) -> list[OptOutInfo]:
    with catalog.session() as session:
        counts = dict(
            session.execute(select(OptOutTemplate.optout_id, func.count()).group_by(OptOutTemplate.optout_id)).all()
        )
        return [
            OptOutInfo(
                o.id, o.reference, o.channel, o.created_at, o.created_by, counts.get(o.id, 0), o.erased_at, o.erased_by
            )
            for o in session.scalars(select(OptOut).order_by(OptOut.id))
        ]


def mark_erased(catalog: Catalog, optout_id: int, actor: str, at: datetime) -> None:
    with catalog.session() as session, session.begin():
        row = session.get(OptOut, optout_id)
        if row is not None:
            row.erased_at, row.erased_by = at, actor


def remove(catalog: Catalog, optout_id: int) -> None:
    """Take an opt-out off the list (its templates are erased with it)."""
    with catalog.session() as session, session.begin():
        if session.get(OptOut, optout_id) is None:
            raise FaceFinderError(f"opt-out {optout_id} does not exist")
        session.execute(delete(OptOutTemplate).where(OptOutTemplate.optout_id == optout_id))
        session.execute(delete(OptOut).where(OptOut.id == optout_id))
        catalog.set_setting(session, VERSION_KEY, uuid.uuid4().hex)
    _changed(catalog)


def public_form_enabled(catalog: Catalog) -> bool:
    return catalog.get_setting(PUBLIC_FORM_KEY, "off") == "on"


def set_public_form(catalog: Catalog, enabled: bool) -> None:
    with catalog.session() as session, session.begin():
        catalog.set_setting(session, PUBLIC_FORM_KEY, "on" if enabled else "off")
