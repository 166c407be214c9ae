"""Alignment: a least-squares similarity transform of five points onto the ArcFace template."""

from __future__ import annotations

import cv2
import numpy as np

from facefinder.vision.inference import FloatArray, ImageArray

# The standard 112x112 five-point template (eye centres, nose tip, mouth corners).
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(source: FloatArray, target: np.ndarray = TEMPLATE_112) -> np.ndarray:
    """Umeyama's least-squares rotation + uniform scale + translation, as a 2x3 matrix."""
    src = np.asarray(source, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), target.mean(axis=0)
    src_c, dst_c = src - src_mean, target - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rotation = u @ d @ vt
    scale = np.trace(np.diag(singular) @ d) / src_c.var(axis=0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def align_face(image: ImageArray, five_points: FloatArray, size: int = 112) -> ImageArray:
    """The aligned size x size crop the recognizer expects."""
    matrix = similarity_transform(five_points, TEMPLATE_112 * (size / 112))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
