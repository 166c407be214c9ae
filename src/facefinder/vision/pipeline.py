"""The vision pipeline: photo -> every face in it, aligned, quality-scored and embedded.

Faces from many photos are landmarked and embedded in shared batches: per-face work dominates,
and batching it is what makes ingest fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefinder.errors import ModelError
from facefinder.vision.align import align_face
from facefinder.vision.detect import BlazeFace, Detection, Scrfd
from facefinder.vision.embed import RecognizerModel
from facefinder.vision.fallback import FallbackDetector, ProfileDetector
from facefinder.vision.image import Decoded
from facefinder.vision.inference import FloatArray, ImageArray
from facefinder.vision.landmarks import FaceMesh
from facefinder.vision.models import model_path, require_models
from facefinder.vision.protocols import Detector, Landmarker, Recognizer
from facefinder.vision.quality import Quality, face_quality

DEFAULT_MIN_FACE = 20  # pixels of box height; smaller faces carry too little identity to search


@dataclass
class Face:
    """One face of a photo as the pipeline hands it on: where it is, how good it is, and its identity."""

    box: FloatArray  # x1, y1, x2, y2 in the upright photo
    score: float  # detector confidence
    landmarks: FloatArray  # 5 x 2: eye centres, nose tip, mouth corners
    quality: Quality
    embedding: FloatArray
    aligned: ImageArray  # the 112x112 crop that was embedded; kept as the thumbnail


@dataclass
class PipelineTimings:
    """Seconds spent per stage, summed over calls; the throughput benchmark reads these."""

    detect: float = 0.0
    align: float = 0.0
    embed: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: {"images": 0, "faces": 0})


class FacePipeline:
    """Photo -> faces, written once against the Detector / Landmarker / Recognizer seams (protocols.py).

    Any models that satisfy the protocols plug in; ``default`` builds the shipped or user-supplied ones.
    """

    detector: Detector
    recognizer: Recognizer
    landmarker: Landmarker | None  # None when the detector gives five points itself
    min_face: int
    timings: PipelineTimings
    model_id: str  # "<detector>+<recognizer>" file stems, stored with every face

    def __init__(
        self,
        detector: Detector,
        recognizer: Recognizer,
        landmarker: Landmarker | None = None,
        min_face: int = DEFAULT_MIN_FACE,
    ) -> None:
        self.detector, self.recognizer, self.landmarker = detector, recognizer, landmarker
        self.min_face = min_face
        self.timings = PipelineTimings()
        self.model_id = f"{Path(detector.path).stem}+{Path(recognizer.path).stem}"

    @classmethod
    def default(
        cls,
        models_dir: Path,
        threads: int = 1,
        detector: str | None = None,
        recognizer: str | None = None,
        flip: bool = False,
        mesh_passes: int = 1,
    ) -> FacePipeline:
        """The shipped models, or user-supplied ONNX detector / recognizer files.

        With the shipped detector, photos where BlazeFace finds no face get a second pass
        (fallback.ProfileDetector) that finds most profiles; a user-supplied detector runs alone."""
        if detector is None or recognizer is None:
            require_models(models_dir)
        scrfd = Scrfd(detector, threads) if detector else None
        rec = RecognizerModel(recognizer or model_path(models_dir, "mobilefacenet"), threads, flip=flip)
        mesh = None
        if not (scrfd and scrfd.has_keypoints):
            mesh_path = model_path(models_dir, "facemesh")
            if not mesh_path.is_file():
                raise ModelError(
                    f"{detector} gives no five-point landmarks, and the FaceMesh model that would "
                    f"supply them is not in {models_dir}: run `facefinder models fetch`"
                )
            mesh = FaceMesh(mesh_path, threads, mesh_passes)
        if scrfd is not None:
            return cls(scrfd, rec, mesh)
        assert mesh is not None  # the shipped detector gives no five points
        blazeface = model_path(models_dir, "blazeface_full_range")
        det = FallbackDetector(
            BlazeFace(blazeface, threads),
            ProfileDetector(blazeface, mesh, threads, min_face=DEFAULT_MIN_FACE),
            DEFAULT_MIN_FACE,
        )
        return cls(det, rec, mesh)

    def analyze(self, images: list[ImageArray]) -> list[list[Face]]:
        """Every face of every image, in the images' order."""
        import time

        started = time.perf_counter()
        detections = [self._detect(image) for image in images]
        detected = time.perf_counter()
        points = [self._five_points(image, dets) for image, dets in zip(images, detections)]
        crops = [[align_face(image, p) for p in pts] for image, pts in zip(images, points)]
        aligned = time.perf_counter()
        flat = [crop for per_image in crops for crop in per_image]
        vectors = self.recognizer.embed(flat)
        embedded = time.perf_counter()
        results, cursor = [], 0
        for image, dets, pts, image_crops in zip(images, detections, points, crops):
            faces = []
            height, width = image.shape[:2]
            for det, five, crop in zip(dets, pts, image_crops):
                box = np.clip(det.box, 0, [width, height, width, height]).astype(np.float32)
                faces.append(Face(box, det.score, five, face_quality(five, crop, det.score), vectors[cursor], crop))
                cursor += 1
            results.append(faces)
        t = self.timings
        t.detect += detected - started
        t.align += aligned - detected
        t.embed += embedded - aligned
        t.counts["images"] += len(images)
        t.counts["faces"] += cursor
        return results

    def analyze_decoded(self, photos: list[Decoded]) -> list[list[Face]]:
        """Every face of photos decoded at a bounded size (vision/image.py decode_photo), with boxes and
        landmarks in the photo's own pixels, whatever size it was analysed at."""
        results = self.analyze([photo.image for photo in photos])
        for photo, faces in zip(photos, results):
            sx, sy = photo.scale
            if (sx, sy) == (1.0, 1.0):
                continue
            for face in faces:
                face.box = (face.box * np.array([sx, sy, sx, sy], dtype=np.float32)).astype(np.float32)
                face.landmarks = face.landmarks * np.array([sx, sy], dtype=np.float32)
        return results

    def _detect(self, image: ImageArray) -> list[Detection]:
        """The detector's faces at least ``min_face`` pixels tall."""
        return [d for d in self.detector.detect(image) if d.box[3] - d.box[1] >= self.min_face]

    def _five_points(self, image: ImageArray, detections: list[Detection]) -> list[FloatArray]:
        """The alignment points of each detection: the detector's own, else the landmarker's."""
        if all(d.five_points is not None for d in detections):
            return [d.five_points for d in detections if d.five_points is not None]  # all of them
        if self.landmarker is None:
            raise ValueError(f"{self.detector.path} gives no five-point landmarks and no landmarker is set")
        return self.landmarker.five_points(image, detections)
