"""Retention: every collection has a purpose, a legal basis and a retention period; the purge enforces it.

A photo expires ``retention_days`` after it was ingested (``images.ingested_at``). ``run_purge``
erases every expired photo with its faces, thumbnails and vectors (as erasure does: rows overwritten
by SQLite's secure_delete, index files rewritten with the old bytes zeroed, the WAL emptied), and
writes one ``purge`` entry to the audit log. ``Privacy.purge`` calls it: ``facefinder purge``
(by hand or from cron) and ``POST /api/privacy/purge`` run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from facefinder.services.audit import AuditLog
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Collection, FaceRecord, ImageRecord
from facefinder.storage.store import FaceStore


@dataclass
class CollectionPurge:
    """One collection's part of a purge: its retention period, the cutoff and what expired."""

    collection: str
    retention_days: int | None  # None: the collection has no retention period yet (made before they existed)
    cutoff: str | None  # photos ingested before this (UTC) have expired
    images: int = 0
    faces: int = 0
    image_ids: list[int] = field(default_factory=list)


@dataclass
class PurgeReport:
    """What a purge erased (or, on a dry run, would erase), per collection."""

    at: str
    dry_run: bool
    collections: list[CollectionPurge]
    images: int
    faces: int
    seconds: float

    @property
    def unmanaged(self) -> list[str]:
        """Collections without a retention period: nothing in them expires until one is set."""
        return [c.collection for c in self.collections if c.retention_days is None]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["unmanaged"] = self.unmanaged
        return data


def expires_at(ingested_at: datetime, retention_days: int | None) -> datetime | None:
    return ingested_at + timedelta(days=retention_days) if retention_days else None


def run_purge(
    store: FaceStore,
    audit: AuditLog,
    after_erasure: Callable[[], object],
    actor: str,
    now: datetime | None = None,
    dry_run: bool = False,
) -> PurgeReport:
    """Erase every photo older than its collection's retention period; logged. Safe to run at any time.

    ``now`` (UTC, naive) defaults to the current time; ``dry_run`` only reports what would go.
    ``after_erasure`` stamps case records and compacts once photos went (``Privacy.after_erasure``);
    ``actor`` is who the audit entry names (the server passes e.g. "system:purge").
    """
    started = time.perf_counter()
    now = now or utcnow()
    plans = plan_purge(store, now)
    images, faces = apply_purge(store, plans, dry_run)
    if images and not dry_run:
        after_erasure()  # case candidates stamped, upload copies scrubbed, then compacted
    report = PurgeReport(
        now.isoformat(timespec="seconds"), dry_run, plans, images, faces, round(time.perf_counter() - started, 3)
    )
    _audit_purge(audit, actor, report)
    return report


def plan_purge(store: FaceStore, now: datetime) -> list[CollectionPurge]:
    """Per collection (by name), what has expired at ``now``: nothing is erased here."""
    with store.catalog.session() as session:
        collections = list(session.scalars(select(Collection).order_by(Collection.name)))
        return [_plan_collection(session, c, now) for c in collections]


def _plan_collection(session: Session, collection: Collection, now: datetime) -> CollectionPurge:
    """The photos of ``collection`` ingested before its cutoff; none without a retention period."""
    if not collection.retention_days:
        return CollectionPurge(collection.name, None, None)
    cutoff = now - timedelta(days=collection.retention_days)
    image_ids = list(
        session.scalars(
            select(ImageRecord.id)
            .where(ImageRecord.collection_id == collection.id, ImageRecord.ingested_at < cutoff)
            .order_by(ImageRecord.id)
        )
    )
    faces = (
        len(session.scalars(select(FaceRecord.id).where(FaceRecord.image_id.in_(image_ids))).all()) if image_ids else 0
    )
    return CollectionPurge(
        collection.name,
        collection.retention_days,
        cutoff.isoformat(timespec="seconds"),
        len(image_ids),
        faces,
        image_ids,
    )


def apply_purge(store: FaceStore, plans: list[CollectionPurge], dry_run: bool) -> tuple[int, int]:
    """Erase the planned photos (unless ``dry_run``); each plan then holds what its collection lost
    (on a dry run, what it would lose). Returns the totals (images, faces)."""
    images = faces = 0
    for plan in plans:
        if plan.image_ids and not dry_run:
            plan.images, plan.faces = store.delete_images(plan.image_ids)
        images += plan.images
        faces += plan.faces
    return images, faces


def _audit_purge(audit: AuditLog, actor: str, report: PurgeReport) -> None:
    """One ``purge`` entry, with each collection's cutoff and the photo ids it lost."""
    audit.record(
        actor,
        "purge",
        dry_run=report.dry_run,
        as_of=report.at,
        images=report.images,
        faces=report.faces,
        collections=[
            {
                "collection": p.collection,
                "retention_days": p.retention_days,
                "cutoff": p.cutoff,
                "images": p.images,
                "faces": p.faces,
                "image_ids": p.image_ids,
            }
            for p in report.collections
        ],
    )
