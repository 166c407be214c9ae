"""A face the detector missed, drawn by a user as a box on its photo: aligned, embedded and scored as
ingest does it (vision/pipeline.py), so it is searched and clustered like any other face.

The box only says where to look. Inside it the landmarker (FaceMesh) is asked whether it sees a face
(its face-presence output, at the 0.3 the profile pass uses: vision/fallback.py) and for the five
alignment points; when it sees none, or its points fall outside the box, the face is aligned by the box
itself (the alignment template stretched over the box's square), and ``aligned_by`` says "box": such an
embedding is rougher, and its quality score (with the presence as its detection part) says so too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefinder.errors import FaceFinderError, FieldError, ImageError, NotFound
from facefinder.services.server.pictures import PHOTO_MAX_SIDE, SHOWN_WORK_PIXELS
from facefinder.services.sources import archives
from facefinder.services.sources.folders import read_source
from facefinder.storage.catalog import FaceRecord, ImageRecord
from facefinder.vision.align import align_face
from facefinder.vision.detect import Detection
from facefinder.vision.image import DEFAULT_MAX_PIXELS, Decoded, decode_photo, encode_jpeg
from facefinder.vision.pipeline import FacePipeline
from facefinder.vision.quality import face_quality

PRESENCE_FLOOR = 0.3  # FaceMesh face presence at which the box is taken to hold a face (fallback.py's)
MIN_SIDE = 12  # pixels: a smaller box holds too little of a face to align or embed
# The five points (eyes, nose tip, mouth corners) in a face box's square, 0..1 (see ``_by_box``).
IN_BOX = np.array([[0.310, 0.318], [0.690, 0.318], [0.500, 0.562], [0.333, 0.717], [0.667, 0.717]])


@dataclass
class DrawnFace:
    """What the vision side made of a drawn box, ready to store (catalog row fields, photo pixels)."""

    row: FaceRecord
    aligned_by: str  # "landmarks" | "box"
    presence: float


def read_photo(
    image: ImageRecord, fenced: Sequence[str | Path] = (), max_pixels: int = DEFAULT_MAX_PIXELS, shown: bool = False
) -> Decoded:
    """The photo an image row was ingested from, read through the server's fences, and only if it is
    still the very photo (its SHA-256): a box drawn on another picture would make a false face."""
    gone = NotFound(f"the source photo of image {image.id} is no longer readable where it was ingested from")
    try:
        data = read_source(image.source, fenced)
    except (*archives.ARCHIVE_ERRORS, ImageError, FaceFinderError, OSError):
        raise gone from None
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise NotFound(f"the photo of image {image.id} changed since it was ingested")
    try:
        return decode_photo(data, image.source, max_pixels, **({"work_pixels": SHOWN_WORK_PIXELS} if shown else {}))
    except ImageError:
        raise gone from None


def shown_jpeg(photo: Decoded) -> bytes:
    """The photo as the drawing page shows it: at most PHOTO_MAX_SIDE on its longest side."""
    from PIL import Image

    picture = Image.fromarray(photo.image)
    longest = max(picture.size)
    if longest > PHOTO_MAX_SIDE:
        scale = PHOTO_MAX_SIDE / longest
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    return encode_jpeg(np.asarray(picture), quality=88)


def checked_box(box: list[float], width: int, height: int) -> np.ndarray:
    """A drawn box in the photo's own pixels, clipped to the photo; refused when too small."""
    if len(box) != 4:
        raise FieldError("box", "four numbers: x1, y1, x2, y2 in the photo's pixels")
    x1, y1, x2, y2 = np.clip(np.asarray(box, dtype=np.float64), 0, [width, height, width, height])
    if x2 - x1 < MIN_SIDE or y2 - y1 < MIN_SIDE:
        raise FieldError("box", f"at least {MIN_SIDE} pixels wide and high, inside the photo")
    return np.array([x1, y1, x2, y2], dtype=np.float32)


def analyse(pipeline: FacePipeline, photo: Decoded, box: np.ndarray, image: ImageRecord, model_id: str) -> DrawnFace:
    """Align, embed and score the face in ``box`` (photo pixels) as ingest would; see the module docstring."""
    sx, sy = photo.scale
    work = box / np.array([sx, sy, sx, sy], dtype=np.float32)  # in the decoded image's pixels
    five, aligned_by, presence = _five_points(pipeline, photo.image, work)
    crop = align_face(photo.image, five)
    vector = pipeline.recognizer.embed([crop])[0]
    quality = face_quality(five, crop, presence)
    photo_five = five * np.array([sx, sy], dtype=np.float32)
    row = FaceRecord(
        image_id=image.id,
        collection_id=image.collection_id,
        box=[round(float(v), 2) for v in box],
        landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in photo_five],
        detector_score=round(presence, 4),
        quality=round(quality.score, 4),
        quality_parts=quality.as_dict(),
        model_id=model_id,
        embedding=np.asarray(vector, dtype=np.float32).tobytes(),
        thumbnail=encode_jpeg(crop),
    )
    return DrawnFace(row, aligned_by, presence)


def _five_points(pipeline: FacePipeline, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, str, float]:
    """(five points, "landmarks" or "box", face presence) for a box in ``image``'s pixels."""
    mesh = pipeline.landmarker
    presence_of: Callable | None = getattr(mesh, "presence", None)
    if mesh is not None and presence_of is not None:
        presence = float(presence_of(image, [box])[0])
        if presence >= PRESENCE_FLOOR:
            eyes = _by_box(box)[:2]  # where eyes usually lie in a box: FaceMesh's crop is set from them
            guess = Detection(box=box, score=presence, keypoints=eyes)
            five = np.asarray(mesh.five_points(image, [guess])[0], dtype=np.float32)
            fitted = _box_of(five)  # a loose box misplaces FaceMesh's crop: once more, on the face's own box
            refit = Detection(box=fitted, score=presence, keypoints=_by_box(fitted)[:2])
            five = np.asarray(mesh.five_points(image, [refit])[0], dtype=np.float32)
            if _inside(five, box):
                return five, "landmarks", presence
        return _by_box(box), "box", presence
    return _by_box(box), "box", 1.0


def _box_of(five: np.ndarray) -> np.ndarray:
    """The box in which these five points would lie where they usually do (``IN_BOX``)."""
    eyes = five[:2].mean(axis=0)
    mouth = five[3:].mean(axis=0)
    side = float(np.linalg.norm(mouth - eyes)) / (IN_BOX[3:, 1].mean() - IN_BOX[:2, 1].mean())
    left, top = eyes[0] - 0.5 * side, eyes[1] - IN_BOX[:2, 1].mean() * side
    return np.array([left, top, left + side, top + side], dtype=np.float32)


def _inside(points: np.ndarray, box: np.ndarray, margin: float = 0.15) -> bool:
    x1, y1, x2, y2 = box
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    return bool(
        np.all(points[:, 0] >= x1 - mx)
        and np.all(points[:, 0] <= x2 + mx)
        and np.all(points[:, 1] >= y1 - my)
        and np.all(points[:, 1] <= y2 + my)
    )


def _by_box(box: np.ndarray) -> np.ndarray:
    """The five points where they usually lie in a face's box, over the box's centred square: alignment
    by the box itself. ``IN_BOX`` is the median over 325 BlazeFace faces of LFW, mirrored to be
    symmetric; the ArcFace template itself stretched over the box matched far worse (docs/people.md)."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    left, top = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
    return (IN_BOX * side + np.array([left, top])).astype(np.float32)
