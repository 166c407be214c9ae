"""FaceMesh landmarks: refine BlazeFace's six coarse keypoints into the five alignment points.

BlazeFace has no mouth corners, and its eye points are coarse; aligning on FaceMesh's eye-contour
centres and true mouth corners is what lifts MobileFaceNet on LFW and frontal-profile pairs.
"""

from __future__ import annotations

import cv2
import numpy as np

from facefinder.vision.detect import Detection
from facefinder.vision.inference import FloatArray, ImageArray, OnnxModel

# FaceMesh indices: contour of the eye on the image's left (the subject's right), then the other.
LEFT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173]
RIGHT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398]
NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = 1, 61, 291


class FaceMesh(OnnxModel):
    """MediaPipe FaceMesh (468 points) on a 192x192 upright crop around a detection."""

    size = 192
    crop_scale = 1.5

    def five_points(self, image: ImageArray, detections: list[Detection]) -> list[FloatArray]:
        """Five alignment points per detection, in image coordinates, batched in one run."""
        if not detections:
            return []
        transforms = [self._crop_transform(d) for d in detections]
        crops = np.stack([
            cv2.warpAffine(image, m, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            for m in transforms
        ])
        mesh = self.run(crops.astype(np.float32) / 255.0)[0].reshape(len(detections), 468, 3)[:, :, :2]
        points = []
        for m, pts in zip(transforms, mesh):
            five = np.stack([
                pts[LEFT_EYE].mean(axis=0), pts[RIGHT_EYE].mean(axis=0),
                pts[NOSE_TIP], pts[MOUTH_LEFT], pts[MOUTH_RIGHT],
            ])
            inverse = cv2.invertAffineTransform(m)
            points.append((five @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32))
        return points

    def _crop_transform(self, detection: Detection) -> np.ndarray:
        """Image -> crop affine: centred on the box, rotated so the eyes are level, 1.5x the box."""
        x1, y1, x2, y2 = detection.box
        left_eye, right_eye = detection.keypoints[0], detection.keypoints[1]
        if left_eye[0] > right_eye[0]:  # keep the image-left eye first whatever the model's order
            left_eye, right_eye = right_eye, left_eye
        angle = np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0])
        side = self.crop_scale * max(x2 - x1, y2 - y1)
        scale = self.size / side
        cos, sin = scale * np.cos(angle), scale * np.sin(angle)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half = self.size / 2
        return np.array([
            [cos, sin, half - (cos * cx + sin * cy)],
            [-sin, cos, half - (-sin * cx + cos * cy)],
        ], dtype=np.float64)
