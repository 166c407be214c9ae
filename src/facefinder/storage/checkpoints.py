"""Saving an index checkpoint, and reading what other processes changed since we last looked.

A checkpoint runs under the collection's cross-process lock: it starts from the newest checkpoint on
disk when another process saved one since, applies every journal entry it has not seen, saves,
records the checkpoint (``IndexCheckpoint``), and only then prunes the journal it covers. So a
process never saves an index older than the one on disk, and no entry is pruned before a saved
checkpoint holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from facefinder.storage.catalog import Catalog, Collection, IndexCheckpoint, JournalEntry, Setting
from facefinder.storage.opening import checkpoint_token, collection_name, fingerprint_of

if TYPE_CHECKING:
    from facefinder.storage.backend import CollectionIndex
    from facefinder.storage.store import FaceStore


@dataclass
class Changes:
    """What the catalog says changed since journal position ``seq``: the entries after it, and the
    collections, checkpoint tokens and refusals as they are now."""

    entries: list
    collections: set[int]
    tokens: dict[int, str]
    refused: set[int]  # collections marked as having lost data (``lost:<id>`` settings)


def changes_since(catalog: Catalog, seq: int) -> Changes:
    """Read, in one session, everything ``FaceStore.refresh`` needs to catch up from ``seq``."""
    with catalog.session() as session:
        entries = session.execute(
            select(JournalEntry.seq, JournalEntry.collection_id, JournalEntry.face_id, JournalEntry.op)
            .where(JournalEntry.seq > seq)
            .order_by(JournalEntry.seq)
        ).all()
        collections = set(session.scalars(select(Collection.id)))
        tokens = dict(session.execute(select(IndexCheckpoint.collection_id, IndexCheckpoint.token)).all())
        refused = {
            int(key.split(":", 1)[1]) for key in session.scalars(select(Setting.key).where(Setting.key.like("lost:%")))
        }
    return Changes(list(entries), collections, tokens, refused)


def save_checkpoint(store: FaceStore, cid: int, scrub: bool) -> None:
    """Save one collection's index under its cross-process lock, never older than the one on disk."""
    with store.locks.hold(cid):
        if collection_name(store.catalog, cid) is None:  # deleted by another process meanwhile
            store.indexes.pop(cid, None)
            return
        index = _newest(store, cid)
        if index is None or not index.dirty:
            return
        store.vectors.save(cid, index, scrub=scrub)
        index.basis = index.token
        _record(store.catalog, cid, index)


def _newest(store: FaceStore, cid: int) -> CollectionIndex | None:
    """Our index caught up with the journal, or, when another process saved a checkpoint since ours,
    that checkpoint (with our pending removals carried over, so that a scrub still happens)."""
    index = store.indexes[cid]
    if checkpoint_token(store.catalog, cid) == index.basis:
        store.opener.catch_up(cid, index)
        return index
    removed = index.removed
    index = store.opener.open(cid)
    if index is not None:
        index.removed = index.removed or removed
    return index


def _record(catalog: Catalog, cid: int, index: CollectionIndex) -> None:
    """Record the saved checkpoint, then prune the journal entries it covers (one transaction)."""
    fingerprint = fingerprint_of(index)
    with catalog.session() as session, session.begin():
        session.merge(
            IndexCheckpoint(
                collection_id=cid,
                seq=index.seq,
                token=index.token,
                faces=fingerprint.faces if fingerprint else len(index),
                max_face_id=fingerprint.max_id if fingerprint else 0,
            )
        )
        session.execute(delete(JournalEntry).where(JournalEntry.collection_id == cid, JournalEntry.seq <= index.seq))
