"""What the face store takes in and hands out (plain records, no catalog rows), and the rule every
collection's policy must meet."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facefinder.errors import CatalogError, MissingPolicy

PROVENANCE_FIELDS = ("source_url", "captured_at", "case_id", "consent_id", "notes")
POLICY_FIELDS = ("purpose", "legal_basis", "retention_days")  # every collection needs all three


@dataclass
class NewFace:
    """One detected face to store: where it is, how good it is, its embedding and its thumbnail."""

    box: list[float]
    landmarks: list[list[float]]
    detector_score: float
    quality: float
    quality_parts: dict[str, float]
    embedding: np.ndarray
    thumbnail: bytes
    video_place: tuple[int, float] | None = None  # a video's face: (its track's number in NewImage.tracks, time)


@dataclass
class NewImage:
    """One photo to store, identified by its content hash; ``provenance`` keys are PROVENANCE_FIELDS."""

    sha256: str
    source: str
    width: int
    height: int
    provenance: dict[str, str] = field(default_factory=dict)
    tracks: list = field(default_factory=list)  # a video's face tracks (storage/video.py NewTrack)


@dataclass
class Problem:
    """One thing ``FaceStore.check`` found wrong, in one line; ``repaired`` once ``check(repair=True)`` fixed it."""

    kind: str  # catalog-damaged | catalog-lost-data | index-damaged | index-mismatch | orphan-index-file |
    #            erasure-pending
    message: str
    collection: str | None = None
    repaired: bool = False


@dataclass
class CollectionInfo:
    """A collection as listed: its policy and how many images, faces and failed ingests it holds."""

    id: int
    name: str
    description: str
    model_id: str | None
    images: int
    faces: int
    failures: int
    purpose: str | None = None
    legal_basis: str | None = None
    retention_days: int | None = None


def check_policy(
    name: str, purpose: str | None, legal_basis: str | None, retention_days: int | None
) -> tuple[str, str, int]:
    """A collection's purpose, legal basis and retention period (days), all required."""
    given = dict(zip(POLICY_FIELDS, (purpose, legal_basis, retention_days)))
    missing = tuple(
        key for key, value in given.items() if value is None or (isinstance(value, str) and not value.strip())
    )
    if missing:
        raise MissingPolicy(name, missing)
    try:
        days = int(retention_days)
    except (TypeError, ValueError):
        raise CatalogError(f"retention_days: a whole number of days, not {retention_days!r}") from None
    if days < 1 or days != retention_days:
        raise CatalogError(f"retention_days: a whole number of days, at least 1, not {retention_days!r}")
    return purpose.strip(), legal_basis.strip(), days
