"""Errors a user can meet, each naming the file or field it is about."""

from __future__ import annotations


class FaceFinderError(Exception):
    """Base class: every error facefinder raises on purpose."""


class ImageError(FaceFinderError):
    """An input file could not be used as a photo.

    ``reason`` is one of: ``not-an-image``, ``corrupt``, ``truncated``, ``too-large``,
    ``unreadable``, ``bad-sidecar``. It is stable and documented, so reports and scripts can group by it.
    """

    def __init__(self, source: str, reason: str, detail: str = "") -> None:
        self.source, self.reason, self.detail = source, reason, detail
        super().__init__(f"{source}: {reason}" + (f" ({detail})" if detail else ""))


class ModelError(FaceFinderError):
    """A model file is missing, fails its checksum, or has a shape we cannot use."""


class CatalogError(FaceFinderError):
    """The catalog was asked for something it does not hold (unknown collection, face...)."""


class NotFound(FaceFinderError):
    """The record asked for does not exist, or is not visible to the one asking."""


class Conflict(FaceFinderError):
    """The request clashes with the state of a record (a taken name, a lead already confirmed...)."""
