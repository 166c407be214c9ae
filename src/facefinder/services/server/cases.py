"""Case-bound search: every search the service runs names a case, a purpose and a category, is kept
as a record (who, when, on what, with which parameters, what came back), and its candidates are
*leads* that a second person must confirm.

* A probe photo is analysed first (``analyze_probe``): the faces in it, held in memory for a short
  while under a random id, so that the user can pick one or several. The photo itself is not stored
  unless the probe retention setting says so (default 0 days: only its sha256 and the searched face's
  thumbnail are kept).
* ``search`` runs one face of a probe (``search_faces``: several, one search each; ``same_person``:
  with more faces of the same person, fused into one search, see services/server/case_search.py)
  against the collections the user may search and records it, in ``case_searches`` / ``case_candidates`` and in
  the audit log (its checked terms and its record: services/server/case_search.py; the categories it
  must name: services/server/case_settings.py). Asked for, it also returns the *near misses*: the
  candidates below the threshold down to the weak band, shown as such and never leads.
* Two-person rule: a candidate is *proposed* as a lead by one user and *confirmed* by another, each
  with a note; the proposer can never confirm their own proposal; anyone who may act on it can close
  it as *not a match*, with a note (services/server/leads.py).
* Erasure reaches the records (services/privacy/case_records.py): a candidate whose face was erased
  shows a placeholder saying when, and so does the probe of a search whose probe face was a person
  later erased. A face whose person opted out, still held while the erasure is reviewed, is
  *withheld*: not shown, not offered as a lead, and said so (services/server/record_state.py).

Who sees what (deny by default): admins everything; investigators the searches whose collections
are all granted to them (their own and their colleagues', so that a second person can confirm);
auditors the records without any face image. What a result shows, and how each view is audited:
services/server/case_views.py.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from sqlalchemy import select, update

from facefinder.errors import CatalogError, FieldError, NotFound
from facefinder.services.audit import AuditLog, OncePer
from facefinder.services.fusion import any_opted_out, fuse
from facefinder.services.search import Searcher
from facefinder.services.server import record_state
from facefinder.services.server.accounts import AccessDenied, Accounts, Principal
from facefinder.services.server.case_search import (
    SearchRun,
    SearchTerms,
    check_faces,
    check_same_person,
    near_misses_of,
)
from facefinder.services.server.case_settings import CaseSettings, save_settings, setting_changes
from facefinder.services.server.case_views import CaseViews
from facefinder.services.server.leads import LeadSteps
from facefinder.services.server.probes import Probe, ProbeCache, ProbeFaceData
from facefinder.services.server.records import CaseRecord, Lead
from facefinder.services.video import uploaded_tracks
from facefinder.storage.base import utcnow
from facefinder.storage.cases import CaseSearch
from facefinder.storage.store import FaceStore
from facefinder.vision.image import DEFAULT_MAX_PIXELS, decode_photo, encode_jpeg
from facefinder.vision.video import is_video_name

if TYPE_CHECKING:
    from facefinder.vision.pipeline import FacePipeline

# Catalog ids are 32-bit integers in PostgreSQL (and SQLite refuses ints past 64 bits): a larger id
# names nothing, and asking the database for it would be an error rather than "not found".
MAX_ID = 2_147_483_647


class Cases(CaseViews, LeadSteps):
    """Case-bound searches, their records and leads (see the module docstring), as CaseRecord and Lead values."""

    def __init__(
        self,
        store: FaceStore,
        pipeline_source: Callable[[], FacePipeline],
        accounts: Accounts,
        audit: AuditLog,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        probes: ProbeCache | None = None,
        view_window: float = 600.0,
        fenced_sources: Sequence[Path] = (),
    ) -> None:
        """``pipeline_source`` is a callable returning the loaded FacePipeline (models load on first use);
        ``view_window``: seconds in which a repeated view of the same thing is logged once;
        ``fenced_sources``: folders users can write to (import roots, uploads), whose photos are shown
        only while they still resolve inside them (a link swapped in after ingest is refused)."""
        self.fenced_sources = list(fenced_sources)
        self.store, self.accounts, self.audit = store, accounts, audit
        self._pipeline_source = pipeline_source
        self.max_pixels = max_pixels
        self.probes = probes or ProbeCache()
        self.views = OncePer(view_window)
        self.catalog = store.catalog

    @property
    def pipeline(self) -> FacePipeline:
        return self._pipeline_source()

    # ----- settings ----------------------------------------------------------------------------
    def settings(self) -> CaseSettings:
        return CaseSettings.load(self.catalog)

    def update_settings(
        self, admin: Principal, categories: list[str] | None = None, probe_retention_days: int | None = None
    ) -> CaseSettings:
        admin.require("admin")
        changes = setting_changes(categories, probe_retention_days)
        save_settings(self.catalog, changes)
        if changes:
            self.audit.record(admin.username, "settings.update", **{k: v for k, v in changes.items()})
        return self.settings()

    # ----- probes -----------------------------------------------------------------------------
    def analyze_probe(self, principal: Principal, data: bytes, filename: str = "probe") -> Probe:
        """Every face in an uploaded probe photo, held in memory for the user to pick one.

        Decoded within the same budget as an ingest (``decode_photo``): a pixel bomb under the pixel
        cap costs a fraction of a second, and boxes, width and height are in the photo's own pixels.
        A photo over the budget is an ImageError ("too-large"), which the API answers with a 413.
        """
        principal.require("admin", "investigator")
        if not self.accounts.allowed_collections(principal):
            raise AccessDenied(f"{principal.username} has no collection granted to search")
        if is_video_name(filename or ""):  # each face track's best face, with when it was seen
            width, height, seen = uploaded_tracks(data, filename, self.pipeline)
            kept = None  # a video probe is never kept, whatever the retention
        else:
            photo = decode_photo(data, filename or "probe", self.max_pixels)
            width, height = photo.width, photo.height
            seen = [(None, f) for f in self.pipeline.analyze_decoded([photo])[0]]
            kept = data if self.settings().probe_retention_days > 0 else None
        probe = Probe(
            id=secrets.token_urlsafe(16),
            owner_id=principal.id,
            sha256=hashlib.sha256(data).hexdigest(),
            width=width,
            height=height,
            faces=[
                ProbeFaceData(
                    [round(float(v), 2) for v in f.box],
                    round(f.quality.score, 4),
                    np.asarray(f.embedding, dtype=np.float32),
                    encode_jpeg(f.aligned),
                    when,
                )
                for when, f in seen
            ],
            photo=kept,
        )
        self.probes.put(probe)
        return probe

    # ----- search ------------------------------------------------------------------------------
    def search(
        self,
        principal: Principal,
        probe_id: str,
        face: int,
        case_id: str,
        purpose: str,
        category: str,
        collections: list[str] | None = None,
        top_k: int = 10,
        threshold: float | None = None,
        faces: list[int] | None = None,
        near_misses: bool = False,
        same_person: list[tuple[str, int]] | None = None,
    ) -> CaseRecord:
        """Search one face of a probe (or, with ``faces``, several: one search each, see search_faces;
        with ``same_person``, (probe id, face) of more faces of its person: one fused search) and keep
        the search as a record and an audit entry; returns the (first) search's record."""
        if same_person and faces is not None:
            raise FieldError("same_person", "a fused search searches one probe face (`face`), not several `faces`")
        chosen = [face] if faces is None else faces
        terms = (case_id, purpose, category, collections, top_k, threshold, near_misses)
        return self.search_faces(principal, probe_id, chosen, *terms, same_person=same_person)[0]

    def search_faces(
        self,
        principal: Principal,
        probe_id: str,
        faces: list[int],
        case_id: str,
        purpose: str,
        category: str,
        collections: list[str] | None = None,
        top_k: int = 10,
        threshold: float | None = None,
        near_misses: bool = False,
        same_person: list[tuple[str, int]] | None = None,
    ) -> list[CaseRecord]:
        """Search several faces of one probe for a case: one search record and one audit entry per face,
        written together, in the order asked. Everything asked is checked before anything runs: a
        search without a case, purpose and category, with no collection, or on a collection the user
        may not search, never runs. ``near_misses``: also return the candidates below the threshold,
        down to the weak band, as near misses (shown, never leads). ``same_person``: see search."""
        principal.require("admin", "investigator")
        settings = self.settings()
        terms = SearchTerms.checked(
            case_id, purpose, category, top_k, threshold, settings.categories, near_misses=near_misses
        )
        names = self._searchable(principal, collections)
        probe = self.probes.get(principal, probe_id)
        faces = check_faces(probe, faces)
        fused = check_same_person(lambda other: self.probes.get(principal, other), probe, faces, same_person)
        runs = self._runs(terms, probe, faces, names, fused)
        self.purge_expired_probes()
        search_ids = self._record(principal, runs, settings.probe_retention_days)
        for run, search_id in zip(runs, search_ids):
            self.audit.record(principal.username, "search", terms.case_id, **run.audit_details(search_id))
        return [self.get(principal, search_id) for search_id in search_ids]

    def _runs(
        self,
        terms: SearchTerms,
        probe: Probe,
        faces: list[int],
        collections: list[str],
        fused: tuple[tuple[Probe, int], ...] = (),
    ) -> list[SearchRun]:
        """Search the chosen probe faces in those collections, at the asked threshold or the calibrated
        one; with near misses asked, search again down to the weak band for those below it. ``fused``:
        the other faces of the person of ``faces[0]``, searched with it as one fused template (scores
        scaled to the mean of the cosines, services/fusion.py); nothing is found if any is opted out."""
        searcher = Searcher(self.store, self.pipeline)
        try:
            ids = searcher.collection_ids(collections)
        except CatalogError as exc:
            raise FieldError("collections", str(exc)) from None
        threshold = searcher.default_threshold(ids) if terms.threshold is None else float(terms.threshold)
        embeddings, scale = np.stack([probe.faces[face].embedding for face in faces]), 1.0
        model_id = self.pipeline.model_id
        if fused:
            embeddings = np.stack([embeddings[0], *(other.faces[face].embedding for other, face in fused)])
            if any_opted_out(self.catalog, embeddings, model_id):
                return [SearchRun(terms, probe, faces[0], collections, threshold, [], model_id, same_person=fused)]
            embeddings, scale = fuse(embeddings)
        found = searcher.search_embeddings(embeddings, ids, terms.top_k, threshold, scale)
        floor = searcher.calibration.near_miss_floor(threshold)
        wider = searcher.search_embeddings(embeddings, ids, terms.top_k, floor, scale) if terms.near_misses else found
        return [
            SearchRun(
                terms, probe, face, collections, threshold, leads, model_id, near_misses_of(leads, more, terms), fused
            )
            for face, leads, more in zip(faces, found, wider)
        ]

    def _record(self, principal: Principal, runs: list[SearchRun], retention_days: int) -> list[int]:
        """Write the searches with their candidates in one transaction; returns their ids."""
        with self.catalog.session() as session, session.begin():
            records = [run.row(principal, retention_days) for run in runs]
            session.add_all(records)
            session.flush()
            return [record.id for record in records]

    def checked_terms(
        self,
        principal: Principal,
        case_id: str,
        purpose: str,
        category: str,
        collections: list[str] | None,
        top_k: int,
        threshold: float | None,
    ) -> tuple[SearchTerms, list[str]]:
        """The checked terms and collections of a search that runs elsewhere (search by person,
        services/people/search.py): the same rules as a probe face's search."""
        principal.require("admin", "investigator")
        terms = SearchTerms.checked(case_id, purpose, category, top_k, threshold, self.settings().categories)
        return terms, self._searchable(principal, collections)

    def _searchable(self, principal: Principal, collections: list[str] | None) -> list[str]:
        """The collections to search: those named (each must exist and be granted), or every granted
        one when none are named; an empty list is a mistake (every box unticked), never "all"."""
        allowed = self.accounts.allowed_collections(principal)
        if collections is None:
            if not allowed:
                raise AccessDenied(f"{principal.username} has no collection granted to search")
            return allowed
        if not collections:
            raise FieldError(
                "collections",
                "pick at least one collection to search (leave the field out to search every one granted)",
            )
        names = list(dict.fromkeys(collections))
        existing = {c.name for c in self.store.collections()}
        for name in names:
            if name not in existing:
                raise FieldError("collections", f"collection {name!r} does not exist")
        self.accounts.require_collections(principal, names)
        return names

    # ----- records -----------------------------------------------------------------------------
    def searches(
        self,
        principal: Principal,
        case_id: str | None = None,
        username: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[CaseRecord]:
        """Search records this principal may read, newest first."""
        principal.require("admin", "investigator", "auditor")
        query = select(CaseSearch).order_by(CaseSearch.id.desc())
        if case_id:
            query = query.where(CaseSearch.case_id == case_id)
        if username:
            query = query.where(CaseSearch.username == username)
        readable = self._reader(principal)
        with self.catalog.session() as session:
            rows = []
            skipped = 0
            for record in session.scalars(query):
                if not readable(record.collections):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                rows.append(CaseRecord.of(record))
                if len(rows) >= limit:
                    break
        return record_state.current(self.store, rows, readable)

    def get(self, principal: Principal, search_id: int, audit: bool = False) -> CaseRecord:
        """One search record as it is now (withheld faces, the other searches of its probe photo)."""
        principal.require("admin", "investigator", "auditor")
        with self.catalog.session() as session:
            row = session.get(CaseSearch, search_id) if 1 <= search_id <= MAX_ID else None
            if row is None:
                raise NotFound(f"search {search_id} does not exist")
            record = CaseRecord.of(row)
        readable = self._reader(principal)
        if not readable(record.collections):
            raise AccessDenied(
                f"{principal.username} may not read search {search_id}: it covers collections not granted to them"
            )
        return record_state.current(self.store, [record], readable)[0]

    def can_see_faces(self, principal: Principal) -> bool:
        return principal.role in ("admin", "investigator")

    def _reader(self, principal: Principal) -> Callable[[list[str]], bool]:
        """Whether ``principal`` may read a search over the given collections: admins and auditors
        every search, investigators those whose collections are all granted to them."""
        if principal.role in ("admin", "auditor"):
            return lambda collections: True
        allowed = set(self.accounts.allowed_collections(principal))
        return lambda collections: principal.role == "investigator" and set(collections) <= allowed

    def _with_faces(self, principal: Principal, search_id: int) -> CaseRecord:
        principal.require("admin", "investigator")
        return self.get(principal, search_id)

    def candidate(
        self, principal: Principal, search_id: int, rank: int, record: CaseRecord | None = None
    ) -> tuple[CaseRecord, Lead]:
        """A candidate of a search and its record (``record``: already read for this principal)."""
        record = record or self.get(principal, search_id)
        for candidate in record.candidates:
            if candidate.rank == rank:
                return record, candidate
        raise NotFound(f"search {search_id} has no candidate {rank}")

    # ----- retention ----------------------------------------------------------------------------
    def purge_expired_probes(self) -> int:
        """Drop kept probe photos whose retention has run out; returns how many."""
        with self.catalog.session() as session, session.begin():
            result = session.execute(
                update(CaseSearch)
                .where(CaseSearch.probe_keep_until.is_not(None), CaseSearch.probe_keep_until < utcnow())
                .values(probe_photo=None, probe_keep_until=None)
            )
            count = result.rowcount or 0
        if count:
            self.audit.record("system", "probe.purge", count=count)
        return count
