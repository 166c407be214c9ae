"""What a case search record is to the interfaces (services/server/cases.py returns these): plain,
frozen values copied out of the catalog rows while their session is open, so nothing loads later and
no interface holds a database row. The probe photo and the probe face's template stay in the catalog;
``probe_kept`` says whether the photo is there.

A few facts of a record change after it was made and are not columns: whether a face is *withheld*
(still held, but its person is on the opt-out list and the erasure is under review), and which other
faces of the same probe photo were searched for the case (services/server/record_state.py fills them in).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from facefinder.storage.cases import CaseCandidate, CaseSearch, SamePersonFace

# Lead statuses: a plain candidate, a proposed and a confirmed lead (two people), one closed as not a
# match, and a near miss (below the threshold, shown because the investigator asked: never a lead).
STATUSES = ("candidate", "proposed", "confirmed", "not_a_match", "near_miss")


@dataclass(frozen=True)
class Lead:
    """One candidate a case search returned, and its lead status (proposed, then confirmed by another person)."""

    search_id: int
    rank: int
    face_id: int
    image_id: int
    collection: str
    score: float
    false_match_rate: float
    band: str
    status: str  # one of STATUSES
    proposed_by: str | None
    proposed_at: datetime | None
    proposed_note: str | None
    confirmed_by: str | None
    confirmed_at: datetime | None
    confirmed_note: str | None
    not_a_match_by: str | None
    not_a_match_at: datetime | None
    not_a_match_note: str | None
    erased_at: datetime | None  # when its face was erased (its thumbnail is then a placeholder)
    withheld: bool = False  # held, but its person opted out and the erasure is under review: not shown
    video_time: float | None = None  # a face from a video: when it was seen (seconds)
    track_start: float | None = None  # and its track's span
    track_end: float | None = None

    @classmethod
    def of(cls, row: CaseCandidate) -> Lead:
        """The lead of ``row`` (every field but ``withheld`` is a column of the same name)."""
        return cls(**_columns(row, cls, skip={"withheld": False}))

    @property
    def track(self) -> dict[str, float] | None:
        """A video face's track span, {"start": s, "end": s}; None for a photo's face."""
        return None if self.track_start is None else {"start": self.track_start, "end": self.track_end}

    @property
    def near_miss(self) -> bool:
        return self.status == "near_miss"


@dataclass(frozen=True)
class ProbeSearch:
    """One search of a face of a probe photo, as the other searches of that photo list it."""

    search_id: int
    face: int


@dataclass(frozen=True)
class SamePersonProbe:
    """One more probe face of a fused search (``same_person``): declared to show the probe face's person."""

    number: int  # 1.. in the order declared; its thumbnail is /api/searches/{id}/same-person/{number}/thumbnail
    probe_sha256: str
    face: int
    box: list[float]
    quality: float
    erased_at: datetime | None  # when its person was erased (its thumbnail is then a placeholder)
    withheld: bool = False  # its person opted out and the erasure is under review

    @classmethod
    def of(cls, row: SamePersonFace) -> SamePersonProbe:
        box, quality = list(row.probe_box), row.probe_quality
        return cls(row.number, row.probe_sha256, row.probe_face, box, quality, row.erased_at)


@dataclass(frozen=True)
class CaseRecord:
    """One recorded case search: who ran it, for which case and why, on what, and the candidates it returned."""

    id: int
    at: datetime
    username: str
    case_id: str
    purpose: str
    category: str
    probe_sha256: str
    probe_face: int
    probe_box: list[float]
    probe_quality: float
    probe_kept: bool  # whether the probe photo itself is kept (per the retention setting)
    probe_erased_at: datetime | None  # when the probe's person was erased
    collections: list[str]
    top_k: int
    threshold: float
    model_id: str
    candidates: tuple[Lead, ...]
    probe_withheld: bool = False  # the probe face's person opted out (erasure under review)
    # the searches of this probe photo's faces for this case that the reader may read, this one included
    probe_searches: tuple[ProbeSearch, ...] = ()
    # a fused search: the other faces declared to show the same person, searched with the probe face
    same_person: tuple[SamePersonProbe, ...] = ()
    probe_video_time: float | None = None  # a video probe: when the searched face (its track's best) was seen

    @classmethod
    def of(cls, row: CaseSearch) -> CaseRecord:
        """The record of ``row``; call it while the row's session is open (it reads the candidates)."""
        derived = {
            "probe_box": list(row.probe_box),
            "probe_kept": row.probe_photo is not None,
            "collections": list(row.collections),
            "candidates": tuple(Lead.of(c) for c in row.candidates),
            "probe_withheld": False,
            "probe_searches": (ProbeSearch(row.id, row.probe_face),),
            "same_person": tuple(SamePersonProbe.of(f) for f in row.same_person),
        }
        return cls(**{**_columns(row, cls, skip=derived), **derived})

    @property
    def leads(self) -> tuple[Lead, ...]:
        """The candidates at or above the threshold (near misses left out)."""
        return tuple(c for c in self.candidates if not c.near_miss)

    @property
    def near_misses(self) -> tuple[Lead, ...]:
        return tuple(c for c in self.candidates if c.near_miss)


def _columns(row: object, record: type, skip: dict | None = None) -> dict:
    """The values of ``row`` for the fields of the dataclass ``record`` (other than those in ``skip``)."""
    return {f.name: getattr(row, f.name) for f in fields(record) if f.name not in (skip or {})}
