"""Showing what a case search found, and logging that it was shown: a result's provenance, its source
photo with the face boxed, the face thumbnails of the probe and the candidates (a placeholder for a
face erased, or withheld while its person's opt-out is reviewed). Part of Cases (services/server/cases.py),
kept apart because it is about views and their audit entries, not about running searches.

Views are audited without burying the log in repeats (``OncePer``, services/audit.py): opening a
result writes one ``result.view`` per user, search, rank and view (``details``: its provenance;
``photo``: its source photo) in a view window; the face thumbnails of a search (its probe face and
its candidates, and a fused search's other probe faces) write one ``thumbnail.view`` per user and search in that window.
"""

from __future__ import annotations

from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from facefinder.errors import FaceFinderError, ImageError, NotFound
from facefinder.services.privacy import optout
from facefinder.services.server import uploads
from facefinder.services.server.pictures import SHOWN_WORK_PIXELS, box_in, boxed_jpeg, erased_lines, placeholder_jpeg
from facefinder.services.sources import archives
from facefinder.services.sources.folders import read_source
from facefinder.services.video import video_clip, video_frame
from facefinder.storage.cases import CaseSearch, SamePersonFace
from facefinder.vision.image import Decoded, decode_photo

WITHHELD_LINES = ("withheld", "(opted out)")  # the placeholder of a face whose person's opt-out is under review


def unavailable(candidate: Lead) -> str:
    """Why a recorded candidate's face is not shown: erased (and when), or withheld by an opt-out under review."""
    if candidate.withheld:
        return "withheld (opt-out under review): its person asked to be left out and the erasure is being reviewed"
    if candidate.erased_at is not None:
        return f"erased (on {candidate.erased_at:%Y-%m-%d})"
    return "no longer held (erased)"


if TYPE_CHECKING:
    from facefinder.services.audit import AuditLog, OncePer
    from facefinder.services.server.accounts import Principal
    from facefinder.services.server.records import CaseRecord, Lead
    from facefinder.storage.catalog import Catalog, FaceRecord, ImageRecord
    from facefinder.storage.store import FaceStore


class CaseViews:
    """The views of Cases: what a search's results show, each view audited once per look (see the module
    docstring). A mixin: Cases gives it the store, the catalog, the audit log and the view window."""

    store: FaceStore
    catalog: Catalog
    audit: AuditLog
    views: OncePer
    max_pixels: int
    fenced_sources: list[Path]

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

    def candidate_details(self, principal: Principal, search_id: int, rank: int) -> dict[str, Any]:
        """Where the candidate's photo came from (provenance), for an opened result; audited as a view."""
        record, candidate = self.candidate(principal, search_id, rank, self._with_faces(principal, search_id))
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

    def _require_held(self, candidate: Lead) -> tuple[FaceRecord, ImageRecord, str]:
        held = self._held(candidate.face_id)
        if held is None:
            raise NotFound(f"face {candidate.face_id} is {unavailable(candidate)}")
        return held

    def probe_thumbnail(self, principal: Principal, search_id: int) -> bytes:
        """The searched face, or a placeholder saying when it was erased (its person was erased), or
        that it is withheld (its person opted out and the erasure is still to be reviewed), as
        candidates are. Audited as a ``thumbnail.view`` of the search."""
        record = self._with_faces(principal, search_id)
        self._log_thumbnail(principal, record, "probe")
        with self.catalog.session() as session:  # the probe face stays in the catalog: no record carries it
            thumbnail, erased_at = session.execute(
                select(CaseSearch.probe_thumbnail, CaseSearch.probe_erased_at).where(CaseSearch.id == search_id)
            ).one()
        if erased_at is not None or not thumbnail:
            return placeholder_jpeg(*erased_lines(erased_at))
        if record.probe_withheld:
            return placeholder_jpeg(*WITHHELD_LINES)
        return thumbnail

    def same_person_thumbnail(self, principal: Principal, search_id: int, number: int) -> bytes:
        """One more probe face of a fused search (``number``: 1.., as the record lists them), shown as
        the probe face is: a placeholder once its person was erased, or while withheld."""
        record = self._with_faces(principal, search_id)
        extra = next((f for f in record.same_person if f.number == number), None)
        if extra is None:
            raise NotFound(f"search {search_id} has no same-person face {number}")
        self._log_thumbnail(principal, record, f"same_person {number}")
        with self.catalog.session() as session:
            thumbnail, erased_at = session.execute(
                select(SamePersonFace.probe_thumbnail, SamePersonFace.erased_at).where(
                    SamePersonFace.search_id == search_id, SamePersonFace.number == number
                )
            ).one()
        if erased_at is not None or not thumbnail:
            return placeholder_jpeg(*erased_lines(erased_at))
        if extra.withheld:
            return placeholder_jpeg(*WITHHELD_LINES)
        return thumbnail

    def candidate_thumbnail(self, principal: Principal, search_id: int, rank: int) -> bytes:
        """The candidate's face from the catalog; once it is erased (or its person opted out), a placeholder.
        Audited as a ``thumbnail.view`` of the search."""
        record, candidate = self.candidate(principal, search_id, rank, self._with_faces(principal, search_id))
        self._log_thumbnail(principal, record, rank, candidate.face_id)
        held = self._held(candidate.face_id)
        if held is not None:
            return held[0].thumbnail
        if candidate.withheld:
            return placeholder_jpeg(*WITHHELD_LINES)
        return placeholder_jpeg(*erased_lines(candidate.erased_at))

    def candidate_photo(self, principal: Principal, search_id: int, rank: int) -> bytes:
        """The candidate's source photo with its face boxed, as JPEG (for a face from a video, the frame
        it was seen in); audited as a result view."""
        record, candidate = self.candidate(principal, search_id, rank, self._with_faces(principal, search_id))
        face, image_row, _ = self._require_held(candidate)
        try:
            if candidate.video_time is not None:  # a face from a video: the frame it was seen in
                frame = video_frame(image_row.source, candidate.video_time, self.fenced_sources)
                photo = Decoded(frame, frame.shape[1], frame.shape[0])
            else:
                data = read_source(image_row.source, self.fenced_sources)
                photo = decode_photo(data, image_row.source, self.max_pixels, work_pixels=SHOWN_WORK_PIXELS)
        except (*archives.ARCHIVE_ERRORS, ImageError, FaceFinderError, OSError):
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

    def candidate_clip(self, principal: Principal, search_id: int, rank: int) -> bytes:
        """A candidate from a video: the clip from a few seconds before its face was seen to a few after,
        as a small MP4 (services/video.py); the same access as its photo, audited as a result view."""
        record, candidate = self.candidate(principal, search_id, rank, self._with_faces(principal, search_id))
        _, image_row, _ = self._require_held(candidate)
        if candidate.video_time is None:
            raise NotFound(f"candidate {rank} of search {search_id} is a face in a photo: there is no clip")
        try:
            clip = video_clip(image_row.source, candidate.video_time, self.fenced_sources)
        except (*archives.ARCHIVE_ERRORS, ImageError, FaceFinderError, OSError):
            raise NotFound(
                f"the source video of image {image_row.id} is no longer readable where it was ingested from"
            ) from None
        details = dict(search_id=search_id, rank=rank, face_id=candidate.face_id, image_id=image_row.id)
        self._log_view(principal, (search_id, rank, "clip"), "result.view", record.case_id, **details, view="clip")
        return clip

    def _log_thumbnail(
        self, principal: Principal, record: CaseRecord, face: str | int, face_id: int | None = None
    ) -> None:
        """One ``thumbnail.view`` per user and search in the view window: it stands for every face
        thumbnail of that search (probe and candidates) shown then; ``face`` is the first one asked for."""
        details: dict[str, Any] = {"search_id": record.id, "face": face}
        if face_id is not None:
            details["face_id"] = face_id
        self._log_view(principal, (record.id,), "thumbnail.view", record.case_id, **details)
