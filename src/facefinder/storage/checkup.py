"""``facefinder check [--repair]`` in the storage layer: what is wrong with the catalog and the indexes, and
the fix. The catalog is the truth: indexes are rebuilt from it and saved, and files no checkpoint names
(left by a crash during a save, or of collections the catalog does not hold) are zeroed and removed.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select

from facefinder.storage.backend import CollectionIndex
from facefinder.storage.catalog import FaceRecord, JournalEntry, Setting
from facefinder.storage.faiss_files import FaissFiles
from facefinder.storage.files import scrub_file, vector_path
from facefinder.storage.index import VectorIndex
from facefinder.storage.records import Problem

if TYPE_CHECKING:
    from facefinder.storage.store import FaceStore

log = logging.getLogger("facefinder.storage.store")  # the store's log: one name for operators' filters


class StoreCheckup:
    """Checks (and repairs) one ``FaceStore``, kept apart from its reads and writes; the store calls it under
    its lock. It works on the store's own state (``indexes``, ``lost``, ``healed``) through its opener."""

    def __init__(self, store: FaceStore) -> None:
        self.store = store

    def run(self, repair: bool = False) -> list[Problem]:
        """Everything wrong with the catalog and the indexes, one line each; ``repair`` fixes what the
        catalog can fix (it is the truth): indexes are rebuilt from it and saved, stray files removed."""
        store = self.store
        problems = [Problem("catalog-damaged", f"catalog: {line}") for line in store.catalog.integrity_problems()]
        store.refresh()
        names = {c.id: c.name for c in store.collections()}
        for cid, message in sorted(store.lost.items()):
            problems.append(
                Problem("catalog-lost-data", message, names.get(cid), repaired=repair and self._repair_lost(cid))
            )
        for cid, (kind, why) in sorted(store.healed.items()):
            if cid in names:
                problems.append(Problem(kind, f"collection {names[cid]!r}: {why}", names[cid], repaired=repair))
        for cid, index in sorted(store.indexes.items()):
            if cid in store.healed:
                continue
            held, stored = self._held_and_stored(cid, index)
            if held != stored:
                problems.append(
                    Problem(
                        "index-mismatch",
                        f"collection {names.get(cid, cid)!r}: index holds "
                        f"{len(held - stored)} faces the catalog lacks and lacks {len(stored - held)} "
                        f"it holds",
                        names.get(cid),
                        repaired=repair,
                    )
                )
                if repair:
                    store.indexes[cid] = store.opener.rebuild(cid)
        problems += self._orphan_files(names, repair)
        problems += self._pending_erasures(names, repair)
        if repair:
            for cid in list(store.indexes):
                store.indexes[cid].dirty = True
            store.checkpoint(scrub=True)
            store.catalog.truncate_wal()
            store.healed = {}
        else:  # a check only looks: what it found stays on disk for --repair (the next open heals it too)
            for cid in set(store.healed) & set(store.indexes):
                store.indexes[cid].dirty = False
        return problems

    def _pending_erasures(self, names: dict[int, str], repair: bool) -> list[Problem]:
        """Erased faces whose vectors an index file still holds: the erasure committed in the catalog (they
        are never served) but the file could not be rewritten yet (a full disk, a crash)."""
        store = self.store
        if not isinstance(store.vectors, FaissFiles):
            return []
        problems = []
        for cid in sorted(store.indexes):
            try:
                saved_seq = VectorIndex.read_header(store.vectors.path(cid))["seq"]
            except (OSError, ValueError):
                continue  # no file (nothing to hold), or damaged (reported as such)
            with store.catalog.session() as session:
                count = session.scalar(
                    select(func.count())
                    .select_from(JournalEntry)
                    .where(JournalEntry.collection_id == cid, JournalEntry.op == "delete", JournalEntry.seq > saved_seq)
                )
            if count:
                problems.append(
                    Problem(
                        "erasure-pending",
                        f"collection {names.get(cid, cid)!r}: {count} erased faces "
                        f"may still be in its index file (never served; rewritten by the next checkpoint)",
                        names.get(cid),
                        repaired=repair,
                    )
                )
        return problems

    def _repair_lost(self, cid: int) -> bool:
        """Rebuild a collection whose catalog lost data from what the catalog holds (the id counters were
        moved past the lost ids when the loss was found) and serve it again, in every process."""
        store = self.store
        with store.catalog.session() as session, session.begin():
            session.execute(delete(Setting).where(Setting.key == f"lost:{cid}"))
        del store.lost[cid]
        store.indexes[cid] = store.opener.rebuild(cid)
        log.warning("collection %s: index rebuilt from the catalog after it lost data", cid)
        return True

    def _held_and_stored(self, cid: int, index: CollectionIndex) -> tuple[set[int], set[int]]:
        """The face ids the index holds and the catalog holds, compared again after catching up while other
        processes write (a difference that is only a write in flight is not a problem)."""
        for _ in range(3):
            self.store.opener.catch_up(cid, index)
            with self.store.catalog.session() as session:
                stored = set(session.scalars(select(FaceRecord.id).where(FaceRecord.collection_id == cid)))
            held = set(index.face_ids().tolist())
            if held == stored:
                break
        return held, stored

    def _orphan_files(self, names: dict[int, str], repair: bool) -> list[Problem]:
        """Index files no checkpoint names: of collections the catalog does not hold (a crash, a lost catalog),
        and unfinished or replaced vector files (a crash during a save). Looked at under each collection's
        checkpoint lock, so a save in progress in another process is never taken for a stray."""
        store = self.store
        if not isinstance(store.vectors, FaissFiles) or not store.index_dir.is_dir():
            return []
        by_collection: dict[str, list[Path]] = {}
        for path in sorted(store.index_dir.glob("collection-*")):
            by_collection.setdefault(path.name.removeprefix("collection-").split(".", 1)[0], []).append(path)
        problems = []
        for number, paths in by_collection.items():
            cid = int(number) if number.isdigit() else None
            with store.locks.hold(cid) if cid is not None else contextlib.nullcontext():
                for path in self._strays(cid if cid in names else None, paths):
                    problems.append(
                        Problem(
                            "orphan-index-file",
                            f"{path}: an index file no checkpoint names",
                            names.get(cid),
                            repaired=repair,
                        )
                    )
                    if repair:
                        scrub_file(path)
        return problems

    def sweep_crash_debris(self, collection_ids: list[int]) -> None:
        """Zero and remove what a save killed midway left beside a collection's checkpoint (an unfinished
        .tmp, a vector file no checkpoint names): it may hold erased vectors, and nothing will read it."""
        store = self.store
        if not isinstance(store.vectors, FaissFiles):
            return
        for cid in collection_ids:
            files = list(store.index_dir.glob(f"collection-{cid}.*"))
            if not any(f.suffix == ".tmp" for f in files) and sum(f.suffix == ".vec" for f in files) <= 1:
                continue  # the index file and its vector file at most: nothing left over
            with store.locks.hold(cid):
                for path in self._strays(cid, files):
                    log.info("collection %s: removing %s, left by an interrupted save", cid, path.name)
                    scrub_file(path)

    def _strays(self, cid: int | None, paths: list[Path]) -> list[Path]:
        """Of a collection's files, those its current checkpoint does not name (all of them if it is gone)."""
        if cid is None:
            return paths
        index_file = self.store.vectors.path(cid)
        try:
            token = VectorIndex.read_header(index_file)["token"]
        except (OSError, ValueError):
            return []  # no checkpoint, or a damaged one: reported as such, its files rebuilt at the next save
        named = {index_file, vector_path(index_file, token)}
        return [path for path in paths if path not in named and path.exists()]
