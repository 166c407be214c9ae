"""The server's ingest jobs in the catalog (``ingest_jobs``), so that the job list outlives a restart.

A job's row is written when it is queued, as it runs (at most once a second) and when it ends. It
names the server process running it (``uploads.this_process``): a job left queued or running by a
process that is gone (its server stopped or crashed) can never end, and is shown as
``interrupted``, for good, when a server starts or lists the jobs. Rows go with their collection
(the foreign key cascades) and past the newest ``keep`` finished jobs.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, select

from facefinder.services.server import uploads
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Catalog, IngestJobRecord

log = logging.getLogger(__name__)

OPEN = ("queued", "running")
INTERRUPTED = (
    "the server stopped before this job ended; ingest the same files again to finish it "
    "(photos already stored are skipped as duplicates)"
)


def save(catalog: Catalog, record: dict[str, Any]) -> None:
    """Write a job (``IngestJob.to_record()``), inserting or updating its row."""
    with catalog.session() as session, session.begin():
        row = session.get(IngestJobRecord, record["id"])
        if row is None:
            row = IngestJobRecord(
                id=record["id"],
                collection_id=record["collection_id"],
                owner_id=record["owner_id"],
                created_at=_naive(record["created_at"]),
            )
            session.add(row)
        row.state, row.job = record["state"], dict(record)


def load(catalog: Catalog, job_id: str) -> dict[str, Any] | None:
    """A job's record, or None."""
    with catalog.session() as session:
        row = session.get(IngestJobRecord, job_id)
        return _record(row) if row is not None else None


def listing(catalog: Catalog, owner_id: int | None, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs (of one owner, or all), newest first."""
    query = select(IngestJobRecord).order_by(IngestJobRecord.created_at.desc(), IngestJobRecord.id).limit(limit)
    if owner_id is not None:
        query = query.where(IngestJobRecord.owner_id == owner_id)
    with catalog.session() as session:
        return [_record(row) for row in session.scalars(query)]


def interrupt_gone(catalog: Catalog) -> int:
    """Mark as interrupted every open job whose server process is gone; returns how many."""
    with catalog.session() as session, session.begin():
        rows = list(session.scalars(select(IngestJobRecord).where(IngestJobRecord.state.in_(OPEN))))
        gone = [row for row in rows if uploads.process_gone(str((row.job or {}).get("process", "")))]
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for row in gone:
            row.state = "interrupted"
            row.job = {**(row.job or {}), "state": "interrupted", "error": INTERRUPTED, "finished_at": finished}
        return len(gone)


def prune(catalog: Catalog, keep: int) -> int:
    """Delete the finished jobs past the newest ``keep``; returns how many."""
    with catalog.session() as session, session.begin():
        old = list(
            session.scalars(
                select(IngestJobRecord.id)
                .where(IngestJobRecord.state.not_in(OPEN))
                .order_by(IngestJobRecord.created_at.desc(), IngestJobRecord.id)
                .offset(keep)
            )
        )
        if old:
            session.execute(delete(IngestJobRecord).where(IngestJobRecord.id.in_(old)))
        return len(old)


def _record(row: IngestJobRecord) -> dict[str, Any]:
    return {**(row.job or {}), "id": row.id, "state": row.state, "owner_id": row.owner_id}


def _naive(stamp: str | None) -> datetime:
    """An ISO 8601 time as the catalog stores times: naive UTC."""
    if not stamp:
        return utcnow()
    parsed = datetime.fromisoformat(stamp)
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed
