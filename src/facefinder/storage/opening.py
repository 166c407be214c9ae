"""Opening a collection's index: its checkpoint loaded, the journal after it replayed, the result proved
equal to the catalog, and rebuilt from the catalog where it is not.

The proof compares a ``Fingerprint`` (face count, id sum, largest id) of the index with the catalog's.
A checkpoint that reflects journal entries or face ids the catalog never reached means the catalog lost
committed data (a lost or damaged SQLite WAL): that collection is refused until
``facefinder check --repair`` rebuilds it, and the ids it held are never handed to new faces. The
journal and checkpoint rules themselves are described in storage/store.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facefinder.storage.backend import CollectionIndex
from facefinder.storage.catalog import Catalog, Collection, FaceRecord, IndexCheckpoint, JournalEntry, Setting
from facefinder.storage.files import Fingerprint
from facefinder.storage.index import VectorIndex, tier_for

if TYPE_CHECKING:
    from facefinder.storage.store import FaceStore

log = logging.getLogger("facefinder.storage.store")  # the store's log: one name for operators' filters


def checkpoint_token(catalog: Catalog, cid: int) -> str | None:
    """The token of the collection's last recorded checkpoint (None before the first)."""
    with catalog.session() as session:
        return session.scalar(select(IndexCheckpoint.token).where(IndexCheckpoint.collection_id == cid))


def collection_name(catalog: Catalog, cid: int) -> str | None:
    """The collection's name; None once it is deleted (by any process)."""
    with catalog.session() as session:
        return session.scalar(select(Collection.name).where(Collection.id == cid))


def pruned_through(session: Session, cid: int) -> int:
    """The journal position up to which the collection's entries were pruned by its last checkpoint
    (``pruned_through:<cid>`` is how catalogs from before ``index_checkpoints`` recorded it)."""
    recorded = session.scalar(select(IndexCheckpoint.seq).where(IndexCheckpoint.collection_id == cid)) or 0
    legacy = session.scalar(select(Setting.value).where(Setting.key == f"pruned_through:{cid}"))
    return max(int(recorded), int(legacy or 0))


def fingerprint_of(index: CollectionIndex) -> Fingerprint | None:
    """What a FAISS index holds (see Fingerprint); None for a remote index, whose ids cost a round trip."""
    return index.fingerprint() if isinstance(index, VectorIndex) else None


class IndexOpener:
    """Loads, catches up, proves and rebuilds the indexes of one ``FaceStore``, kept apart from its reads and
    writes. It works on the store's own state: ``indexes``, ``lost`` (refused collections) and ``healed``."""

    def __init__(self, store: FaceStore) -> None:
        self.store = store
        self.catalog = store.catalog
        self.vectors = store.vectors

    def open(self, cid: int) -> CollectionIndex | None:
        """Load a collection's index (checkpoint + journal), proved equal to the catalog; None if refused.

        A load that finds a problem is tried again if another process saved a checkpoint meanwhile (its
        file may have replaced the one being read): only a problem that stays is healed and reported."""
        store = self.store
        store.indexes.pop(cid, None)
        for attempt in range(3):
            basis = checkpoint_token(self.catalog, cid)
            index, problem = self._load_checkpoint(cid)
            if cid in store.lost:
                return None
            if index is None and problem is None:  # no checkpoint yet
                index = self.rebuild(cid)
                self.catch_up(cid, index)
                break
            if index is not None:
                self.catch_up(cid, index)
                mismatch = self._mismatch(cid, index)
                problem = ("index-mismatch", mismatch) if mismatch else None
            if problem is None:
                break
            if attempt < 2 and checkpoint_token(self.catalog, cid) != basis:
                continue
            log.warning("collection %s: %s; rebuilding its index from the catalog", cid, problem[1])
            store.healed[cid] = problem
            index = self.rebuild(cid)
            self.catch_up(cid, index)
            break
        index.basis = basis
        store.indexes[cid] = index
        return index

    def _load_checkpoint(self, cid: int) -> tuple[CollectionIndex | None, tuple[str, str] | None]:
        """(the saved checkpoint, None) if it can be used; (None, (kind, why)) to rebuild it; (None, None)
        when there is none. A checkpoint that holds more than the catalog ever reached means the catalog lost
        committed data: the collection is refused (see _refuse_lost)."""
        refused = self.catalog.get_setting(f"lost:{cid}")
        if refused:
            self.store.lost[cid] = refused
            return None, None
        try:
            index = self.vectors.load(cid)
        except Exception as exc:  # a damaged checkpoint is rebuilt, never trusted
            return None, ("index-damaged", f"index checkpoint unusable ({exc})")
        if index is None:
            return None, None
        with self.catalog.session() as session:
            kept = pruned_through(session, cid)
            journal_top = self.catalog.high_water(session, "index_journal", "seq")
            faces_top = self.catalog.high_water(session, "faces", "id")
        fingerprint = fingerprint_of(index)
        if index.seq > max(journal_top, kept) or (fingerprint and fingerprint.max_id > faces_top):
            self._refuse_lost(cid, index.seq, fingerprint.max_id if fingerprint else 0, journal_top, faces_top)
            return None, None
        if index.seq < kept:
            return None, (
                "index-mismatch",
                (f"index checkpoint is stale (journal entry {index.seq}, catalog checkpoint {kept})"),
            )
        return index, None

    def _refuse_lost(self, cid: int, seq: int, max_id: int, journal_top: int, faces_top: int) -> None:
        """The catalog lost committed data: refuse the collection in every process until it is repaired, and
        move the id counters past what the checkpoint held now, so no new face anywhere gets a lost id."""
        message = (
            f"collection {collection_name(self.catalog, cid) or cid!r}: the catalog lost committed data "
            f"(its index checkpoint holds journal entries to {seq} and face ids to {max_id}, the catalog "
            f"only {journal_top} and {faces_top}): refused until facefinder check --repair"
        )
        with self.catalog.session() as session, session.begin():
            self.catalog.raise_high_water(session, "index_journal", "seq", seq)
            self.catalog.raise_high_water(session, "faces", "id", max_id)
            self.catalog.set_setting(session, f"lost:{cid}", message)
        self.store.lost[cid] = message
        log.error("%s", message)

    def catch_up(self, cid: int, index: CollectionIndex) -> None:
        """Apply every journal entry of the collection after the one the index reflects."""
        with self.catalog.session() as session:
            entries = session.execute(
                select(JournalEntry.seq, JournalEntry.collection_id, JournalEntry.face_id, JournalEntry.op)
                .where(JournalEntry.collection_id == cid, JournalEntry.seq > index.seq)
                .order_by(JournalEntry.seq)
            ).all()
        self.replay(index, entries)

    def _mismatch(self, cid: int, index: CollectionIndex) -> str | None:
        """Why the index does not hold exactly the catalog's faces (None when it does). Compared in one
        snapshot of the catalog; retried while other processes change the collection meanwhile."""
        for _ in range(5):
            with self.catalog.session() as session:
                row = session.execute(
                    select(
                        func.count(FaceRecord.id),
                        func.coalesce(func.sum(FaceRecord.id), 0),
                        func.coalesce(func.max(FaceRecord.id), 0),
                        select(func.max(JournalEntry.seq)).where(JournalEntry.collection_id == cid).scalar_subquery(),
                    ).where(FaceRecord.collection_id == cid)
                ).one()
            if row[3] is not None and row[3] > index.seq:
                self.catch_up(cid, index)  # written meanwhile: catch up and compare again
                continue
            catalog = Fingerprint(int(row[0]), int(row[1]), int(row[2]))
            held = fingerprint_of(index)
            if held is None:  # a remote index (Milvus): the count is what can be compared cheaply
                return (
                    None if len(index) == catalog.faces else f"index holds {len(index)} faces, catalog {catalog.faces}"
                )
            return None if held == catalog else f"index holds {held}, catalog {catalog}"
        return None  # too busy to compare now; the next open or `facefinder check` will

    def rebuild(self, cid: int) -> CollectionIndex:
        """A new index of exactly the catalog's faces of the collection, reflecting the journal as committed."""
        with self.catalog.session() as session, session.begin():
            # No journal writer is in flight while we hold its lock (PostgreSQL: a sequence number handed out
            # to an uncommitted entry must not count as reflected). On SQLite, a write between the two reads
            # is replayed again later, which is harmless.
            self.catalog.lock_journal(session)
            seq = max(session.scalar(select(func.max(JournalEntry.seq))) or 0, pruned_through(session, cid))
            rows = session.execute(
                select(FaceRecord.id, FaceRecord.embedding).where(FaceRecord.collection_id == cid)
            ).all()
        dim = len(rows[0].embedding) // 4 if rows else 1
        index = self.vectors.new(cid, dim, seq=seq, tier=tier_for(len(rows)) if rows else None)
        index.basis = checkpoint_token(self.catalog, cid)  # replaces that checkpoint at the next save
        if rows:
            index.add(np.array([r.id for r in rows]), np.stack([np.frombuffer(r.embedding, np.float32) for r in rows]))
        if not isinstance(index, VectorIndex):  # a shared remote index is kept: take out what the catalog lacks
            index.remove(np.array(sorted(set(index.face_ids().tolist()) - {r.id for r in rows}), dtype=np.int64))
        index.dirty = True
        return index

    def replay(self, index: CollectionIndex, entries: list) -> None:
        """Bring an index up to date: the last operation on each face wins, checked against the catalog as
        it is now (so replaying an entry twice, or an old one after a newer checkpoint, is harmless)."""
        if not entries:
            return
        final = {e.face_id: e.op for e in entries}
        adds = [fid for fid, op in final.items() if op == "add"]
        with self.catalog.session() as session:
            rows = (
                session.execute(select(FaceRecord.id, FaceRecord.embedding).where(FaceRecord.id.in_(adds))).all()
                if adds
                else []
            )
        present = {r.id for r in rows}
        index.remove(np.array([fid for fid in final if fid not in present], dtype=np.int64))
        if rows:
            vectors = np.stack([np.frombuffer(r.embedding, np.float32) for r in rows])
            if index.dim != vectors.shape[1] and len(index) == 0:
                index.reset(vectors.shape[1])
            index.add(np.array([r.id for r in rows]), vectors)
        index.seq = max(index.seq, entries[-1].seq)
        index.dirty = True
