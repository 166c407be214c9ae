"""One case-bound search, as services/server/cases.py runs it: the terms it is asked under, checked
before any face is searched (so that no search runs without a case number, a purpose and a category),
and what it ran on and found, kept as its ``case_searches`` / ``case_candidates`` rows and audit entry.

A fused search (``same_person``: more probe faces declared to show the probe face's person, from the
same or other held probe photos) runs once on their fused template (services/fusion.py): each candidate's
score is the mean of its cosines to all of them. Its record keeps each extra face as it keeps the probe
face (sha256, face, box, quality, thumbnail and template; never their photos), and its audit entry lists
them (``same_person``: [sha256, face] each).

Near misses (asked for with the terms) are the candidates below the threshold, down to the weak band:
recorded after the leads with the status ``near_miss``, so that the record and the audit log hold every
face that was shown, and the lead steps refuse them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from facefinder.errors import FieldError, NotFound
from facefinder.storage.base import utcnow
from facefinder.storage.cases import CaseCandidate, CaseSearch, SamePersonFace

if TYPE_CHECKING:
    from facefinder.services.search import Candidate
    from facefinder.services.server.accounts import Principal
    from facefinder.services.server.probes import Probe, ProbeFaceData

MAX_TOP_K = 100
MAX_SAME_PERSON = 10  # more faces of the person in one fused search


@dataclass(frozen=True)
class SearchTerms:
    """What a case search is asked under, each field checked; a bad one is a FieldError naming it,
    so the user is told what to fix and the search is not run."""

    case_id: str
    purpose: str
    category: str
    top_k: int
    threshold: float | None  # None: the calibrated threshold
    near_misses: bool = False  # also the candidates below the threshold, down to the weak band

    @classmethod
    def checked(
        cls,
        case_id: str,
        purpose: str,
        category: str,
        top_k: int,
        threshold: float | None,
        categories: list[str],
        near_misses: bool = False,
    ) -> SearchTerms:
        """The terms, stripped, once each is valid; ``categories`` are those the admin offers."""
        case_id, purpose, category = (case_id or "").strip(), (purpose or "").strip(), (category or "").strip()
        if not case_id:
            raise FieldError("case_id", "a case number is required")
        if len(case_id) > 200:
            raise FieldError("case_id", "at most 200 characters")
        if len(purpose) < 3:
            raise FieldError("purpose", "say why this search is run (at least 3 characters)")
        if len(purpose) > 2000:
            raise FieldError("purpose", "at most 2000 characters")
        if category not in categories:
            raise FieldError("category", f"must be one of: {', '.join(categories)}")
        if not 1 <= top_k <= MAX_TOP_K:
            raise FieldError("top_k", f"must be between 1 and {MAX_TOP_K}")
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise FieldError("threshold", "must be between -1 and 1")
        return cls(case_id, purpose, category, top_k, threshold, bool(near_misses))


def check_face(probe: Probe, face: int, name: str = "face") -> None:
    """A FieldError unless ``face`` is one of the probe's faces, saying which there are (or that there are none)."""
    if not 0 <= face < len(probe.faces):
        raise FieldError(
            name,
            f"the probe holds {len(probe.faces)} face(s); pick 0..{len(probe.faces) - 1}"
            if probe.faces
            else "no face was found in the probe photo",
        )


def check_faces(probe: Probe, faces: list[int]) -> list[int]:
    """The faces to search, each once, in the order asked; a FieldError on ``faces`` (or ``face``, for
    one) for an empty list or a face the probe does not have."""
    if not faces:
        raise FieldError("faces", "pick at least one face of the probe to search")
    for face in faces:
        check_face(probe, face, "face" if len(faces) == 1 else "faces")
    return list(dict.fromkeys(faces))


def check_same_person(
    held: Callable[[str], Probe], probe: Probe, faces: list[int], same_person: list[tuple[str, int]] | None
) -> tuple[tuple[Probe, int], ...]:
    """The other faces (probe, face) declared to show the person of the probe face ``faces[0]``, each
    checked: a FieldError on ``same_person`` for more than MAX_SAME_PERSON, several ``faces`` besides, a
    probe the user no longer holds (``held`` raises NotFound), a face it does not have, or a face listed
    twice (the probe face itself included). None or an empty list: a plain search."""
    if not same_person:
        return ()
    if len(faces) > 1:
        raise FieldError("same_person", "a fused search searches one probe face (`face`), not several `faces`")
    if len(same_person) > MAX_SAME_PERSON:
        raise FieldError("same_person", f"at most {MAX_SAME_PERSON} more faces of the person")
    seen, chosen = {(probe.id, faces[0])}, []
    for probe_id, face in same_person:
        try:
            other = held(probe_id)
        except NotFound as exc:
            raise FieldError("same_person", str(exc)) from None
        if not 0 <= face < len(other.faces):
            raise FieldError("same_person", f"probe {probe_id!r} has no face {face} (it holds {len(other.faces)})")
        if (probe_id, face) in seen:
            raise FieldError(
                "same_person", f"face {face} of probe {probe_id!r} is listed twice (the probe face counts)"
            )
        seen.add((probe_id, face))
        chosen.append((other, face))
    return tuple(chosen)


def near_misses_of(leads: list[Candidate], wider: list[Candidate], terms: SearchTerms) -> list[Candidate]:
    """The candidates of a search down to the weak band (``wider``) that are not among the leads, ranked
    after them, up to ``top_k`` candidates in all; none unless the terms ask for near misses."""
    if not terms.near_misses:
        return []
    taken = {c.face_id for c in leads}
    below = [c for c in wider if c.face_id not in taken][: max(terms.top_k - len(leads), 0)]
    return [replace(c, rank=len(leads) + number) for number, c in enumerate(below, start=1)]


@dataclass(frozen=True)
class SearchRun:
    """A case search that ran: its terms, the probe face and collections it searched, the threshold it
    used and the candidates it found; everything its record and its audit entry keep."""

    terms: SearchTerms
    probe: Probe
    face: int
    collections: list[str]
    threshold: float
    candidates: list[Candidate]
    model_id: str
    near_misses: list[Candidate] = field(default_factory=list)  # below the threshold, ranked after the leads
    same_person: tuple[tuple[Probe, int], ...] = ()  # a fused search: the other faces of the person

    @property
    def chosen(self) -> ProbeFaceData:
        return self.probe.faces[self.face]

    def row(self, principal: Principal, retention_days: int) -> CaseSearch:
        """The search's catalog row with its candidates; the probe photo is kept only while the
        admin's retention setting says so."""
        chosen, days = self.chosen, retention_days
        record = CaseSearch(
            user_id=principal.id,
            username=principal.username,
            case_id=self.terms.case_id,
            purpose=self.terms.purpose,
            category=self.terms.category,
            probe_sha256=self.probe.sha256,
            probe_face=self.face,
            probe_video_time=chosen.video_time,
            probe_box=chosen.box,
            probe_quality=chosen.quality,
            probe_thumbnail=chosen.thumbnail,
            probe_embedding=np.asarray(chosen.embedding, dtype=np.float32).tobytes(),
            probe_photo=self.probe.photo if days > 0 else None,
            probe_keep_until=utcnow() + timedelta(days=days) if days > 0 and self.probe.photo else None,
            collections=self.collections,
            top_k=self.terms.top_k,
            threshold=self.threshold,
            model_id=self.model_id,
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
                status=status,
                video_time=c.video_time,
                track_start=c.track["start"] if c.track else None,
                track_end=c.track["end"] if c.track else None,
            )
            for status, shown in (("candidate", self.candidates), ("near_miss", self.near_misses))
            for c in shown
        ]
        record.same_person = self._same_person_rows()
        return record

    def _same_person_rows(self) -> list[SamePersonFace]:
        """The extra probe faces of a fused search, kept as the probe face is (never their photos)."""
        rows = []
        for number, (probe, face) in enumerate(self.same_person, start=1):
            chosen = probe.faces[face]
            rows.append(
                SamePersonFace(
                    number=number,
                    probe_sha256=probe.sha256,
                    probe_face=face,
                    probe_box=chosen.box,
                    probe_quality=chosen.quality,
                    probe_thumbnail=chosen.thumbnail,
                    probe_embedding=np.asarray(chosen.embedding, dtype=np.float32).tobytes(),
                )
            )
        return rows

    def audit_details(self, search_id: int) -> dict[str, Any]:
        """The audit entry's fields: enough to tell later who searched what, why, and what came back
        (``candidates``: every face shown, the leads then the near misses, whose number ``near_misses`` says)."""
        return dict(
            search_id=search_id,
            purpose=self.terms.purpose,
            category=self.terms.category,
            probe_sha256=self.probe.sha256,
            face=self.face,
            collections=self.collections,
            top_k=self.terms.top_k,
            threshold=self.threshold,
            candidates=[[c.face_id, c.score] for c in [*self.candidates, *self.near_misses]],
            **({"near_misses": len(self.near_misses)} if self.terms.near_misses else {}),
            **({"same_person": [[p.sha256, f] for p, f in self.same_person]} if self.same_person else {}),
        )
