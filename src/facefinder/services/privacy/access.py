"""Subject access: what is held on a person, found by a photo of them, as one JSON-ready report.

``Privacy.subject_access`` is the entry (it checks the approval, finds the person's face and the
matching faces held); this module builds the report from them, one section at a time: per face, its
collection's purpose, legal basis and retention, its photo's source and provenance, the consent it
rests on, and every logged search that returned it. interfaces/web/documents.py renders it as HTML.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from facefinder.errors import FaceFinderError
from facefinder.services.audit import AuditLog
from facefinder.services.calibration import PRIVACY_FMR
from facefinder.services.privacy import optout as optouts
from facefinder.services.privacy.consent import ConsentInfo
from facefinder.services.privacy.retention import expires_at
from facefinder.services.search import Match
from facefinder.services.server import uploads
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Collection, ImageRecord
from facefinder.storage.people import DrawnFace, FaceRejection, Person, PersonFace

if TYPE_CHECKING:
    from facefinder.services.privacy.service import Photo, Privacy

NOTES = [
    "Matching is by face similarity: a face scoring at or above the threshold is listed. A photo of "
    "this person can be missed (below the threshold), and a lookalike can be listed.",
    "facefinder holds no copy of photos ingested from folders ('source' is where each was ingested "
    "from; photos uploaded through the server, shown as 'upload:<file>!<member>', are kept under its "
    "uploads folder). It holds the face's position, quality, a small aligned crop (shown) and a "
    "numeric template (not shown).",
    "'searches' lists each logged search that returned the face, with its case and purpose.",
]


def subject_access(
    privacy: Privacy, photo: Photo, approved_by: str, face: int | None, threshold: float | None, actor: str
) -> dict:
    """The report on the person in ``photo``, logged as ``access.export`` (see ``Privacy.subject_access``).

    An export needs an admin's approval (``approved_by``); ``actor`` is who requested it."""
    if not approved_by or not approved_by.strip():
        raise FaceFinderError("approved_by: a subject access export needs an admin's approval")
    subject, digest = privacy.subject_face(photo, face)
    threshold = privacy.threshold if threshold is None else threshold
    matches = privacy.find(subject.embedding, None, threshold)
    held = held_faces(privacy, matches)
    listed = _optout_listed(privacy, subject.embedding)
    report = {
        "kind": "facefinder subject access report",
        "generated_at": utcnow().isoformat(timespec="seconds") + "Z",
        "requested_by": actor,
        "approved_by": approved_by.strip(),
        "probe_sha256": digest,
        "threshold": threshold,
        "threshold_false_match_rate": _false_match_rate(privacy, threshold),
        "on_optout_list": listed,
        "faces": held,
        "notes": list(NOTES),
    }
    privacy.audit.record(
        actor,
        "access.export",
        probe_sha256=digest,
        approved_by=approved_by.strip(),
        threshold=threshold,
        faces=len(held),
        face_ids=[h["face_id"] for h in held],
    )
    return report


def held_faces(privacy: Privacy, matches: list[Match]) -> list[dict]:
    """One entry per matching face: the face, its collection, its photo, its consent, its searches."""
    rows = privacy.store.faces([m.face_id for m in matches])
    with privacy.store.catalog.session() as session:
        policies = {c.name: c for c in session.scalars(select(Collection))}
    searches = searches_returning(privacy.audit, {m.face_id for m in matches})
    consent_ids = sorted({m.provenance["consent_id"] for m in matches if m.provenance.get("consent_id")})
    consent_info = {c.consent_id: c for cid in consent_ids for c in privacy.consents(cid)}
    people = _people_of(privacy, [m.face_id for m in matches])
    reviews = _reviews_of(privacy, [m.face_id for m in matches])
    held = []
    for m in matches:
        record, image, _ = rows[m.face_id]
        policy = policies.get(m.collection)
        held.append(
            {
                **_face_section(m, record.thumbnail),
                "collection": _collection_section(m.collection, policy),
                "image": _image_section(image, policy, m.provenance, privacy.store.data_dir),
                "consent": _consent_section(consent_info.get(m.provenance.get("consent_id") or "")),
                "searches": searches.get(m.face_id, []),
                "person": people.get(m.face_id),
                "review": reviews.get(m.face_id, {"drawn": None, "rejections": []}),
            }
        )
    return held


def _people_of(privacy: Privacy, face_ids: list[int]) -> dict[int, dict]:
    """face id -> the person it is grouped into (services/people/): a label a user gave is personal
    data held about the subject too, and so is being grouped with other faces."""
    with privacy.store.catalog.session() as session:
        rows = session.execute(
            select(PersonFace.face_id, Person.id, Person.label, Person.confirmed, PersonFace.assigned_by)
            .join(Person, Person.id == PersonFace.person_id)
            .where(PersonFace.face_id.in_(face_ids))
        ).all()
    return {
        r.face_id: {"person_id": r.id, "label": r.label, "confirmed": r.confirmed, "assigned_by": r.assigned_by}
        for r in rows
    }


def _reviews_of(privacy: Privacy, face_ids: list[int]) -> dict[int, dict]:
    """face id -> what users did with it in the people review (services/people/review.py): who drew it,
    if a user added it by hand, and each "not this person" / "not a person to group", by whom."""
    found: dict[int, dict] = {}
    with privacy.store.catalog.session() as session:
        for drawn in session.scalars(select(DrawnFace).where(DrawnFace.face_id.in_(face_ids))):
            found.setdefault(drawn.face_id, {"drawn": None, "rejections": []})["drawn"] = {
                "added_by": drawn.added_by,
                "added_at": drawn.added_at.isoformat(),
                "aligned_by": drawn.aligned_by,
            }
        for no in session.scalars(select(FaceRejection).where(FaceRejection.face_id.in_(face_ids))):
            found.setdefault(no.face_id, {"drawn": None, "rejections": []})["rejections"].append(
                {"person_id": no.person_id, "rejected_by": no.rejected_by, "rejected_at": no.rejected_at.isoformat()}
            )
    return found


def _face_section(m: Match, thumbnail: bytes) -> dict:
    return {
        "face_id": m.face_id,
        "score": m.score,
        "false_match_rate": m.false_match_rate,
        "box": m.box,
        "quality": m.quality,
        "thumbnail_jpeg_base64": base64.b64encode(thumbnail).decode(),
    }


def _collection_section(name: str, policy: Collection | None) -> dict:
    """The collection's purpose, legal basis and retention (None where it has no such policy row)."""
    return {
        "name": name,
        "purpose": policy.purpose if policy else None,
        "legal_basis": policy.legal_basis if policy else None,
        "retention_days": policy.retention_days if policy else None,
    }


def _image_section(image: ImageRecord, policy: Collection | None, provenance: dict, data_dir: Path) -> dict:
    """The photo: where it was ingested from (an upload by its name, never its server path), when, and
    when it expires under the retention period."""
    expiry = expires_at(image.ingested_at, policy.retention_days if policy else None)
    return {
        "id": image.id,
        "source": uploads.display_name(image.source, data_dir),
        "sha256": image.sha256,
        "width": image.width,
        "height": image.height,
        "ingested_at": image.ingested_at.isoformat(timespec="seconds"),
        "expires_at": expiry.isoformat(timespec="seconds") if expiry else None,
        "provenance": provenance,
    }


def _consent_section(consent: ConsentInfo | None) -> dict | None:
    """The consent record the photo rests on (its provenance names it), withdrawn or not."""
    if consent is None:
        return None
    return {
        "consent_id": consent.consent_id,
        "subject": consent.subject,
        "scope": consent.scope,
        "given_at": consent.given_at,
        "withdrawn_at": consent.withdrawn_at.isoformat(timespec="seconds") if consent.withdrawn_at else None,
    }


def _false_match_rate(privacy: Privacy, threshold: float) -> float:
    """The false match rate at ``threshold``: the calibrated ``PRIVACY_FMR`` at the privacy threshold."""
    if threshold == privacy.threshold:
        return PRIVACY_FMR
    return float(f"{privacy.calibration.false_match_rate(threshold):.2e}")


def _optout_listed(privacy: Privacy, embedding: np.ndarray) -> int | None:
    """The opt-out whose templates match the person's face, or None."""
    screen = optouts.screen_for(privacy.store.catalog)
    return int(screen.match(embedding[None], privacy.pipeline.model_id)[0]) or None


def searches_returning(audit: AuditLog, face_ids: set[int]) -> dict[int, list[dict]]:
    """face id -> the logged searches whose candidates included it."""
    found: dict[int, list[dict]] = {}
    if not face_ids:
        return found
    for entry in audit.entries(action="search"):
        details = json.loads(entry.details)
        for pair in details.get("candidates") or []:
            face_id, score = pair[0], pair[1]
            if face_id in face_ids:
                found.setdefault(face_id, []).append(
                    {
                        "audit_id": entry.id,
                        "at": entry.at,
                        "actor": entry.actor,
                        "case_id": entry.case_id,
                        "purpose": details.get("purpose"),
                        "score": score,
                    }
                )
    return found
