"""Case-bound search: every search the service runs names a case, a purpose and a category, is kept
as a record (who, when, on what, with which parameters, what came back), and its candidates are
*leads* that a second person must confirm.

* A probe photo is analysed first (``analyze_probe``): the faces in it, held in memory for a short
  while under a random id, so that the user can pick one. The photo itself is not stored unless the
  probe retention setting says so (default 0 days: only its sha256 and the searched face's
  thumbnail are kept).
* ``search`` runs one face of a probe against the collections the user may search and records it,
  in ``case_searches`` / ``case_candidates`` and in the audit log.
* Two-person rule: a candidate is *proposed* as a lead by one user and *confirmed* by another, each
  with a note; the proposer can never confirm their own proposal.
* Erasure reaches the records (services/privacy/case_records.py): a candidate whose face was erased shows a placeholder saying when, and so
  does the probe of a search whose probe face was a person later erased.

Who sees what (deny by default): admins everything; investigators the searches whose collections
are all granted to them (their own and their colleagues', so that a second person can confirm);
auditors the records without any face image.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from sqlalchemy import select, update

from facefinder.errors import CatalogError, Conflict, FaceFinderError, FieldError, ImageError, NotFound
from facefinder.services.audit import AuditLog
from facefinder.services.privacy import optout
from facefinder.services.search import Searcher
from facefinder.services.server.accounts import AccessDenied, Accounts, Principal
from facefinder.services.server.pictures import SHOWN_WORK_PIXELS, box_in, boxed_jpeg, erased_lines, placeholder_jpeg
from facefinder.services.server.probes import Probe, ProbeCache, ProbeFaceData
from facefinder.services.server.records import CaseRecord, Lead
from facefinder.services.sources import archives
from facefinder.services.sources.folders import read_source
from facefinder.storage.catalog import CaseCandidate, CaseSearch, utcnow
from facefinder.storage.store import FaceStore
from facefinder.vision.image import (
    DEFAULT_MAX_PIXELS,
    decode_photo,
    encode_jpeg,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from facefinder.storage.catalog import FaceRecord, ImageRecord
    from facefinder.vision.pipeline import FacePipeline

DEFAULT_CATEGORIES = [
    "criminal investigation",
    "missing person",
    "victim identification",
    "fraud investigation",
    "internal test or audit",
]
CATEGORIES_KEY = "search_categories"
RETENTION_KEY = "probe_retention_days"
MAX_TOP_K = 100


@dataclass
class CaseSettings:
    """The admin's search settings: the purpose categories offered, and how long probe photos are kept."""

    categories: list[str]
    probe_retention_days: int


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
    ) -> None:
        """``pipeline_source`` is a callable returning the loaded FacePipeline (models load on first use)."""
        self.store, self.accounts, self.audit = store, accounts, audit
        self._pipeline_source = pipeline_source
        self.max_pixels = max_pixels
        self.probes = probes or ProbeCache()
        self.catalog = store.catalog

    @property
    def pipeline(self) -> FacePipeline:
        return self._pipeline_source()

    # ----- settings ----------------------------------------------------------------------------
    def settings(self) -> CaseSettings:
        categories = json.loads(self.catalog.get_setting(CATEGORIES_KEY, json.dumps(DEFAULT_CATEGORIES)))
        days = int(self.catalog.get_setting(RETENTION_KEY, "0"))
        return CaseSettings(categories, days)

    def update_settings(
        self, admin: Principal, categories: list[str] | None = None, probe_retention_days: int | None = None
    ) -> CaseSettings:
        admin.require("admin")
        changes: dict[str, Any] = {}
        if categories is not None:
            cleaned = [c.strip() for c in categories if c and c.strip()]
            if not cleaned:
                raise FieldError("categories", "at least one category is needed")
            if any(len(c) > 100 for c in cleaned):
                raise FieldError("categories", "a category has at most 100 characters")
            changes[CATEGORIES_KEY] = list(dict.fromkeys(cleaned))
        if probe_retention_days is not None:
            if not 0 <= probe_retention_days <= 3650:
                raise FieldError("probe_retention_days", "must be between 0 and 3650")
            changes[RETENTION_KEY] = str(probe_retention_days)
        with self.catalog.session() as session, session.begin():
            for key, value in changes.items():
                self.catalog.set_setting(session, key, value)
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
        principal.require("admin", "investigator")
        case_id, purpose, category = (case_id or "").strip(), (purpose or "").strip(), (category or "").strip()
        if not case_id:
            raise FieldError("case_id", "a case number is required")
        if len(case_id) > 200:
            raise FieldError("case_id", "at most 200 characters")
        if len(purpose) < 3:
            raise FieldError("purpose", "say why this search is run (at least 3 characters)")
        if len(purpose) > 2000:
            raise FieldError("purpose", "at most 2000 characters")
        settings = self.settings()
        if category not in settings.categories:
            raise FieldError("category", f"must be one of: {', '.join(settings.categories)}")
        if not 1 <= top_k <= MAX_TOP_K:
            raise FieldError("top_k", f"must be between 1 and {MAX_TOP_K}")
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise FieldError("threshold", "must be between -1 and 1")
        names = self._searchable(principal, collections)
        probe = self.probes.get(principal, probe_id)
        if not 0 <= face < len(probe.faces):
            raise FieldError(
                "face",
                f"the probe holds {len(probe.faces)} face(s); pick 0..{len(probe.faces) - 1}"
                if probe.faces
                else "no face was found in the probe photo",
            )
        searcher = Searcher(self.store, self.pipeline)
        try:
            ids = searcher.collection_ids(names)
        except CatalogError as exc:
            raise FieldError("collections", str(exc)) from None
        threshold = searcher.calibration.threshold if threshold is None else float(threshold)
        chosen = probe.faces[face]
        candidates = searcher.search_embeddings(chosen.embedding[None, :], ids, top_k, threshold)[0]
        self.purge_expired_probes()
        days = settings.probe_retention_days
        with self.catalog.session() as session, session.begin():
            record = CaseSearch(
                user_id=principal.id,
                username=principal.username,
                case_id=case_id,
                purpose=purpose,
                category=category,
                probe_sha256=probe.sha256,
                probe_face=face,
                probe_box=chosen.box,
                probe_quality=chosen.quality,
                probe_thumbnail=chosen.thumbnail,
                probe_embedding=np.asarray(chosen.embedding, dtype=np.float32).tobytes(),
                probe_photo=probe.photo if days > 0 else None,
                probe_keep_until=utcnow() + timedelta(days=days) if days > 0 and probe.photo else None,
                collections=names,
                top_k=top_k,
                threshold=threshold,
                model_id=self.pipeline.model_id,
            )
            record.candidates = [
                CaseCandidate(
                    rank=c.rank,
                    face_id=c.face_id,
                    image_id=c.image_id,
                    collection=c.collection,
                    score=c.score,
                    false_match_rate=c.false_match_rate,
                    band=c.band,
                )
                for c in candidates
            ]
            session.add(record)
            session.flush()
            search_id = record.id
        self.audit.record(
            principal.username,
            "search",
            case_id,
            search_id=search_id,
            purpose=purpose,
            category=category,
            probe_sha256=probe.sha256,
            face=face,
            collections=names,
            top_k=top_k,
            threshold=threshold,
            candidates=[[c.face_id, c.score] for c in candidates],
        )
        return self.get(principal, search_id, audit=False)

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
            row = session.get(CaseSearch, search_id)
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
                source=image.source,
                width=image.width,
                height=image.height,
                box=face.box,
                quality=face.quality,
                sha256=image.sha256,
                ingested_at=image.ingested_at.replace(tzinfo=timezone.utc).isoformat(timespec="seconds"),
                provenance={k: getattr(image, k) for k in PROVENANCE_FIELDS},
            )
        self.audit.record(
            principal.username,
            "result.view",
            record.case_id,
            search_id=search_id,
            rank=rank,
            face_id=candidate.face_id,
            image_id=candidate.image_id,
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
        candidates are."""
        self._with_faces(principal, search_id)
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
        """The candidate's face from the catalog; once it is erased (or its person opted out), a placeholder."""
        self._with_faces(principal, search_id)
        _, candidate = self.candidate(principal, search_id, rank)
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
        self.audit.record(
            principal.username,
            "result.view",
            record.case_id,
            search_id=search_id,
            rank=rank,
            face_id=candidate.face_id,
            image_id=image_row.id,
            photo=True,
        )
        return boxed_jpeg(photo.image, box_in(photo, face.box))

    # ----- leads: the two-person rule -------------------------------------------------------------
    def propose(self, principal: Principal, search_id: int, rank: int, note: str = "") -> Lead:
        self._with_faces(principal, search_id)
        record, _ = self.candidate(principal, search_id, rank)
        note = (note or "").strip()
        if len(note) > 4000:
            raise FieldError("note", "at most 4000 characters")
        with self.catalog.session() as session, session.begin():
            row = self._locked_candidate(session, search_id, rank)
            if row.status != "candidate":
                raise Conflict(f"candidate {rank} of search {search_id} is already {row.status}")
            row.status, row.proposed_by, row.proposed_at, row.proposed_note = (
                "proposed",
                principal.username,
                utcnow(),
                note,
            )
            lead = Lead.of(row)
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
        note = (note or "").strip()
        if not note:
            raise FieldError("note", "a note is required to confirm a lead (what was checked, and how)")
        if len(note) > 4000:
            raise FieldError("note", "at most 4000 characters")
        with self.catalog.session() as session, session.begin():
            row = self._locked_candidate(session, search_id, rank)
            if row.status == "candidate":
                raise Conflict(f"candidate {rank} of search {search_id} must be proposed as a lead first")
            if row.status == "confirmed":
                raise Conflict(f"candidate {rank} of search {search_id} is already confirmed")
            if row.proposed_by == principal.username:
                raise AccessDenied(
                    "two-person rule: a lead must be confirmed by someone other than the person "
                    f"who proposed it ({row.proposed_by})"
                )
            row.status, row.confirmed_by, row.confirmed_at, row.confirmed_note = (
                "confirmed",
                principal.username,
                utcnow(),
                note,
            )
            lead = Lead.of(row)
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

    def _locked_candidate(self, session: Session, search_id: int, rank: int) -> CaseCandidate:
        # Take the row lock first (SQLite: the database write lock), so two confirmations cannot race.
        session.execute(
            update(CaseCandidate)
            .where(CaseCandidate.search_id == search_id, CaseCandidate.rank == rank)
            .values(status=CaseCandidate.status)
        )
        row = session.scalars(
            select(CaseCandidate)
            .where(CaseCandidate.search_id == search_id, CaseCandidate.rank == rank)
            .with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"search {search_id} has no candidate {rank}")
        return row

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
