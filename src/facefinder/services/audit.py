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
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import or_, select, update

from facefinder.errors import FieldError
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
        action_prefix: str | None = None,
        search_id: int | None = None,
    ) -> list[AuditEntry]:
        """Entries matching every filter given: ``action`` exactly, or ``action_prefix`` as the start of
        the action (``lead`` finds ``lead.propose`` and ``lead.confirm``); ``since``/``until`` are ISO 8601
        dates or times (UTC unless they say otherwise), inclusive to their precision (``until=2024-12-31``
        takes in that whole day); one that is not a date is a FieldError naming it. ``search_id``: the
        entries about that case search (its ``search`` entry, its views, its lead steps)."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc() if newest_first else AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        if action_prefix:
            query = query.where(AuditEntry.action.startswith(action_prefix.strip().lower(), autoescape=True))
        if actor:
            query = query.where(AuditEntry.actor == actor)
        if case_id:
            query = query.where(AuditEntry.case_id == case_id)
        low, high = time_bound(since, "since"), time_bound(until, "until", end=True)
        if low and high and low > high:
            raise FieldError("until", f"ends before since ({since}): nothing can match")
        if low:
            query = query.where(AuditEntry.at >= low)
        if high:
            query = query.where(AuditEntry.at <= high)
        if search_id is not None:  # details are canonical JSON: the key, then a comma or the closing brace
            key = f'"search_id":{int(search_id)}'
            query = query.where(or_(AuditEntry.details.contains(key + ","), AuditEntry.details.contains(key + "}")))
        if limit:
            query = query.limit(limit)
        with self.catalog.session() as session:
            return list(session.scalars(query))

    def actions(self) -> list[str]:
        """Every action the log holds, sorted: what the action filter can name."""
        with self.catalog.session() as session:
            return sorted(session.scalars(select(AuditEntry.action).distinct()))

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


# What one more unit of a bound's precision is: "2024-12-31" runs to the end of that day, "...T23:59" to
# the end of that minute. Keyed by the length of the date-and-time part that was given.
_PRECISION = {10: timedelta(days=1), 13: timedelta(hours=1), 16: timedelta(minutes=1), 19: timedelta(seconds=1)}
TIME_EXAMPLE = "use ISO 8601, e.g. 2024-01-31 or 2024-01-31T14:30 (UTC unless an offset is given)"


def time_bound(value: str | None, name: str, end: bool = False) -> str | None:
    """A since/until filter as the log stores times (ISO 8601 in UTC, microseconds), so that the text
    comparison is a time comparison; ``end``: the last microsecond the value covers. A value that is not
    a date or time is a FieldError on ``name`` (a filter that silently matched nothing would mislead)."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
    except ValueError:
        raise FieldError(name, f"{value!r} is not a date or time: {TIME_EXAMPLE}") from None
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    day, _, clock = text.replace(" ", "T", 1).partition("T")
    clock = re.sub(r"(Z|[+-]\d{2}(:?\d{2})?)$", "", clock)  # the offset says nothing of the precision
    step = None if "." in clock else _PRECISION.get(len(day) + (len(clock) + 1 if clock else 0))
    if end and step:
        moment += step - timedelta(microseconds=1)
    return moment.isoformat(timespec="microseconds")


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


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A value as a CSV cell that no spreadsheet runs: one starting like a formula gets a leading ``'``.

    Anyone can put text into the log (a failed sign-in writes the username it was given as the
    actor), and an auditor opens the export in a spreadsheet. The CSV is a view for people; the
    JSON export keeps every value as stored, and the hash chain is verified from that.
    """
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def export_csv(entries: list[AuditEntry]) -> str:
    """The entries as CSV for a spreadsheet, every cell neutralised (see csv_cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "at", "actor", "action", "case_id", "details", "prev_hash", "hash"])
    for e in entries:
        row = [e.id, e.at, e.actor, e.action, e.case_id, e.details, e.prev_hash, e.hash]
        writer.writerow([csv_cell(value) for value in row])
    return buffer.getvalue()


class OncePer:
    """Which keys were claimed in the last ``window`` seconds, so that a repeated view is logged once.

    A results page fetches many thumbnails and a reload fetches them again; logging each request
    would bury what an auditor needs (who looked at which search, when) under near-identical rows.
    Held in memory only, at most ``capacity`` keys (the oldest forgotten first): after a restart or
    under pressure a view can be logged twice, never not at all.
    """

    def __init__(self, window: float = 600.0, capacity: int = 10_000) -> None:
        self.window, self.capacity = window, capacity
        self._claimed: OrderedDict[tuple, float] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: tuple) -> bool:
        """True (and the key is claimed) when ``key`` was not claimed within the window."""
        now = time.monotonic()
        with self._lock:
            while self._claimed and now - next(iter(self._claimed.values())) > self.window:
                self._claimed.popitem(last=False)
            if key in self._claimed:
                return False
            self._claimed[key] = now
            while len(self._claimed) > self.capacity:
                self._claimed.popitem(last=False)
            return True

    def release(self, key: tuple) -> None:
        """Forget a claim whose entry could not be written, so that the next view writes it."""
        with self._lock:
            self._claimed.pop(key, None)
