"""Case-bound search: every search the service runs names a case, a purpose and a category, is kept
as a record (who, when, on what, with which parameters, what came back), and its candidates are
*leads* that a second person must confirm.

* A probe photo is analysed first (``analyze_probe``): the faces in it, held in memory for a short
  while under a random id, so that the user can pick one. The photo itself is not stored unless the
  probe retention setting says so (default 0 days: only its sha256 and the searched face's
  thumbnail are kept).
* ``search`` runs one face of a probe against the collections the user may search and records it,
  in ``case_searches`` / ``case_candidates`` and in the audit log (its checked terms and its record:
  services/server/case_search.py; the categories it must name: services/server/case_settings.py).
* Two-person rule: a candidate is *proposed* as a lead by one user and *confirmed* by another, each
  with a note; the proposer can never confirm their own proposal (services/server/leads.py).
* Erasure reaches the records (services/privacy/case_records.py): a candidate whose face was erased shows a placeholder saying when, and so
  does the probe of a search whose probe face was a person later erased.

Who sees what (deny by default): admins everything; investigators the searches whose collections
are all granted to them (their own and their colleagues', so that a second person can confirm);
auditors the records without any face image.

Views are audited without burying the log in repeats (``OncePer``, services/audit.py): opening a
result writes one ``result.view`` per user, search, rank and view (``details``: its provenance;
``photo``: its source photo) in a ``view_window`` (10 minutes); the face thumbnails of a search (its
probe face and its candidates) write one ``thumbnail.view`` per user and search in that window.
"""

from __future__ import annotations

import secrets
from datetime import timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from sqlalchemy import select, update

from facefinder.errors import CatalogError, FaceFinderError, FieldError, ImageError, NotFound
from facefinder.services.audit import AuditLog, OncePer
from facefinder.services.privacy import optout
from facefinder.services.search import Searcher
from facefinder.services.server import uploads
from facefinder.services.server.accounts import AccessDenied, Accounts, Principal
from facefinder.services.server.case_search import SearchRun, SearchTerms, check_face
from facefinder.services.server.case_settings import CaseSettings, save_settings, setting_changes
from facefinder.services.server.leads import confirm_lead, lead_note, propose_lead
from facefinder.services.server.pictures import SHOWN_WORK_PIXELS, box_in, boxed_jpeg, erased_lines, placeholder_jpeg
from facefinder.services.server.probes import Probe, ProbeCache, ProbeFaceData
from facefinder.services.server.records import CaseRecord, Lead
from facefinder.services.sources import archives
from facefinder.services.sources.folders import read_source
from facefinder.storage.catalog import CaseSearch, utcnow
from facefinder.storage.store import FaceStore
from facefinder.vision.image import (
    DEFAULT_MAX_PIXELS,
    decode_photo,
    encode_jpeg,
)

if TYPE_CHECKING:
    from facefinder.storage.catalog import FaceRecord, ImageRecord
    from facefinder.vision.pipeline import FacePipeline

# Catalog ids are 32-bit integers in PostgreSQL (and SQLite refuses ints past 64 bits): a larger id
# names nothing, and asking the database for it would be an error rather than "not found".
MAX_ID = 2_147_483_647


class Cases:
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
    ) -> None:
        """``pipeline_source`` is a callable returning the loaded FacePipeline (models load on first use);
        ``view_window``: seconds in which a repeated view of the same thing is logged once."""
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
        import hashlib

        principal.require("admin", "investigator")
        if not self.accounts.allowed_collections(principal):
            raise AccessDenied(f"{principal.username} has no collection granted to search")
        photo = decode_photo(data, filename or "probe", self.max_pixels)
        faces = self.pipeline.analyze_decoded([photo])[0]
        probe = Probe(
            id=secrets.token_urlsafe(16),
            owner_id=principal.id,
            sha256=hashlib.sha256(data).hexdigest(),
            width=photo.width,
            height=photo.height,
            faces=[
                ProbeFaceData(
                    [round(float(v), 2) for v in f.box],
                    round(f.quality.score, 4),
                    np.asarray(f.embedding, dtype=np.float32),
                    encode_jpeg(f.aligned),
                )
                for f in faces
            ],
            photo=data if self.settings().probe_retention_days > 0 else None,
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
    ) -> CaseRecord:
        """Search one face of a probe and keep the search as a record and an audit entry. Everything
        asked is checked before anything runs: a search without a case, purpose and category, or on a
        collection the user may not search, never runs."""
        principal.require("admin", "investigator")
        settings = self.settings()
        terms = SearchTerms.checked(case_id, purpose, category, top_k, threshold, settings.categories)
        names = self._searchable(principal, collections)
        probe = self.probes.get(principal, probe_id)
        check_face(probe, face)
        run = self._run(terms, probe, face, names)
        self.purge_expired_probes()
        search_id = self._record(principal, run, settings.probe_retention_days)
        self.audit.record(principal.username, "search", terms.case_id, **run.audit_details(search_id))
        return self.get(principal, search_id, audit=False)

    def _run(self, terms: SearchTerms, probe: Probe, face: int, collections: list[str]) -> SearchRun:
        """Search the chosen probe face in those collections, at the asked threshold or the calibrated one."""
        searcher = Searcher(self.store, self.pipeline)
        try:
            ids = searcher.collection_ids(collections)
        except CatalogError as exc:
            raise FieldError("collections", str(exc)) from None
        threshold = searcher.calibration.threshold if terms.threshold is None else float(terms.threshold)
        embedding = probe.faces[face].embedding[None, :]
        candidates = searcher.search_embeddings(embedding, ids, terms.top_k, threshold)[0]
        return SearchRun(terms, probe, face, collections, threshold, candidates, self.pipeline.model_id)

    def _record(self, principal: Principal, run: SearchRun, retention_days: int) -> int:
        """Write the search with its candidates in one transaction; returns its id."""
        with self.catalog.session() as session, session.begin():
            record = run.row(principal, retention_days)
            session.add(record)
            session.flush()
            return record.id

    def _searchable(self, principal: Principal, collections: list[str] | None) -> list[str]:
        allowed = self.accounts.allowed_collections(principal)
        if not collections:
            if not allowed:
                raise AccessDenied(f"{principal.username} has no collection granted to search")
            return allowed
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
        allowed = set(self.accounts.allowed_collections(principal))
        with self.catalog.session() as session:
            rows = []
            skipped = 0
            for record in session.scalars(query):
                if not self._can_read(principal, record, allowed):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                rows.append(CaseRecord.of(record))
                if len(rows) >= limit:
                    break
            return rows

    def get(self, principal: Principal, search_id: int, audit: bool = False) -> CaseRecord:
        principal.require("admin", "investigator", "auditor")
        with self.catalog.session() as session:
            row = session.get(CaseSearch, search_id) if 1 <= search_id <= MAX_ID else None
            if row is None:
                raise NotFound(f"search {search_id} does not exist")
            record = CaseRecord.of(row)
        if not self._can_read(principal, record, set(self.accounts.allowed_collections(principal))):
            raise AccessDenied(
                f"{principal.username} may not read search {search_id}: it covers collections not granted to them"
            )
        return record

    def can_see_faces(self, principal: Principal) -> bool:
        return principal.role in ("admin", "investigator")

    def _can_read(self, principal: Principal, record: CaseSearch | CaseRecord, allowed: set[str]) -> bool:
        if principal.role in ("admin", "auditor"):
            return True
        return principal.role == "investigator" and set(record.collections) <= allowed

    def _with_faces(self, principal: Principal, search_id: int) -> CaseRecord:
        principal.require("admin", "investigator")
        return self.get(principal, search_id)

    def _log_view(self, principal: Principal, key: tuple, action: str, case_id: str, **details: Any) -> None:
        """Write a view to the audit log, unless the same ``key`` was logged in the view window."""
        key = (principal.username, action, *key)
        if not self.views.claim(key):
            return
        try:
            self.audit.record(principal.username, action, case_id, **details)
        except BaseException:
            self.views.release(key)  # not logged: the next view must try again
            raise

    def candidate(self, principal: Principal, search_id: int, rank: int) -> tuple[CaseRecord, Lead]:
        record = self.get(principal, search_id)
        for candidate in record.candidates:
            if candidate.rank == rank:
                return record, candidate
        raise NotFound(f"search {search_id} has no candidate {rank}")

    def candidate_details(self, principal: Principal, search_id: int, rank: int) -> dict[str, Any]:
        """Where the candidate's photo came from (provenance), for an opened result; audited as a view."""
        self._with_faces(principal, search_id)
        record, candidate = self.candidate(principal, search_id, rank)
        held = self._held(candidate.face_id)
        details: dict[str, Any] = {"available": held is not None}
        if held is not None:
            face, image, _ = held
            from facefinder.storage.store import PROVENANCE_FIELDS

            details.update(
                source=uploads.display_name(image.source, self.store.data_dir),  # never an upload's server path
                width=image.width,
                height=image.height,
                box=face.box,
                quality=face.quality,
                sha256=image.sha256,
                ingested_at=image.ingested_at.replace(tzinfo=timezone.utc).isoformat(timespec="seconds"),
                provenance={k: getattr(image, k) for k in PROVENANCE_FIELDS},
            )
        self._log_view(
            principal,
            (search_id, rank, "details"),
            "result.view",
            record.case_id,
            search_id=search_id,
            rank=rank,
            face_id=candidate.face_id,
            image_id=candidate.image_id,
            view="details",
        )
        return details

    def _held(self, face_id: int) -> tuple[FaceRecord, ImageRecord, str] | None:
        """The catalog rows of a past candidate, or None once it was erased or its person opted out
        (a recorded search keeps the face id and score, but never shows an opted-out face again)."""
        rows = self.store.faces([face_id])
        if face_id not in rows:
            return None
        face = rows[face_id][0]
        embedding = np.frombuffer(face.embedding, dtype=np.float32)[None]
        if optout.screen_for(self.store.catalog).match(embedding, face.model_id)[0]:
            return None
        return rows[face_id]

    def _require_held(self, face_id: int) -> tuple[FaceRecord, ImageRecord, str]:
        held = self._held(face_id)
        if held is None:
            raise NotFound(f"face {face_id} is no longer available (erased, or its person opted out)")
        return held

    def probe_thumbnail(self, principal: Principal, search_id: int) -> bytes:
        """The searched face, or a placeholder saying when it was erased (its person was erased), or
        that it is withheld (its person opted out and the erasure is still to be reviewed), as
        candidates are. Audited as a ``thumbnail.view`` of the search."""
        record = self._with_faces(principal, search_id)
        self._log_thumbnail(principal, record, "probe")
        with self.catalog.session() as session:  # the probe face stays in the catalog: no record carries it
            thumbnail, embedding, erased_at, model_id = session.execute(
                select(
                    CaseSearch.probe_thumbnail,
                    CaseSearch.probe_embedding,
                    CaseSearch.probe_erased_at,
                    CaseSearch.model_id,
                ).where(CaseSearch.id == search_id)
            ).one()
        if erased_at is not None or not thumbnail:
            return placeholder_jpeg(*erased_lines(erased_at))
        if embedding:
            template = np.frombuffer(embedding, dtype=np.float32)[None]
            if optout.screen_for(self.store.catalog).match(template, model_id)[0]:
                return placeholder_jpeg("withheld", "(opted out)")
        return thumbnail

    def candidate_thumbnail(self, principal: Principal, search_id: int, rank: int) -> bytes:
        """The candidate's face from the catalog; once it is erased (or its person opted out), a placeholder.
        Audited as a ``thumbnail.view`` of the search."""
        self._with_faces(principal, search_id)
        record, candidate = self.candidate(principal, search_id, rank)
        self._log_thumbnail(principal, record, rank, candidate.face_id)
        held = self._held(candidate.face_id)
        if held is not None:
            return held[0].thumbnail
        if candidate.erased_at is not None or not self.store.faces([candidate.face_id]):
            return placeholder_jpeg(*erased_lines(candidate.erased_at))
        return placeholder_jpeg("withheld", "(opted out)")

    def candidate_photo(self, principal: Principal, search_id: int, rank: int) -> bytes:
        """The candidate's source photo with its face boxed, as JPEG; audited as a result view."""
        self._with_faces(principal, search_id)
        record, candidate = self.candidate(principal, search_id, rank)
        face, image_row, _ = self._require_held(candidate.face_id)
        try:
            data = read_source(image_row.source)
            photo = decode_photo(data, image_row.source, self.max_pixels, work_pixels=SHOWN_WORK_PIXELS)
        except (*archives.ARCHIVE_ERRORS, ImageError, FaceFinderError):
            raise NotFound(
                f"the source photo of image {image_row.id} is no longer readable where it was ingested from"
            ) from None
        self._log_view(
            principal,
            (search_id, rank, "photo"),
            "result.view",
            record.case_id,
            search_id=search_id,
            rank=rank,
            face_id=candidate.face_id,
            image_id=image_row.id,
            photo=True,
            view="photo",
        )
        return boxed_jpeg(photo.image, box_in(photo, face.box))

    def _log_thumbnail(
        self, principal: Principal, record: CaseRecord, face: str | int, face_id: int | None = None
    ) -> None:
        """One ``thumbnail.view`` per user and search in the view window: it stands for every face
        thumbnail of that search (probe and candidates) shown then; ``face`` is the first one asked for."""
        details: dict[str, Any] = {"search_id": record.id, "face": face}
        if face_id is not None:
            details["face_id"] = face_id
        self._log_view(principal, (record.id,), "thumbnail.view", record.case_id, **details)

    # ----- leads: the two-person rule (services/server/leads.py) ----------------------------------
    def propose(self, principal: Principal, search_id: int, rank: int, note: str = "") -> Lead:
        self._with_faces(principal, search_id)
        record, _ = self.candidate(principal, search_id, rank)
        note = lead_note(note)
        lead = propose_lead(self.catalog, search_id, rank, principal.username, note)
        self.audit.record(
            principal.username,
            "lead.propose",
            record.case_id,
            search_id=search_id,
            rank=rank,
            face_id=lead.face_id,
            note=note,
        )
        return lead

    def confirm(self, principal: Principal, search_id: int, rank: int, note: str) -> Lead:
        self._with_faces(principal, search_id)
        record, _ = self.candidate(principal, search_id, rank)
        note = lead_note(note, required=True)
        lead = confirm_lead(self.catalog, search_id, rank, principal.username, note)
        self.audit.record(
            principal.username,
            "lead.confirm",
            record.case_id,
            search_id=search_id,
            rank=rank,
            face_id=lead.face_id,
            proposed_by=lead.proposed_by,
            note=note,
        )
        return lead

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
