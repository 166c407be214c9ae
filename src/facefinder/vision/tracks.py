"""Face tracking: the faces of sampled video frames linked into tracks, one per appearance of a face.

A face joins the open track whose last box it overlaps and whose identity it resembles (IoU plus
embedding similarity), or, without overlap, a track of the same identity seen within ``max_gap``
seconds (the face moved fast, or a scene cut showed it from another camera). Matching is greedy,
best pair first; a face can join one track and a track takes one face per frame. A track that has
not been seen for ``max_gap`` seconds is closed and handed on, so memory holds only open tracks and
each keeps only its ``keep`` best faces by quality.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from facefinder.vision.inference import FloatArray

FaceT = TypeVar("FaceT")  # the pipeline's Face, or anything with .box, .embedding and .quality.score

MIN_IOU = 0.2  # boxes overlapping this much (and alike, below) are one face moving
SAME_FACE = 0.35  # embedding cosine with overlap: low, the box overlap already says much
SAME_IDENTITY = 0.55  # embedding cosine without overlap: a face re-found after a jump or a cut
MAX_GAP = 2.0  # seconds a track may go unseen before it is closed
KEEP = 3  # best faces kept per track


@dataclass
class Track(Generic[FaceT]):
    """One appearance of a face: first and last time seen, frames seen in, and its best faces."""

    start: float
    end: float
    box: FloatArray  # the last box seen
    identity: FloatArray  # running mean of the embeddings seen, L2-normalised
    frames: int = 1
    kept: list[tuple[float, FaceT]] = field(default_factory=list)  # (time, face), best quality first

    def add(self, time: float, face: FaceT, keep: int) -> None:
        self.end, self.box, self.frames = time, np.asarray(face.box, np.float32), self.frames + 1
        mean = self.identity * (self.frames - 1) + np.asarray(face.embedding, np.float32)
        self.identity = mean / max(float(np.linalg.norm(mean)), 1e-9)
        self._keep(time, face, keep)

    def _keep(self, time: float, face: FaceT, keep: int) -> None:
        self.kept.append((time, face))
        self.kept.sort(key=lambda pair: -pair[1].quality.score)
        del self.kept[keep:]


def iou(a: FloatArray, b: FloatArray) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class Tracker(Generic[FaceT]):
    """Feed it each sampled frame's faces in time order (``step``); closed tracks come back as they close."""

    def __init__(self, max_gap: float = MAX_GAP, keep: int = KEEP) -> None:
        self.max_gap, self.keep = max_gap, keep
        self.open: list[Track[FaceT]] = []

    def step(self, time: float, faces: list[FaceT]) -> list[Track[FaceT]]:
        """Link one frame's faces; returns the tracks closed by this frame's time."""
        closed = [t for t in self.open if time - t.end > self.max_gap]
        self.open = [t for t in self.open if time - t.end <= self.max_gap]
        pairs = []
        for ti, track in enumerate(self.open):
            for fi, face in enumerate(faces):
                similarity = float(np.dot(track.identity, face.embedding))
                overlap = iou(track.box, face.box)
                if (overlap >= MIN_IOU and similarity >= SAME_FACE) or similarity >= SAME_IDENTITY:
                    pairs.append((overlap + similarity, ti, fi))
        used_tracks, used_faces = set(), set()
        for _, ti, fi in sorted(pairs, reverse=True):
            if ti in used_tracks or fi in used_faces:
                continue
            used_tracks.add(ti)
            used_faces.add(fi)
            self.open[ti].add(time, faces[fi], self.keep)
        for fi, face in enumerate(faces):
            if fi not in used_faces:
                embedding = np.asarray(face.embedding, np.float32)
                track = Track(
                    time, time, np.asarray(face.box, np.float32), embedding / max(np.linalg.norm(embedding), 1e-9)
                )
                track._keep(time, face, self.keep)
                self.open.append(track)
        return closed

    def finish(self) -> list[Track[FaceT]]:
        """Every track still open (the video ended)."""
        closed, self.open = self.open, []
        return closed


def track_faces(
    frames: Iterable[tuple[float, list[FaceT]]], max_gap: float = MAX_GAP, keep: int = KEEP
) -> Iterator[Track[FaceT]]:
    """The tracks of a stream of (time, faces) frames, each as soon as it is closed."""
    tracker: Tracker[FaceT] = Tracker(max_gap, keep)
    for time, faces in frames:
        yield from tracker.step(time, faces)
    yield from tracker.finish()
