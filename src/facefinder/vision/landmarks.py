"""FaceMesh landmarks: refine BlazeFace's six coarse keypoints into the five alignment points.

BlazeFace has no mouth corners, and its eye points are coarse; aligning on FaceMesh's eye-contour
centres and true mouth corners is what lifts MobileFaceNet on LFW and frontal-profile pairs.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facefinder.vision.detect import Detection
from facefinder.vision.inference import FloatArray, ImageArray, InferenceModel

# FaceMesh indices: contour of the eye on the image's left (the subject's right), then the other.
LEFT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173]
RIGHT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398]
NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = 1, 61, 291
# (size x the box's longer side, sideways shift x that side) of the crops ``presence`` tries.
PRESENCE_CROPS = [(scale, shift) for scale in (1.0, 1.4) for shift in (-0.2, 0.0, 0.2)]


class FaceMesh(InferenceModel):
    """MediaPipe FaceMesh (468 points) on a 192x192 upright crop around a detection.

    It exists because BlazeFace gives no five alignment points; it satisfies protocols.Landmarker.
    """

    size = 192
    crop_scale = 1.5

    def __init__(self, path: str | Path, threads: int = 1, passes: int = 1) -> None:
        super().__init__(path, threads)
        self.passes = passes  # 2 = re-crop around the first pass's mesh, as MediaPipe's tracker does

    def five_points(self, image: ImageArray, detections: list[Detection]) -> list[FloatArray]:
        """Five alignment points per detection, in image coordinates, batched in one run."""
        if not detections:
            return []
        transforms = [self._crop_transform(d.box, d.keypoints[0], d.keypoints[1]) for d in detections]
        for _ in range(self.passes):
            meshes = self._mesh(image, transforms)
            transforms = [
                self._crop_transform(
                    np.r_[m.min(axis=0), m.max(axis=0)], m[LEFT_EYE].mean(axis=0), m[RIGHT_EYE].mean(axis=0)
                )
                for m in meshes
            ]
        return [
            np.stack(
                [m[LEFT_EYE].mean(axis=0), m[RIGHT_EYE].mean(axis=0), m[NOSE_TIP], m[MOUTH_LEFT], m[MOUTH_RIGHT]]
            ).astype(np.float32)
            for m in meshes
        ]

    def presence(
        self, image: ImageArray, boxes: list[FloatArray], crops: list[tuple[float, float]] = PRESENCE_CROPS
    ) -> FloatArray:
        """How sure the mesh model is that each box holds a face (0-1): its face-presence output, best
        of a few crops around the box, to confirm a doubtful detection (fallback.ProfileDetector).

        One crop centred on the box misses many true profiles, whose detector box sits off the
        head: two sizes x three sideways shifts found 146 of 181 missed CFP profiles, one crop 130,
        and neither accepted any of 296 face-free images at 0.3 (benchmarks/profiles.py)."""
        if not boxes:
            return np.zeros(0, np.float32)
        transforms = []
        for x1, y1, x2, y2 in boxes:
            side, cy = max(x2 - x1, y2 - y1), (y1 + y2) / 2
            for scale, shift in crops:
                cx, half = (x1 + x2) / 2 + shift * side, scale * side / 2
                square = np.array([cx - half, cy - half, cx + half, cy + half])
                transforms.append(self._crop_transform(square, np.array([cx - half, cy]), np.array([cx + half, cy])))
        batch = np.stack([cv2.warpAffine(image, m, (self.size, self.size)) for m in transforms])
        logits = np.clip(self.run(batch.astype(np.float32) / 255.0)[1].reshape(len(boxes), -1), -100, 100)
        return (1 / (1 + np.exp(-logits))).max(axis=1).astype(np.float32)

    def _mesh(self, image: ImageArray, transforms: list[np.ndarray]) -> list[np.ndarray]:
        """The 468 mesh points for each crop transform, mapped back to image coordinates."""
        crops = np.stack(
            [
                cv2.warpAffine(image, m, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                for m in transforms
            ]
        )
        mesh = self.run(crops.astype(np.float32) / 255.0)[0].reshape(len(transforms), 468, 3)[:, :, :2]
        meshes = []
        for m, pts in zip(transforms, mesh):
            inverse = cv2.invertAffineTransform(m)
            meshes.append(pts @ inverse[:, :2].T + inverse[:, 2])
        return meshes

    def _crop_transform(self, box: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray) -> np.ndarray:
        """Image -> crop affine: centred on the box, rotated so the eyes are level, 1.5x the box."""
        x1, y1, x2, y2 = box
        if left_eye[0] > right_eye[0]:  # keep the image-left eye first whatever the model's order
            left_eye, right_eye = right_eye, left_eye
        angle = np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0])
        side = self.crop_scale * max(x2 - x1, y2 - y1)
        scale = self.size / side
        cos, sin = scale * np.cos(angle), scale * np.sin(angle)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half = self.size / 2
        return np.array(
            [
                [cos, sin, half - (cos * cx + sin * cy)],
                [-sin, cos, half - (-sin * cx + cos * cy)],
            ],
            dtype=np.float64,
        )
