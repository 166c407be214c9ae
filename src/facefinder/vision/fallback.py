"""A second detection pass for the faces the first detector misses, mostly profiles.

BlazeFace finds no face in 181 of CFP's 1,000 profile photos at its 0.6 score floor: a face turned
90 degrees scores 0.2-0.6, where face-free clutter (hands, clothes, noise) scores too. Lowering the floor
for every photo would add false faces everywhere; so the second pass runs only on photos where the first
found nothing, and what it proposes is confirmed by a second model (FaceMesh's face-presence output)
before it counts. Photos where the first pass found a face cost nothing extra. Measured in
benchmarks/profiles.py, figures in docs/benchmarks.md ("Profile faces").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facefinder.vision.detect import BlazeFace, Detection, nms
from facefinder.vision.inference import ImageArray
from facefinder.vision.landmarks import FaceMesh
from facefinder.vision.protocols import Detector


class FallbackDetector:
    """``primary``'s faces; ``secondary``'s only for a photo where ``primary`` found none ``min_face`` tall.

    A protocols.Detector. ``path`` is the primary's, so FacePipeline.model_id (stored with every face)
    does not change: the fallback adds faces to photos that had none, in the same embedding space.
    """

    def __init__(self, primary: Detector, secondary: Detector, min_face: int = 0) -> None:
        self.primary, self.secondary, self.min_face = primary, secondary, min_face

    @property
    def path(self) -> str | Path:
        """The primary detector's file: model ids stay those of collections filled before the fallback."""
        return self.primary.path

    def detect(self, image: ImageArray) -> list[Detection]:
        """The primary's faces, or when it found none large enough to keep, the secondary's."""
        found = self.primary.detect(image)
        if any(d.box[3] - d.box[1] >= self.min_face for d in found):
            return found
        return self.secondary.detect(image)


class ProfileDetector:
    """BlazeFace at a low score floor on the photo and its mirror image, each face confirmed by FaceMesh.

    A protocols.Detector meant as FallbackDetector's second pass. The mirror image helps because
    BlazeFace is not symmetric: a right-facing profile it scores 0.3 may score 0.6 facing left. The
    padded pass (BlazeFace._detect_padded) always runs too, as a low floor lets clutter stop BlazeFace
    before it pads a tight crop. At a 0.2 floor alone BlazeFace "finds" a face in 222 of 296 face-free
    images; the presence check (FaceMesh, best of six crops, at least ``min_presence``) rejects all of
    them while keeping 150 of the 181 CFP profiles the first pass missed (benchmarks/profiles.py).
    """

    def __init__(
        self,
        path: str | Path,
        mesh: FaceMesh,
        threads: int = 1,
        min_score: float = 0.2,
        min_presence: float = 0.3,
        most: int = 6,
        min_face: int = 0,
    ) -> None:
        self.blazeface = BlazeFace(path, threads, min_score)
        self.mesh, self.min_presence, self.most, self.min_face = mesh, min_presence, most, min_face

    @property
    def path(self) -> str | Path:
        """The BlazeFace file it runs."""
        return self.blazeface.path

    def detect(self, image: ImageArray) -> list[Detection]:
        """The confirmed faces among the ``most`` best-scoring proposals (after NMS)."""
        candidates = [d for d in self.proposals(image) if d.box[3] - d.box[1] >= self.min_face]
        if not candidates:
            return []
        keep = nms(np.stack([d.box for d in candidates]), np.array([d.score for d in candidates]), self.blazeface.iou)
        best = [candidates[i] for i in keep[: self.most]]
        presence = self.mesh.presence(image, [d.box for d in best])
        return [d for d, p in zip(best, presence) if p >= self.min_presence]

    def proposals(self, image: ImageArray) -> list[Detection]:
        """Low-floor BlazeFace faces, whole-photo and padded, of the photo and of its mirror image."""
        width = image.shape[1]
        found: list[Detection] = []
        for mirrored in (False, True):
            view = np.ascontiguousarray(image[:, ::-1]) if mirrored else image
            boxes, scores, points = self.blazeface._detect_padded(view)
            dets = self.blazeface.detect(view) + [Detection(b, float(s), p) for b, s, p in zip(boxes, scores, points)]
            for det in dets:
                if mirrored:
                    box, kps = det.box.copy(), det.keypoints.copy()
                    box[[0, 2]] = width - det.box[[2, 0]]
                    kps[:, 0] = width - kps[:, 0]
                    det = Detection(box, det.score, kps)
                found.append(det)
        return found
