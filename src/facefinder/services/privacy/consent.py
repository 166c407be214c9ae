"""Consent records for consented galleries: who consented, when, to what, and withdrawal.

Photos link to a consent by the ``consent_id`` in their provenance (sidecar JSON or manifest). A
record here says who gave that consent, when, and its scope. Withdrawing it erases every photo that
carries the id (services/privacy/service.py does the erasing and the audit entry), and later ingests skip
photos that carry a withdrawn id, so a re-run of an old manifest cannot bring them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from facefinder.errors import FaceFinderError
from facefinder.storage.catalog import Catalog, ImageRecord
from facefinder.storage.privacy import ConsentRecord


@dataclass
class ConsentInfo:
    """A consent record as listed: who consented to what, and how many photos are held under it."""

    consent_id: str
    subject: str
    scope: str
    given_at: str
    collection: str | None
    recorded_at: datetime
    recorded_by: str
    withdrawn_at: datetime | None
    withdrawn_by: str | None
    withdrawal_note: str | None
    images: int  # photos held now that carry this consent id

    @property
    def withdrawn(self) -> bool:
        return self.withdrawn_at is not None


def record(
    catalog: Catalog,
    consent_id: str,
    subject: str,
    scope: str,
    given_at: str,
    actor: str,
    collection: str | None = None,
) -> None:
    for name, value in (("consent_id", consent_id), ("subject", subject), ("scope", scope), ("given_at", given_at)):
        if not value or not str(value).strip():
            raise FaceFinderError(f"{name}: required")
    try:
        datetime.fromisoformat(given_at)
    except ValueError:
        raise FaceFinderError(f"given_at: an ISO 8601 date or time, not {given_at!r}") from None
    with catalog.session() as session, session.begin():
        if session.get(ConsentRecord, consent_id) is not None:
            raise FaceFinderError(f"consent {consent_id!r} is already recorded")
        session.add(
            ConsentRecord(
                consent_id=consent_id.strip(),
                subject=subject.strip(),
                scope=scope.strip(),
                given_at=given_at,
                collection=collection,
                recorded_by=actor,
            )
        )


def listing(catalog: Catalog, consent_id: str | None = None) -> list[ConsentInfo]:
    with catalog.session() as session:
        query = select(ConsentRecord).order_by(ConsentRecord.consent_id)
        if consent_id is not None:
            query = query.where(ConsentRecord.consent_id == consent_id)
        records = list(session.scalars(query))
        counts = (
            dict(
                session.execute(
                    select(ImageRecord.consent_id, func.count())
                    .where(ImageRecord.consent_id.in_([r.consent_id for r in records]))
                    .group_by(ImageRecord.consent_id)
                ).all()
            )
            if records
            else {}
        )
    return [
        ConsentInfo(
            r.consent_id,
            r.subject,
            r.scope,
            r.given_at,
            r.collection,
            r.recorded_at,
            r.recorded_by,
            r.withdrawn_at,
            r.withdrawn_by,
            r.withdrawal_note,
            counts.get(r.consent_id, 0),
        )
        for r in records
    ]


def linked_images(catalog: Catalog, consent_id: str) -> list[int]:
    """Ids of the photos held that carry this consent id (any collection)."""
    with catalog.session() as session:
        return list(
            session.scalars(select(ImageRecord.id).where(ImageRecord.consent_id == consent_id).order_by(ImageRecord.id))
        )


def mark_withdrawn(catalog: Catalog, consent_id: str, actor: str, note: str | None, at: datetime) -> bool:
    """Record the withdrawal; a consent id never recorded gets a record that says so. Returns whether
    a record existed before."""
    with catalog.session() as session, session.begin():
        row = session.get(ConsentRecord, consent_id)
        existed = row is not None
        if row is None:
            row = ConsentRecord(
                consent_id=consent_id, subject="(not recorded)", scope="(not recorded)", given_at="", recorded_by=actor
            )
            session.add(row)
        if row.withdrawn_at is not None:
            raise FaceFinderError(f"consent {consent_id!r} was already withdrawn on {row.withdrawn_at:%Y-%m-%d}")
        row.withdrawn_at, row.withdrawn_by, row.withdrawal_note = at, actor, note
    return existed


def withdrawn_ids(catalog: Catalog) -> set[str]:
    """Consent ids that were withdrawn: ingest skips photos that carry one."""
    with catalog.session() as session:
        return set(session.scalars(select(ConsentRecord.consent_id).where(ConsentRecord.withdrawn_at.is_not(None))))
