"""The seams of the vision layer: what FacePipeline needs from a detector, a landmarker and a recognizer.

FacePipeline (pipeline.py) is written once against these protocols; the shipped models (BlazeFace +
FaceMesh + MobileFaceNet) and user-supplied ONNX files (SCRFD, ArcFace-style recognizers) are classes
that satisfy them. A new model is a class with these members (a plain attribute will do for a
property), passed to ``FacePipeline(...)``; it need not subclass anything. The protocols are
runtime-checkable: ``isinstance(model, Detector)`` checks that the members exist, not their types.

The pipeline's contract around them:

* ``Detector.detect`` finds faces in an upright H x W x 3 RGB uint8 image, in that image's pixels.
  When a detection comes without ``five_points``, the ``Landmarker`` supplies them.
* Faces are aligned onto the 112x112 ArcFace template (align.py) whatever the recognizer, so
  ``Recognizer.embed`` receives 112x112 crops.
* ``FacePipeline.model_id`` is ``"<detector path stem>+<recognizer path stem>"``; it is stored with
  every face, and a collection is searched only with the models that filled it. Hence ``path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from facefinder.vision.detect import Detection
from facefinder.vision.inference import FloatArray, ImageArray

__all__ = ["Detection", "Detector", "Landmarker", "Recognizer"]


@runtime_checkable
class Detector(Protocol):
    """Finds faces in a photo: boxes, confidences and keypoints (BlazeFace, Scrfd)."""

    @property
    def path(self) -> str | Path:
        """The model file; its stem is the first half of FacePipeline.model_id."""

    def detect(self, image: ImageArray) -> list[Detection]:
        """Every face in ``image`` (H x W x 3 RGB uint8, upright), in the image's pixel coordinates."""


@runtime_checkable
class Landmarker(Protocol):
    """Supplies the five alignment points a detector does not give (FaceMesh, for BlazeFace)."""

    def five_points(self, image: ImageArray, detections: list[Detection]) -> list[FloatArray]:
        """One 5 x 2 array per detection (eye centres, nose tip, mouth corners), in image coordinates."""


@runtime_checkable
class Recognizer(Protocol):
    """Turns aligned face crops into identity vectors (embed.RecognizerModel: MobileFaceNet, ArcFace models)."""

    @property
    def path(self) -> str | Path:
        """The model file; its stem is the second half of FacePipeline.model_id."""

    @property
    def dim(self) -> int:
        """The length of each embedding."""

    def embed(self, crops: Sequence[ImageArray] | ImageArray) -> FloatArray:
        """N aligned 112x112 RGB uint8 crops -> N x dim L2-normalised float32 vectors (0 x dim for none)."""
