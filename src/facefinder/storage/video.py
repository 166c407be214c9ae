"""Face tracks of videos: one appearance of a face on screen, from first to last time, and its kept faces.

A video is stored as one image row (source = the video file, width and height of its upright
frames). Each track of it is a ``tracks`` row; the few best faces of a track are ordinary face rows
(embedding, thumbnail, journal, vector index: search, people, opt-out, erasure and retention work
on them unchanged) with a ``track_faces`` row that says which track they belong to and at what time
of the video they were seen. Photo faces have no ``track_faces`` row.

A track is erased as a whole: erasing any of its faces erases them all, and the track row with them
(``FaceStore.delete_faces`` calls ``whole_tracks`` and ``drop_tracks`` in its transaction).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.schema import ForeignKey
from sqlalchemy.types import Float, Integer

from facefinder.storage.base import Base


class TrackRecord(Base):
    """One face track of a video: when it starts and ends (seconds from the start of the video)."""

    __tablename__ = "tracks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer, default=0)  # sampled frames the face was detected in


class TrackFace(Base):
    """A kept face of a track, and the time of the video it was seen at."""

    __tablename__ = "track_faces"
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    video_time: Mapped[float] = mapped_column(Float)


@dataclass
class NewTrack:
    """A track to store with its video: its span, and how many sampled frames showed the face."""

    start: float
    end: float
    frames: int


@dataclass
class VideoPlace:
    """Where a stored face lies in its video: the kept face's time, and its track's span (seconds)."""

    video_time: float
    start: float
    end: float
    track_id: int  # the appearance it belongs to: a search shows one face per appearance

    def track(self) -> dict[str, float]:
        return {"start": self.start, "end": self.end}


def write_tracks(
    session: Session,
    image_id: int,
    collection_id: int,
    tracks: list[NewTrack],
    face_ids: list[int],
    places: list[tuple[int, float] | None],
) -> None:
    """Store a video's tracks and link each face (``face_ids[i]``, of the same video) to its track:
    ``places[i]`` is (track number in ``tracks``, video time), None for a face of no track. A track
    left without a face (all of them on the opt-out list) is not stored."""
    held = sorted({place[0] for place in places if place is not None})
    rows = {
        n: TrackRecord(
            image_id=image_id,
            collection_id=collection_id,
            start=tracks[n].start,
            end=tracks[n].end,
            frames=tracks[n].frames,
        )
        for n in held
    }
    session.add_all(rows.values())
    session.flush()
    session.add_all(
        [
            TrackFace(face_id=face_id, track_id=rows[place[0]].id, video_time=place[1])
            for face_id, place in zip(face_ids, places)
            if place is not None
        ]
    )


def whole_tracks(session: Session, face_ids: list[int]) -> tuple[list[int], list[int]]:
    """``face_ids`` with every other face of their tracks, and the ids of those tracks."""
    track_ids = sorted(set(session.scalars(select(TrackFace.track_id).where(TrackFace.face_id.in_(face_ids)))))
    if not track_ids:
        return list(face_ids), []
    mates = session.scalars(select(TrackFace.face_id).where(TrackFace.track_id.in_(track_ids)))
    return sorted(set(face_ids) | set(mates)), track_ids


def drop_tracks(session: Session, track_ids: list[int]) -> None:
    """Remove track rows (their faces are being erased in the same transaction)."""
    if track_ids:
        session.execute(delete(TrackFace).where(TrackFace.track_id.in_(track_ids)))
        session.execute(delete(TrackRecord).where(TrackRecord.id.in_(track_ids)))


def video_places(session: Session, face_ids: list[int]) -> dict[int, VideoPlace]:
    """face id -> where it lies in its video, for the faces of ``face_ids`` that come from one."""
    if not face_ids:
        return {}
    rows = session.execute(
        select(TrackFace.face_id, TrackFace.video_time, TrackRecord.start, TrackRecord.end, TrackRecord.id)
        .join(TrackRecord, TrackRecord.id == TrackFace.track_id)
        .where(TrackFace.face_id.in_(face_ids))
    ).all()
    return {face_id: VideoPlace(time, start, end, track) for face_id, time, start, end, track in rows}


def tracks_of(session: Session, image_id: int) -> list[TrackRecord]:
    """A video's tracks, in order of appearance."""
    return list(
        session.scalars(select(TrackRecord).where(TrackRecord.image_id == image_id).order_by(TrackRecord.start))
    )
