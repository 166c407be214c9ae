"""The audit log: append-only and hash-chained, so that any edit, removal or reordering shows.

Each entry's hash covers its own fields and the previous entry's hash; a ``audit_head`` setting,
updated in the same transaction, records the last id and hash so that cutting entries off the end
is caught too. ``verify`` walks the chain and names the first entry that does not fit.
This makes tampering evident, not impossible: someone who can rewrite the database can rewrite the
whole chain. Export the head hash elsewhere (``facefinder audit head``) to pin it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select, update

from facefinder.storage.catalog import AuditEntry, Catalog, Setting

GENESIS = "0" * 64
HEAD_KEY = "audit_head"


def _canonical(details: dict[str, Any]) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(entry_id: int, at: str, actor: str, action: str, case_id: str | None, details: str, prev: str) -> str:
    payload = json.dumps([entry_id, at, actor, action, case_id, details, prev], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class Problem:
    """A break in the hash chain: which entry, and how the chain broke there."""

    entry_id: int
    problem: str  # "edited", "removed or reordered", "missing at the end"

    def __str__(self) -> str:
        return f"entry {self.entry_id}: {self.problem}"


class AuditLog:
    """The append-only, hash-chained audit log: every search, erasure and change names who, when and why."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def record(self, actor: str, action: str, case_id: str | None = None, **details: Any) -> AuditEntry:
        """Append one entry; serialised by locking the head row, so concurrent writers chain correctly."""
        with self.catalog.session() as session, session.begin():
            # Take the write lock before reading the head (SQLite would otherwise let two writers read
            # the same head); on PostgreSQL this locks the head row as well.
            session.execute(update(Setting).where(Setting.key == HEAD_KEY).values(value=Setting.value))
            head = session.scalars(select(Setting).where(Setting.key == HEAD_KEY).with_for_update()).first()
            if head is None:
                head = Setting(key=HEAD_KEY, value=json.dumps({"id": 0, "hash": GENESIS}))
                session.add(head)
                session.flush()
            last = json.loads(head.value)
            at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
            body = _canonical(details)
            entry = AuditEntry(
                at=at, actor=actor, action=action, case_id=case_id, details=body, prev_hash=last["hash"], hash=""
            )
            session.add(entry)
            session.flush()  # assigns the id, which the hash covers
            entry.hash = entry_hash(entry.id, at, actor, action, case_id, body, last["hash"])
            head.value = json.dumps({"id": entry.id, "hash": entry.hash})
            return entry

    def entries(
        self,
        action: str | None = None,
        actor: str | None = None,
        case_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        query = select(AuditEntry).order_by(AuditEntry.id.desc() if newest_first else AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        if actor:
            query = query.where(AuditEntry.actor == actor)
        if case_id:
            query = query.where(AuditEntry.case_id == case_id)
        if since:
            query = query.where(AuditEntry.at >= since)
        if until:
            query = query.where(AuditEntry.at <= until)
        if limit:
            query = query.limit(limit)
        with self.catalog.session() as session:
            return list(session.scalars(query))

    def verify(self) -> list[Problem]:
        """Every place the chain breaks; an empty list means the log is intact."""
        problems: list[Problem] = []
        prev_hash, prev_id = GENESIS, 0
        for entry in self.entries():
            if entry.prev_hash != prev_hash or entry.id != prev_id + 1:
                problems.append(Problem(entry.id, "an entry before it was removed, altered or reordered"))
            expected = entry_hash(
                entry.id, entry.at, entry.actor, entry.action, entry.case_id, entry.details, entry.prev_hash
            )
            if entry.hash != expected:
                problems.append(Problem(entry.id, "edited (its contents do not match its hash)"))
            prev_hash, prev_id = entry.hash, entry.id
        head = json.loads(self.catalog.get_setting(HEAD_KEY, json.dumps({"id": 0, "hash": GENESIS})))
        if (head["id"], head["hash"]) != (prev_id, prev_hash):
            problems.append(Problem(head["id"], f"the log should end at entry {head['id']} but ends at {prev_id}"))
        return problems

    def head(self) -> dict[str, Any]:
        return json.loads(self.catalog.get_setting(HEAD_KEY, json.dumps({"id": 0, "hash": GENESIS})))


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "case_id": entry.case_id,
        "details": json.loads(entry.details),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def export_csv(entries: list[AuditEntry]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "at", "actor", "action", "case_id", "details", "prev_hash", "hash"])
    for e in entries:
        writer.writerow([e.id, e.at, e.actor, e.action, e.case_id or "", e.details, e.prev_hash, e.hash])
    return buffer.getvalue()
