"""Recognizers: aligned 112x112 face crops -> L2-normalised embeddings.

MobileFaceNet (the default) and InsightFace-style ArcFace models share one convention: RGB input,
(x - 127.5) / scale. Any ONNX recognizer with a 4-d image input and a flat output loads here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facefinder.errors import ModelError
from facefinder.vision.inference import FloatArray, ImageArray, InferenceModel

# Faces per recognizer call. Measured on 2 cores, one thread (benchmarks/embed_batch.py): on onnxruntime
# MobileFaceNet costs 8.2-8.8 ms a face at 1-4, 10.4 at 8, 13.2 at 32 and 15.1 at 64: large batches only
# spill caches. On LiteRT (a slower machine) 8.1-8.6 at 1-8: 4 suits both.
EMBED_BATCH = 4


class RecognizerModel(InferenceModel):
    """Any face recognizer file (MobileFaceNet, ArcFace-style ONNX) behind one preprocessing convention.

    The one concrete protocols.Recognizer: the shipped model and user-supplied files both load here.
    """

    def __init__(self, path: str | Path, threads: int = 1, pixel_scale: float = 128.0, flip: bool = False) -> None:
        super().__init__(path, threads)
        self.pixel_scale = pixel_scale
        self.flip = flip  # test-time flip fusion: embed the mirror image too and add
        self.size = self.input_size[0] or 112
        shape = self.session.output_shapes[0]
        dim = shape[-1] if shape else None
        if dim is None:
            raise ModelError(f"{path}: the embedding's length must be fixed; the first output has no last dimension")
        self.dim = dim

    def embed(self, crops: Sequence[ImageArray] | np.ndarray, batch_size: int = EMBED_BATCH) -> FloatArray:
        """N aligned crops -> N x dim unit vectors (float32)."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        faces = (np.asarray(crops, dtype=np.float32) - 127.5) / self.pixel_scale
        chunks = [self._forward(faces[i : i + batch_size]) for i in range(0, len(faces), batch_size)]
        vectors = np.concatenate(chunks)
        return normalise(vectors)

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        """Raw embeddings of one batch (with flip fusion, the sum of both unit vectors)."""
        vectors = self.run(faces)[0].reshape(len(faces), -1)
        if self.flip:
            vectors = normalise(vectors) + normalise(self.run(faces[:, :, ::-1])[0].reshape(len(faces), -1))
        return vectors


def normalise(vectors: np.ndarray) -> FloatArray:
    """Each row scaled to unit length, as float32 (an all-zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
