"""What a case search record is to the interfaces (services/server/cases.py returns these): plain,
frozen values copied out of the catalog rows while their session is open, so nothing loads later and
no interface holds a database row. The probe photo and the probe face's template stay in the catalog;
``probe_kept`` says whether the photo is there."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from facefinder.storage.catalog import CaseCandidate, CaseSearch


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
    status: str  # candidate | proposed | confirmed
    proposed_by: str | None
    proposed_at: datetime | None
    proposed_note: str | None
    confirmed_by: str | None
    confirmed_at: datetime | None
    confirmed_note: str | None
    erased_at: datetime | None  # when its face was erased (its thumbnail is then a placeholder)

    @classmethod
    def of(cls, row: CaseCandidate) -> Lead:
        """The lead of ``row`` (every field is a column of the same name)."""
        return cls(**_columns(row, cls))


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

    @classmethod
    def of(cls, row: CaseSearch) -> CaseRecord:
        """The record of ``row``; call it while the row's session is open (it reads the candidates)."""
        derived = {
            "probe_box": list(row.probe_box),
            "probe_kept": row.probe_photo is not None,
            "collections": list(row.collections),
            "candidates": tuple(Lead.of(c) for c in row.candidates),
        }
        return cls(**{**_columns(row, cls, skip=derived), **derived})


def _columns(row: object, record: type, skip: dict | None = None) -> dict:
    """The values of ``row`` for the fields of the dataclass ``record`` (other than those in ``skip``)."""
    return {f.name: getattr(row, f.name) for f in fields(record) if f.name not in (skip or {})}
