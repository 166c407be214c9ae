"""What the privacy operations return: the matches found for a person, an erasure's count, a new opt-out.

Kept apart from ``service.py`` so that the interfaces can name them without the operations; they are
still importable from ``facefinder.services.privacy.service``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from facefinder.services.search import Match


@dataclass
class PersonMatches:
    """Step one of erasure by person: the faces held that match the person's face, for review."""

    probe_sha256: str
    threshold: float
    matches: list[Match]
    # The person's face template (never in to_dict): erasure also empties case probes that were them.
    embedding: np.ndarray | None = field(default=None, repr=False)
    model_id: str | None = None
    expanded: bool = False  # listed by services/privacy/expansion.py (each match a Listed, saying why)

    @property
    def face_ids(self) -> list[int]:
        return [m.face_id for m in self.matches]

    def to_dict(self) -> dict:
        return {
            "probe_sha256": self.probe_sha256,
            "threshold": self.threshold,
            "expanded": self.expanded,
            "matches": [m.to_dict() for m in self.matches],
        }


@dataclass
class Erasure:
    """What an erasure removed: faces, photos, and the case records it emptied."""

    faces: int  # faces erased
    images: int  # photos erased (with their rows and provenance)
    face_ids: list[int] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)
    wal: tuple[int, int, int] | None = None  # SQLite wal_checkpoint(TRUNCATE): (busy, frames, checkpointed)
    case_searches: list[int] = field(default_factory=list)  # case searches whose probe face was emptied
    case_probe_photos: list[int] = field(default_factory=list)  # ... whose kept probe photo showed the person
    upload_copies: int = 0  # unnamed upload copies zeroed and removed

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class OptOutResult:
    """A new opt-out: its id, its templates, and the faces already held that match it."""

    id: int
    templates: int
    matches: list[Match]  # faces held now that match: for an admin to review, then erase
    photo_deleted: bool = False
