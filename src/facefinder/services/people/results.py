"""What ``ff.people`` returns: plain records, so that the interfaces never touch a catalog row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime


@dataclass
class Member:
    """One face of a person: where its photo came from, the score that put it there, and who did."""

    face_id: int
    image_id: int
    source: str
    score: float  # cosine to the nearest member when it was assigned
    assigned_by: str  # "cluster" or the user who did
    quality: float
    box: list[float]

    def brief(self) -> dict:
        """The fields `people list --members` prints per face."""
        return {"face_id": self.face_id, "image_id": self.image_id, "source": self.source, "score": self.score}


@dataclass
class PersonInfo:
    """A person as the views show it: opted-out faces are never counted or listed."""

    person_id: int
    collection: str
    label: str | None
    confirmed: bool
    faces: int
    photos: int
    representative_face_id: int | None
    created_at: datetime
    updated_at: datetime
    members: list[Member] | None = None  # with ``members=True`` (list) and always from ``show``

    def to_dict(self, members: bool = True) -> dict:
        """JSON-ready: times as ISO 8601 (UTC); members in full unless ``members`` is False."""
        record = asdict(self)
        record["created_at"], record["updated_at"] = self.created_at.isoformat(), self.updated_at.isoformat()
        if not members or self.members is None:
            record.pop("members")
        return record

    def line(self, members: bool = False) -> dict:
        """One JSON Lines record of `people list`."""
        record = {
            "person_id": self.person_id,
            "label": self.label,
            "confirmed": self.confirmed,
            "faces": self.faces,
            "photos": self.photos,
            "representative_face_id": self.representative_face_id,
        }
        if members:
            record["members"] = [m.brief() for m in self.members or []]
        return record


@dataclass
class ClusterReport:
    """What one clustering run did in a collection, and with which settings."""

    collection: str
    full: bool
    method: str
    threshold: float
    quality_floor: float
    considered: int = 0  # faces looked at in this run
    below_quality: int = 0  # of those, left unassigned for their quality
    opted_out: int = 0  # of those, left out because they are on the opt-out list
    rejected: int = 0  # of those, left out because a human said they are not a person to group
    joined: int = 0  # faces that joined a person that existed before the run
    new_people: int = 0
    new_people_faces: int = 0
    unassigned: int = 0  # faces considered that no person took
    dropped_people: int = 0  # machine suggestions a full run removed before clustering again
    people: int = 0  # people in the collection after the run
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SplitResult:
    """A split: the person that kept the other faces, and the new person made of the faces taken out."""

    kept: PersonInfo
    split: PersonInfo

    def to_dict(self) -> dict:
        return {"kept": self.kept.to_dict(), "split": self.split.to_dict()}
