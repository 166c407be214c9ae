"""The catalog's tables for case-bound searches (services/server/cases.py) and the leads they returned."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.schema import ForeignKey, UniqueConstraint
from sqlalchemy.types import JSON, Float, Integer, LargeBinary, String, Text

from facefinder.storage.base import Base, utcnow


class CaseSearch(Base):
    """One case-bound search run through the service (services/server/cases.py): who, for which case, why, on what.

    The probe photo itself is kept only while the retention setting allows (default: not at all);
    its sha256 and the searched face's thumbnail are always kept.
    """

    __tablename__ = "case_searches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int] = mapped_column(Integer, index=True)  # users are disabled, never deleted
    username: Mapped[str] = mapped_column(String(100))
    case_id: Mapped[str] = mapped_column(String(200), index=True)
    purpose: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(100))
    probe_sha256: Mapped[str] = mapped_column(String(64))
    probe_face: Mapped[int] = mapped_column(Integer)  # which face of the probe photo was searched
    probe_video_time: Mapped[float | None] = mapped_column(Float)  # a video probe: when that face was seen (s)
    probe_box: Mapped[list] = mapped_column(JSON)
    probe_quality: Mapped[float] = mapped_column(Float)
    probe_thumbnail: Mapped[bytes] = mapped_column(LargeBinary)  # JPEG of the aligned probe face
    probe_photo: Mapped[bytes | None] = mapped_column(LargeBinary)  # only while retention allows
    probe_keep_until: Mapped[datetime | None] = mapped_column()
    # Erasure of the probe's person (services/server/cases.py, erase_probes_of): the searched face's template
    # (float32, of model_id) finds the searches whose probe was someone later erased; their thumbnail,
    # photo and template are then emptied and probe_erased_at says when (the UI shows a placeholder).
    probe_embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    probe_erased_at: Mapped[datetime | None] = mapped_column()
    collections: Mapped[list] = mapped_column(JSON)  # names searched
    top_k: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float] = mapped_column(Float)
    model_id: Mapped[str] = mapped_column(String(200))
    candidates: Mapped[list["CaseCandidate"]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="CaseCandidate.rank"
    )
    # A fused search (same_person): the other faces declared to show the probe face's person, searched together.
    same_person: Mapped[list["SamePersonFace"]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="SamePersonFace.number"
    )


class SamePersonFace(Base):
    """One more probe face of a fused case search (services/server/cases.py, ``same_person``), kept as the
    searched probe face is: its photo's sha256, which face, its box, quality and thumbnail, and its template
    until its person is erased (then thumbnail and template are emptied and ``erased_at`` says when).
    A table of its own, so a catalog made before fused searches gains it when it is opened."""

    __tablename__ = "case_search_same_person"
    __table_args__ = (UniqueConstraint("search_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("case_searches.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1.. in the order declared (the probe face itself is 0)
    probe_sha256: Mapped[str] = mapped_column(String(64))
    probe_face: Mapped[int] = mapped_column(Integer)
    probe_box: Mapped[list] = mapped_column(JSON)
    probe_quality: Mapped[float] = mapped_column(Float)
    probe_thumbnail: Mapped[bytes] = mapped_column(LargeBinary)
    probe_embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    erased_at: Mapped[datetime | None] = mapped_column()


class CaseCandidate(Base):
    """A candidate a case search returned, and its lead status (two-person rule to confirm)."""

    __tablename__ = "case_candidates"
    __table_args__ = (UniqueConstraint("search_id", "rank"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("case_searches.id", ondelete="CASCADE"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    face_id: Mapped[int] = mapped_column(Integer, index=True)  # no foreign key: the record outlives an erasure
    image_id: Mapped[int] = mapped_column(Integer)
    collection: Mapped[str] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Float)
    false_match_rate: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(20))
    # candidate | proposed | confirmed | not_a_match | near_miss (below the threshold, shown on request: never a lead)
    status: Mapped[str] = mapped_column(String(20), default="candidate")
    proposed_by: Mapped[str | None] = mapped_column(String(100))
    proposed_at: Mapped[datetime | None] = mapped_column()
    proposed_note: Mapped[str | None] = mapped_column(Text)
    confirmed_by: Mapped[str | None] = mapped_column(String(100))
    confirmed_at: Mapped[datetime | None] = mapped_column()
    confirmed_note: Mapped[str | None] = mapped_column(Text)
    not_a_match_by: Mapped[str | None] = mapped_column(String(100))  # who closed it as not a match, when, why
    not_a_match_at: Mapped[datetime | None] = mapped_column()
    not_a_match_note: Mapped[str | None] = mapped_column(Text)
    erased_at: Mapped[datetime | None] = mapped_column()  # when its face was erased (a placeholder shows)
    # A face from a video (storage/video.py): when it was seen, and its track's span, in seconds.
    video_time: Mapped[float | None] = mapped_column(Float)
    track_start: Mapped[float | None] = mapped_column(Float)
    track_end: Mapped[float | None] = mapped_column(Float)
