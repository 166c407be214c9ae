"""``facefinder check``: is everything stored still sound, and can it be repaired from the catalog?

The store checks itself (catalog integrity, index == catalog, checkpoint checksums, a catalog that
lost committed data, stray index files: ``FaceStore.check``); this adds what lives beside it: the
audit log's hash chain (reported, never "repaired": a broken chain is evidence) and uploaded files
that no photo names. The check itself is audited.
"""

from __future__ import annotations

from facefinder.services.server import uploads
from facefinder.storage.store import Problem


def check(finder, repair: bool = False) -> list[Problem]:
    """Every problem found, one line each; with ``repair`` each one that can be fixed is (``repaired``)."""
    problems = finder.store.check(repair=repair)
    problems += [Problem("audit-chain", f"audit log entry {p.entry_id}: {p.problem}") for p in finder.audit.verify()]
    problems += _orphan_uploads(finder.store, repair)
    finder.audit.record(
        finder.actor,
        "store.check",
        repair=repair,
        problems=len(problems),
        kinds=sorted({p.kind for p in problems}),
        repaired=sum(p.repaired for p in problems),
    )
    return problems


def _orphan_uploads(store, repair: bool) -> list[Problem]:
    """Uploaded files no photo names, outside uploads still being ingested (a sweep takes them).
    Whether an upload is still being ingested is ``uploads.in_flight``: a folder whose mark names a
    server process that is gone (it stopped during the job) is stale, and its files are reported."""
    root = uploads.uploads_dir(store.data_dir)
    stray = [path for path in uploads.orphans(store) if not _in_flight(root, path)]
    if repair and stray:
        uploads.sweep(store)
    return [
        Problem("orphan-upload", f"{path}: an uploaded file no stored photo names", repaired=repair) for path in stray
    ]


def _in_flight(root, path) -> bool:
    """Whether ``path`` lies in an upload folder (directly under ``root``) that a job may still be using."""
    parts = path.relative_to(root).parts
    return len(parts) > 1 and uploads.in_flight(root / parts[0])
