"""Face detectors: MediaPipe BlazeFace (default) and InsightFace-style SCRFD (user supplied)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facefinder.errors import ModelError
from facefinder.vision.inference import FloatArray, ImageArray, InferenceModel


@dataclass
class Detection:
    """A face found in an image, in that image's pixel coordinates: what every Detector returns."""

    box: FloatArray  # x1, y1, x2, y2
    score: float
    keypoints: FloatArray  # K x 2, model-specific (BlazeFace: 6 points, SCRFD: 5)
    five_points: FloatArray | None = None  # eye centres, nose tip, mouth corners, when known


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best first."""
    order = np.argsort(-scores)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while len(order):
        best, rest = order[0], order[1:]
        keep.append(int(best))
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        iou = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[iou < iou_threshold]
    return keep


def letterbox(image: ImageArray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Resize keeping aspect ratio and pad to size x size; returns image, scale, pad x, pad y."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    pad_x, pad_y = (size - new_w) / 2, (size - new_h) / 2
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = int(pad_y), int(pad_x)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, scale, float(left), float(top)


class BlazeFace(InferenceModel):
    """MediaPipe full-range BlazeFace: 192x192 input, 48x48 anchors, box + 6 keypoints.

    The default detector (a protocols.Detector). A single letterboxed pass sees faces down to roughly
    1/20 of the image's longer side; larger photos are also scanned in overlapping tiles so that faces
    in group photos are not missed.
    """

    size = 192
    grid = 48
    PADDED_SIDE = 768  # largest side a photo keeps for the padded second pass (4x the model's input)

    def __init__(self, path: str | Path, threads: int = 1, min_score: float = 0.6, iou: float = 0.3) -> None:
        super().__init__(path, threads)
        self.min_score, self.iou = min_score, iou
        cells = (np.arange(self.grid, dtype=np.float32) + 0.5) / self.grid
        ax, ay = np.meshgrid(cells, cells)
        self.anchors = np.stack([ax.ravel(), ay.ravel()], axis=1)

    def detect(self, image: ImageArray) -> list[Detection]:
        """Faces of the whole photo and its tiles, merged by NMS; a padded pass if none was found."""
        height, width = image.shape[:2]
        windows = [(0, 0, width, height)] + self._tiles(width, height)
        boxes: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        points: list[np.ndarray] = []
        for x0, y0, x1, y1 in windows:
            b, s, p = self._detect_window(image[y0:y1, x0:x1])
            inside = self._away_from_cut_edges(b, (x0, y0, x1, y1), width, height)
            b, s, p = b[inside], s[inside], p[inside]
            boxes.append(b + [x0, y0, x0, y0])
            points.append(p + [x0, y0])
            scores.append(s)
        all_boxes, all_scores, all_points = np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)
        if len(all_boxes) == 0:
            all_boxes, all_scores, all_points = self._detect_padded(image)
        keep = nms(all_boxes, all_scores, self.iou)
        return [Detection(all_boxes[i], float(all_scores[i]), all_points[i]) for i in keep]

    def _detect_padded(self, image: ImageArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Second chance for tight crops: a face filling the frame is only found with margin around it.

        A large photo is shrunk first: the padded canvas is letterboxed to 192 px anyway, and padding
        a 4096 px photo at full size would take 300 MB for nothing."""
        shrink = min(1.0, self.PADDED_SIDE / max(image.shape[:2]))
        if shrink < 1.0:
            image = cv2.resize(
                image,
                (max(1, round(image.shape[1] * shrink)), max(1, round(image.shape[0] * shrink))),
                interpolation=cv2.INTER_AREA,
            )
        height, width = image.shape[:2]
        fill = [int(v) for v in image.reshape(-1, 3).mean(axis=0)]
        for fraction in (0.75, 0.4):  # measured on tight 150x150 crops: 0.75 finds all, 0.4 the rest
            margin = int(max(height, width) * fraction)
            padded = cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=fill)
            boxes, scores, points = self._detect_window(padded)
            if len(boxes):
                break
        return (boxes - margin) / shrink, scores, (points - margin) / shrink

    @staticmethod
    def _away_from_cut_edges(
        boxes: np.ndarray, window: tuple[int, int, int, int], width: int, height: int
    ) -> np.ndarray:
        """Drop faces a tile cut in half: a box touching a tile edge that is not the photo's edge."""
        x0, y0, x1, y1 = window
        margin = 2.0
        ok = np.ones(len(boxes), dtype=bool)
        if x0 > 0:
            ok &= boxes[:, 0] > margin
        if y0 > 0:
            ok &= boxes[:, 1] > margin
        if x1 < width:
            ok &= boxes[:, 2] < (x1 - x0) - margin
        if y1 < height:
            ok &= boxes[:, 3] < (y1 - y0) - margin
        return ok

    def _tiles(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """Overlapping square tiles for photos where a face may be too small for one pass."""
        side = min(width, height)
        if max(width, height) < 640:
            return []
        tile = max(side // 2, 320)
        step = tile * 2 // 3
        tiles: list[tuple[int, int, int, int]] = []
        for y in range(0, max(height - tile, 0) + step, step):
            for x in range(0, max(width - tile, 0) + step, step):
                tiles.append(
                    (
                        min(x, width - tile),
                        min(y, height - tile),
                        min(x, width - tile) + tile,
                        min(y, height - tile) + tile,
                    )
                )
        return sorted(set(tiles))

    def _detect_window(self, image: ImageArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes, scores and six keypoints of one letterboxed pass, in ``image``'s pixels."""
        canvas, scale, pad_x, pad_y = letterbox(image, self.size)
        batch = canvas[None].astype(np.float32) / 127.5 - 1.0
        regressors, classifiers = self.run(batch)
        logits = np.clip(classifiers[0, :, 0], -100, 100)
        probs = 1 / (1 + np.exp(-logits))
        idx = np.nonzero(probs >= self.min_score)[0]
        raw = regressors[0, idx] / self.size
        centres = raw[:, :2] + self.anchors[idx]
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centres - half, centres + half], axis=1) * self.size
        points = (raw[:, 4:16].reshape(-1, 6, 2) + self.anchors[idx, None]) * self.size
        boxes = (boxes - [pad_x, pad_y, pad_x, pad_y]) / scale
        points = (points - [pad_x, pad_y]) / scale
        return boxes.astype(np.float32), probs[idx].astype(np.float32), points.astype(np.float32)


class Scrfd(InferenceModel):
    """InsightFace SCRFD detectors (det_500m ... det_10g): strides 8/16/32, box + 5 keypoints.

    Loads a user-supplied detector file (``FaceFinder(detector=...)``); satisfies protocols.Detector.
    """

    strides = (8, 16, 32)

    def __init__(
        self, path: str | Path, threads: int = 1, min_score: float = 0.5, iou: float = 0.4, size: int = 640
    ) -> None:
        super().__init__(path, threads)
        self.min_score, self.iou = min_score, iou
        self.size = self.input_size[0] or size
        outputs = len(self.output_names)
        if outputs not in (6, 9):
            raise ModelError(f"{path}: SCRFD has 6 or 9 outputs, this model has {outputs}")
        self.has_keypoints = outputs == 9
        self.anchors_per_cell = 2

    def detect(self, image: ImageArray) -> list[Detection]:
        """Faces of one letterboxed pass, with five points when the model has keypoint outputs."""
        canvas, scale, pad_x, pad_y = letterbox(image, self.size)
        outputs = self.run((canvas[None].astype(np.float32) - 127.5) / 128.0)
        count = len(self.strides)
        boxes: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        points: list[np.ndarray] = []
        for level, stride in enumerate(self.strides):
            score = outputs[level].reshape(-1)
            distance = outputs[level + count].reshape(-1, 4) * stride
            cells = self.size // stride
            ys, xs = np.mgrid[:cells, :cells]
            centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride
            centres = np.repeat(centres, self.anchors_per_cell, axis=0)
            keep = score >= self.min_score
            boxes.append(np.concatenate([centres - distance[:, :2], centres + distance[:, 2:]], axis=1)[keep])
            scores.append(score[keep])
            if self.has_keypoints:
                offsets = outputs[level + 2 * count].reshape(-1, 5, 2) * stride
                points.append((centres[:, None] + offsets)[keep])
            else:
                points.append(np.zeros((int(keep.sum()), 5, 2), dtype=np.float32))
        all_boxes = (np.concatenate(boxes) - [pad_x, pad_y, pad_x, pad_y]) / scale
        all_points = (np.concatenate(points) - [pad_x, pad_y]) / scale
        all_scores = np.concatenate(scores)
        keep = nms(all_boxes, all_scores, self.iou)
        return [
            Detection(
                all_boxes[i].astype(np.float32),
                float(all_scores[i]),
                all_points[i].astype(np.float32),
                all_points[i].astype(np.float32) if self.has_keypoints else None,
            )
            for i in keep
        ]
