"""A face quality score in [0, 1]: is this face worth searching with, or trusting as a match?

Four cheap signals, each mapped to [0, 1] and combined by geometric mean so that any one very bad
signal (a 10-pixel face, heavy blur, a profile, a doubtful detection) pulls the score down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from facefinder.vision.inference import FloatArray, ImageArray


@dataclass
class Quality:
    """The four signals and their combined score, reported with each face (ingest records, search probes)."""

    size: float  # inter-ocular distance: 0 at <= 8 px, 1 at >= 40 px
    sharpness: float  # variance of the Laplacian on the aligned crop
    pose: float  # frontalness, from the nose's offset between the eyes
    detection: float  # detector confidence
    score: float
    # Head turn in degrees, signed (positive: the nose lies toward the image's right of the eyes' midpoint),
    # from the same offset as ``pose``: a nose tip about half the eye distance in front of the eye line
    # gives offset = tan(yaw) / 2. A rough estimate, not a measurement: profiles' points are themselves
    # guesses; kept with each face (quality_parts) so that searches and reviews can tell a turned face.
    yaw: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Every field rounded to 4 places (yaw: degrees, to 0.1), for JSON."""
        return {k: round(v, 1 if k == "yaw" else 4) for k, v in asdict(self).items()}


def face_quality(five_points: FloatArray, aligned: ImageArray, detection_score: float) -> Quality:
    """Score a face from its five points, its aligned crop and the detector's confidence."""
    left_eye, right_eye, nose = five_points[0], five_points[1], five_points[2]
    eye_distance = float(np.linalg.norm(right_eye - left_eye))
    size = float(np.clip((eye_distance - 8) / 32, 0, 1))
    gray = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    laplacian_var = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    sharpness = laplacian_var / (laplacian_var + 100.0)
    eye_axis = (right_eye - left_eye) / max(eye_distance, 1e-6)
    offset = float(np.dot(nose - (left_eye + right_eye) / 2, eye_axis)) / max(eye_distance, 1e-6)
    pose = float(np.clip(1 - abs(offset) / 0.6, 0, 1))
    yaw = float(np.degrees(np.arctan(2 * offset)))
    detection = float(np.clip(detection_score, 0, 1))
    parts = np.array([size, sharpness, pose, detection])
    score = float(np.exp(np.log(np.maximum(parts, 1e-3)).mean()))
    return Quality(size, sharpness, pose, detection, score, yaw)
