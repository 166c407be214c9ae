"""The hash-chained audit log: appends chain, and any edit, removal or reordering is caught."""

from sqlalchemy import delete, update

from facefinder.services.audit import AuditLog
from facefinder.storage.catalog import AuditEntry, Catalog


def make_log(tmp_path, n=5) -> AuditLog:
    log = AuditLog(Catalog(f"sqlite:///{tmp_path / 'audit.db'}"))
    for i in range(n):
        log.record("alice", "search", case_id="K-1", probe_sha256=f"{i:064d}")
    return log


def test_intact_log_verifies(tmp_path):
    log = make_log(tmp_path)
    assert log.verify() == []
    entries = log.entries()
    assert [e.id for e in entries] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:]))
    assert log.head() == {"id": 5, "hash": entries[-1].hash}


def test_edit_is_caught(tmp_path):
    log = make_log(tmp_path)
    with log.catalog.session() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.id == 3).values(actor="mallory"))
    problems = log.verify()
    assert [p.entry_id for p in problems] == [3] and "edited" in problems[0].problem


def test_removal_is_caught(tmp_path):
    log = make_log(tmp_path)
    with log.catalog.session() as s, s.begin():
        s.execute(delete(AuditEntry).where(AuditEntry.id == 2))
    assert [p.entry_id for p in log.verify()] == [3]


def test_removing_the_last_entries_is_caught(tmp_path):
    log = make_log(tmp_path)
    with log.catalog.session() as s, s.begin():
        s.execute(delete(AuditEntry).where(AuditEntry.id >= 4))
    problems = log.verify()
    assert len(problems) == 1 and "should end at entry 5" in problems[0].problem


def test_swapping_two_entries_is_caught(tmp_path):
    log = make_log(tmp_path)
    with log.catalog.session() as s, s.begin():
        a, b = s.get(AuditEntry, 2), s.get(AuditEntry, 3)
        fields = ("at", "actor", "action", "case_id", "details", "prev_hash", "hash")
        va, vb = ({f: getattr(x, f) for f in fields} for x in (a, b))
        for f in fields:
            setattr(a, f, vb[f])
            setattr(b, f, va[f])
    assert log.verify() != []
