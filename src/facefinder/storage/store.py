"""The face store: the catalog and the vector index kept consistent, through crashes and across processes.

The rule is write-ahead: a face goes into the catalog (with its embedding and a journal entry) in
one transaction, and only then into the in-memory index. Index files are checkpoints tagged with
the journal sequence number they reflect; opening the store loads each checkpoint and replays the
journal after it. After ``kill -9`` at any moment the catalog holds whole images or nothing, and
the index is rebuilt to match it: it never serves a face the catalog lacks, nor loses one it has.

Any number of processes may open one store at once (a server, CLI ingests, a Ray driver):

* every process applies every journal entry, in commit order (``Catalog.lock_journal``);
* a checkpoint runs under a per-collection cross-process lock (storage/locks.py). It starts from the
  newest checkpoint on disk if another process saved one since (``IndexCheckpoint.token`` says so),
  applies every journal entry it has not seen, saves, records the checkpoint and prunes the journal.
  A process never saves an index older than the one on disk;
* opening a collection proves index == catalog (face count, id sum, largest id) and rebuilds what does
  not match, saying so in one log line. A checkpoint that reflects journal entries or face ids the
  catalog never reached means the catalog lost committed data (a lost or damaged SQLite WAL): that
  collection is refused until ``facefinder check --repair`` rebuilds it, and the ids it held are never
  handed to new faces.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, select

from facefinder.errors import CatalogError
from facefinder.storage.backend import CollectionIndex, VectorBackend
from facefinder.storage.catalog import (
    Catalog, Collection, FaceRecord, ImageRecord, IndexCheckpoint, IngestFailure, JournalEntry, Setting,
)
from facefinder.storage.index import FaissFiles, Fingerprint, VectorIndex, scrub_file, tier_for, vector_path
from facefinder.storage.locks import CheckpointLocks
from facefinder.storage.milvus import MilvusBackend, is_milvus_uri

log = logging.getLogger(__name__)

PROVENANCE_FIELDS = ("source_url", "captured_at", "case_id", "consent_id", "notes")
VECTORS_ENV = "FACEFINDER_VECTORS"


def open_vectors(spec: str | None, index_dir: Path, catalog: Catalog) -> VectorBackend:
    """Where vectors live: ``faiss`` (default, files under the data dir) or ``milvus://host:port/namespace``."""
    spec = (spec or os.environ.get(VECTORS_ENV) or "faiss").strip()
    if spec == "faiss":
        return FaissFiles(index_dir)
    if is_milvus_uri(spec):
        return MilvusBackend(spec, catalog)
    raise CatalogError(f"vectors: 'faiss' or milvus://host:port/namespace, not {spec!r}")


def _locked(method):
    """Serialise a method on the store's lock: the server searches while a background thread ingests,
    and a FAISS index must not be searched, replayed or saved by two threads at once."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


@dataclass
class NewFace:
    box: list[float]
    landmarks: list[list[float]]
    detector_score: float
    quality: float
    quality_parts: dict[str, float]
    embedding: np.ndarray
    thumbnail: bytes


@dataclass
class NewImage:
    sha256: str
    source: str
    width: int
    height: int
    provenance: dict[str, str] = field(default_factory=dict)


@dataclass
class Problem:
    """One thing ``FaceStore.check`` found wrong, in one line; ``repaired`` once ``check(repair=True)`` fixed it."""

    kind: str  # catalog-damaged | catalog-lost-data | index-damaged | index-mismatch | orphan-index-file |
    #            erasure-pending
    message: str
    collection: str | None = None
    repaired: bool = False


@dataclass
class CollectionInfo:
    id: int
    name: str
    description: str
    model_id: str | None
    images: int
    faces: int
    failures: int
    purpose: str | None = None
    legal_basis: str | None = None
    retention_days: int | None = None


class FaceStore:
    def __init__(self, data_dir: Path, url: str | None = None, vectors: str | None = None) -> None:
        """``url``: the catalog (default SQLite in ``data_dir``); ``vectors``: see ``open_vectors``."""
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(url or f"sqlite:///{self.data_dir / 'catalog.db'}")
        self.index_dir = self.data_dir / "index"
        self.vectors = open_vectors(vectors, self.index_dir, self.catalog)
        self.locks = CheckpointLocks(self.catalog.engine, self.data_dir / "locks")
        self.indexes: dict[int, CollectionIndex] = {}
        self.lost: dict[int, str] = {}  # collections refused: their catalog lost committed data
        self.healed: dict[int, tuple[str, str]] = {}  # (kind, why) of indexes rebuilt on open, for check()
        self.applied_seq = 0
        self._lock = threading.RLock()
        self.reload()

    # ----- collections -------------------------------------------------------------------
    def collection(self, name: str, create: bool = False, description: str = "", purpose: str | None = None,
                   legal_basis: str | None = None, retention_days: int | None = None) -> Collection:
        """The named collection; with ``create``, made if new, which needs its retention policy."""
        with self.catalog.session() as session:
            found = self.catalog.collection(session, name)
        if found is None and create:
            return self.create_collection(name, purpose=purpose, legal_basis=legal_basis,
                                          retention_days=retention_days, description=description)
        if found is None:
            raise CatalogError(f"collection {name!r} does not exist")
        return found

    def create_collection(self, name: str, *, purpose: str | None, legal_basis: str | None,
                          retention_days: int | None, description: str = "") -> Collection:
        """A new collection. It cannot exist without a purpose, a legal basis and a retention period."""
        if not name.strip():
            raise CatalogError("collection: a name is required")
        purpose, legal_basis, retention_days = check_policy(name, purpose, legal_basis, retention_days)
        with self.catalog.session() as session:
            if self.catalog.collection(session, name) is not None:
                raise CatalogError(f"collection {name!r} already exists")
            found = Collection(name=name, description=description, purpose=purpose, legal_basis=legal_basis,
                               retention_days=retention_days)
            session.add(found)
            session.commit()
            return found

    def set_policy(self, name: str, purpose: str | None = None, legal_basis: str | None = None,
                   retention_days: int | None = None) -> Collection:
        """Change some of a collection's policy fields; the result must be complete."""
        with self.catalog.session() as session:
            row = self.catalog.collection(session, name)
            if row is None:
                raise CatalogError(f"collection {name!r} does not exist")
            row.purpose, row.legal_basis, row.retention_days = check_policy(
                name, purpose if purpose is not None else row.purpose,
                legal_basis if legal_basis is not None else row.legal_basis,
                retention_days if retention_days is not None else row.retention_days)
            session.commit()
            return row

    def set_model(self, collection_id: int, model_id: str) -> None:
        """Bind a collection to the recognizer that embedded it; mixing models would be meaningless."""
        with self.catalog.session() as session:
            row = session.get(Collection, collection_id)
            if row.model_id and row.model_id != model_id:
                raise CatalogError(
                    f"collection {row.name!r} holds {row.model_id} embeddings; cannot add {model_id} ones"
                )
            row.model_id = model_id
            session.commit()

    def collections(self) -> list[CollectionInfo]:
        with self.catalog.session() as session:
            images = dict(session.execute(select(ImageRecord.collection_id, func.count()).group_by(ImageRecord.collection_id)).all())
            faces = dict(session.execute(select(FaceRecord.collection_id, func.count()).group_by(FaceRecord.collection_id)).all())
            failures = dict(session.execute(select(IngestFailure.collection_id, func.count()).group_by(IngestFailure.collection_id)).all())
            return [
                CollectionInfo(c.id, c.name, c.description, c.model_id, images.get(c.id, 0), faces.get(c.id, 0),
                               failures.get(c.id, 0), c.purpose, c.legal_basis, c.retention_days)
                for c in session.scalars(select(Collection).order_by(Collection.name))
            ]

    def collection_models(self) -> list[tuple[int, str, str | None]]:
        """(id, name, model id) of every collection: what a search needs, without counting rows."""
        with self.catalog.session() as session:
            return [tuple(row) for row in session.execute(
                select(Collection.id, Collection.name, Collection.model_id).order_by(Collection.name))]

    # ----- writes --------------------------------------------------------------------------
    def known_hashes(self, collection_id: int) -> set[str]:
        with self.catalog.session() as session:
            return set(session.scalars(select(ImageRecord.sha256).where(ImageRecord.collection_id == collection_id)))

    def add_image(self, collection_id: int, image: NewImage, faces: list[NewFace], model_id: str) -> int:
        """Store one photo and all its faces atomically; returns the image id."""
        return self.add_images(collection_id, [(image, faces)], model_id)[0]

    def add_images(self, collection_id: int, photos: list[tuple[NewImage, list[NewFace]]], model_id: str) -> list[int]:
        """Store photos with all their faces in one transaction (all or none), in order; returns the image
        ids. One round of catalog statements and one vector-index update for a whole ingest batch: with
        PostgreSQL and Milvus, a photo at a time cost 10-30 ms."""
        self._require_sound(collection_id)
        with self.catalog.session() as session, session.begin():
            self.catalog.lock_journal(session)
            image_ids = [self._write_image(session, collection_id, image, faces, model_id) for image, faces in photos]
        self.refresh()
        return image_ids

    @staticmethod
    def _write_image(session, collection_id: int, image: NewImage, faces: list[NewFace], model_id: str) -> int:
        record = ImageRecord(
            collection_id=collection_id, sha256=image.sha256, source=image.source, width=image.width,
            height=image.height, **{k: image.provenance.get(k) for k in PROVENANCE_FIELDS},
        )
        session.add(record)
        session.flush()
        rows = [
            FaceRecord(
                image_id=record.id, collection_id=collection_id, box=f.box, landmarks=f.landmarks,
                detector_score=f.detector_score, quality=f.quality, quality_parts=f.quality_parts,
                model_id=model_id, embedding=np.asarray(f.embedding, dtype=np.float32).tobytes(),
                thumbnail=f.thumbnail,
            )
            for f in faces
        ]
        session.add_all(rows)
        session.flush()
        session.add_all([JournalEntry(collection_id=collection_id, face_id=r.id, op="add") for r in rows])
        session.execute(delete(IngestFailure).where(
            IngestFailure.collection_id == collection_id, IngestFailure.source == image.source))
        return record.id

    def record_failure(self, collection_id: int, source: str, reason: str, detail: str) -> None:
        with self.catalog.session() as session, session.begin():
            session.execute(delete(IngestFailure).where(
                IngestFailure.collection_id == collection_id, IngestFailure.source == source))
            session.add(IngestFailure(collection_id=collection_id, source=source, reason=reason, detail=detail[:2000]))

    def failures(self, collection_id: int) -> list[IngestFailure]:
        with self.catalog.session() as session:
            return list(session.scalars(select(IngestFailure).where(IngestFailure.collection_id == collection_id)
                                        .order_by(IngestFailure.source)))

    def delete_faces(self, face_ids: list[int]) -> int:
        """Erase faces from catalog and index; returns how many existed."""
        with self.catalog.session() as session, session.begin():
            self.catalog.lock_journal(session)
            rows = session.execute(select(FaceRecord.id, FaceRecord.collection_id).where(FaceRecord.id.in_(face_ids))).all()
            session.execute(delete(FaceRecord).where(FaceRecord.id.in_([r.id for r in rows])))
            session.add_all([JournalEntry(collection_id=r.collection_id, face_id=r.id, op="delete") for r in rows])
        self.refresh()
        return len(rows)

    def delete_image(self, image_id: int) -> int:
        """Erase a photo and its faces; returns how many faces went with it."""
        with self.catalog.session() as session:
            if session.get(ImageRecord, image_id) is None:
                raise CatalogError(f"image {image_id} does not exist")
            face_ids = list(session.scalars(select(FaceRecord.id).where(FaceRecord.image_id == image_id)))
            sources = list(session.scalars(select(ImageRecord.source).where(ImageRecord.id == image_id)))
        count = self.delete_faces(face_ids)
        with self.catalog.session() as session, session.begin():
            session.execute(delete(ImageRecord).where(ImageRecord.id == image_id))
        self._scrub_uploaded_copies(sources)
        return count

    @_locked
    def delete_images(self, image_ids: list[int]) -> tuple[int, int]:
        """Erase photos and their faces; returns (photos, faces) that existed."""
        with self.catalog.session() as session:
            found = list(session.scalars(select(ImageRecord.id).where(ImageRecord.id.in_(image_ids))))
            face_ids = list(session.scalars(select(FaceRecord.id).where(FaceRecord.image_id.in_(found))))
            sources = list(session.scalars(select(ImageRecord.source).where(ImageRecord.id.in_(found))))
        count = self.delete_faces(face_ids)
        with self.catalog.session() as session, session.begin():
            session.execute(delete(ImageRecord).where(ImageRecord.id.in_(found)))
        self._scrub_uploaded_copies(sources)
        return len(found), count

    def delete_collection(self, name: str) -> None:
        collection = self.collection(name)
        with self.catalog.session() as session:
            sources = list(session.scalars(select(ImageRecord.source).where(ImageRecord.collection_id == collection.id)))
        with self.catalog.session() as session, session.begin():
            session.execute(delete(JournalEntry).where(JournalEntry.collection_id == collection.id))
            session.execute(delete(Collection).where(Collection.id == collection.id))
        self.indexes.pop(collection.id, None)
        self.lost.pop(collection.id, None)
        with self.locks.hold(collection.id):
            self.vectors.drop(collection.id)
        self._scrub_uploaded_copies(sources)

    def _scrub_uploaded_copies(self, sources: list[str]) -> None:
        """Photos uploaded to the server are kept under <data dir>/uploads so that results can show
        them; erasing a photo's row erases that copy too. Operators' own folders are never touched."""
        uploads = (self.data_dir / "uploads").resolve()
        for source in sources:
            path = Path(source).resolve()
            if path.is_relative_to(uploads) and path.is_file():
                scrub_file(path)

    # ----- reads ---------------------------------------------------------------------------
    @_locked
    def search(self, collection_ids: list[int], queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Top-k (face id, cosine) per query across the given collections, best first."""
        self.refresh()
        merged: list[list[tuple[int, float]]] = [[] for _ in range(len(queries))]
        for cid in collection_ids:
            self._require_sound(cid)
            index = self.indexes.get(cid)
            if not index:  # None or empty (for Milvus: no collection yet; counting would cost a round trip)
                continue
            scores, ids = index.search(queries, k)
            for row, (s_row, i_row) in enumerate(zip(scores, ids)):
                merged[row].extend((int(i), float(s)) for i, s in zip(i_row, s_row) if i >= 0)
        return [sorted(row, key=lambda pair: -pair[1])[:k] for row in merged]

    @_locked
    def search_above(self, collection_ids: list[int], queries: np.ndarray,
                     threshold: float) -> list[list[tuple[int, float]]]:
        """Every (face id, cosine) at or above ``threshold`` per query across the collections, best first."""
        self.refresh()
        merged: list[list[tuple[int, float]]] = [[] for _ in range(len(queries))]
        for cid in collection_ids:
            self._require_sound(cid)
            index = self.indexes.get(cid)
            if not index or index.dim != queries.shape[1]:
                continue
            for row, pairs in enumerate(index.above(queries, threshold)):
                merged[row].extend(pairs)
        return [sorted(row, key=lambda pair: -pair[1]) for row in merged]

    def faces(self, face_ids: list[int]) -> dict[int, tuple[FaceRecord, ImageRecord, str]]:
        """Catalog rows for face ids; ids the catalog lacks are simply absent."""
        with self.catalog.session() as session:
            rows = session.execute(
                select(FaceRecord, ImageRecord, Collection.name)
                .join(ImageRecord, FaceRecord.image_id == ImageRecord.id)
                .join(Collection, Collection.id == ImageRecord.collection_id)
                .where(FaceRecord.id.in_(face_ids))
            ).all()
            return {face.id: (face, image, name) for face, image, name in rows}

    def index_size(self, collection_id: int) -> int:
        index = self.indexes.get(collection_id)
        return len(index) if index else 0

    # ----- consistency ---------------------------------------------------------------------
    @_locked
    def reload(self) -> None:
        """Load every collection's checkpoint, replay the journal after it, and check it against the catalog."""
        self.indexes, self.lost = {}, {}
        with self.catalog.session() as session:
            self.applied_seq = session.scalar(select(func.max(JournalEntry.seq))) or 0
            collection_ids = list(session.scalars(select(Collection.id)))
        for cid in collection_ids:
            self._open(cid)
        self._sweep_crash_debris(collection_ids)

    @_locked
    def refresh(self) -> None:
        """Apply journal entries written since we last looked (by us or by another process), and start
        again from any checkpoint another process saved since (it may have pruned entries we need)."""
        with self.catalog.session() as session:
            entries = session.execute(
                select(JournalEntry.seq, JournalEntry.collection_id, JournalEntry.face_id, JournalEntry.op)
                .where(JournalEntry.seq > self.applied_seq).order_by(JournalEntry.seq)
            ).all()
            known = set(session.scalars(select(Collection.id)))
            tokens = dict(session.execute(select(IndexCheckpoint.collection_id, IndexCheckpoint.token)).all())
            refused = {int(key.split(":", 1)[1]) for key in session.scalars(
                select(Setting.key).where(Setting.key.like("lost:%")))}
        for cid in list(self.indexes):
            if cid not in known or tokens.get(cid) != self.indexes[cid].basis or cid in refused:
                del self.indexes[cid]
        for cid in set(self.lost) - refused:  # repaired by another process
            del self.lost[cid]
        for cid in known - set(self.indexes) - set(self.lost):
            self._open(cid)
        by_collection: dict[int, list] = {}
        for entry in entries:
            by_collection.setdefault(entry.collection_id, []).append(entry)
        for cid, cid_entries in by_collection.items():
            if cid in self.indexes:
                self._replay(self.indexes[cid], [e for e in cid_entries if e.seq > self.indexes[cid].seq])
        if entries:
            self.applied_seq = entries[-1].seq

    @_locked
    def checkpoint(self, scrub: bool = False) -> None:
        """Persist changed indexes and drop the journal entries they now cover (``scrub``: see compact)."""
        for cid in list(self.indexes):
            if self.indexes[cid].dirty:
                self._checkpoint(cid, scrub)

    def _checkpoint(self, cid: int, scrub: bool) -> None:
        """Save one collection's index under its cross-process lock, never older than the one on disk."""
        with self.locks.hold(cid):
            if self._name(cid) is None:  # deleted by another process meanwhile: nothing to save
                self.indexes.pop(cid, None)
                return
            index = self.indexes[cid]
            if self._record_token(cid) != index.basis:  # another process saved since: start from its file
                removed = index.removed
                index = self._open(cid)
                if index is None:
                    return
                index.removed = index.removed or removed
            else:
                self._catch_up(cid, index)
            if not index.dirty:
                return
            self.vectors.save(cid, index, scrub=scrub)
            fingerprint = self._index_fingerprint(index)
            index.basis = index.token
            with self.catalog.session() as session, session.begin():
                session.merge(IndexCheckpoint(collection_id=cid, seq=index.seq, token=index.token,
                                              faces=fingerprint.faces if fingerprint else len(index),
                                              max_face_id=fingerprint.max_id if fingerprint else 0))
                session.execute(delete(JournalEntry).where(JournalEntry.collection_id == cid,
                                                           JournalEntry.seq <= index.seq))

    @_locked
    def compact(self) -> tuple[int, int, int] | None:
        """Right after an erasure: rewrite each changed index file now, zeroing the old file's bytes first,
        and cut SQLite's write-ahead log to zero bytes. Rows are already overwritten by secure_delete.
        Returns SQLite's wal_checkpoint result (see Catalog.truncate_wal)."""
        self.refresh()
        self.checkpoint(scrub=True)
        return self.catalog.truncate_wal()

    def close(self) -> None:
        self.checkpoint()
        self.vectors.close()
        self.catalog.close()

    # ----- check and repair ----------------------------------------------------------------
    @_locked
    def check(self, repair: bool = False) -> list[Problem]:
        """Everything wrong with the catalog and the indexes, one line each; ``repair`` fixes what the
        catalog can fix (it is the truth): indexes are rebuilt from it and saved, stray files removed."""
        problems = [Problem("catalog-damaged", f"catalog: {line}") for line in self.catalog.integrity_problems()]
        self.refresh()
        names = {c.id: c.name for c in self.collections()}
        for cid, message in sorted(self.lost.items()):
            problems.append(Problem("catalog-lost-data", message, names.get(cid), repaired=repair and self._repair_lost(cid)))
        for cid, (kind, why) in sorted(self.healed.items()):
            if cid in names:
                problems.append(Problem(kind, f"collection {names[cid]!r}: {why}", names[cid], repaired=repair))
        for cid, index in sorted(self.indexes.items()):
            if cid in self.healed:
                continue
            held, stored = self._held_and_stored(cid, index)
            if held != stored:
                problems.append(Problem("index-mismatch", f"collection {names.get(cid, cid)!r}: index holds "
                                        f"{len(held - stored)} faces the catalog lacks and lacks {len(stored - held)} "
                                        f"it holds", names.get(cid), repaired=repair))
                if repair:
                    self.indexes[cid] = self._rebuild(cid)
        problems += self._orphan_files(names, repair)
        problems += self._pending_erasures(names, repair)
        if repair:
            for cid in list(self.indexes):
                self.indexes[cid].dirty = True
            self.checkpoint(scrub=True)
            self.catalog.truncate_wal()
            self.healed = {}
        else:  # a check only looks: what it found stays on disk for --repair (the next open heals it too)
            for cid in set(self.healed) & set(self.indexes):
                self.indexes[cid].dirty = False
        return problems

    def _pending_erasures(self, names: dict[int, str], repair: bool) -> list[Problem]:
        """Erased faces whose vectors an index file still holds: the erasure committed in the catalog (they
        are never served) but the file could not be rewritten yet (a full disk, a crash)."""
        if not isinstance(self.vectors, FaissFiles):
            return []
        problems = []
        for cid in sorted(self.indexes):
            try:
                saved_seq = VectorIndex.read_header(self.vectors.path(cid))["seq"]
            except (OSError, ValueError):
                continue  # no file (nothing to hold), or damaged (reported as such)
            with self.catalog.session() as session:
                count = session.scalar(select(func.count()).select_from(JournalEntry).where(
                    JournalEntry.collection_id == cid, JournalEntry.op == "delete", JournalEntry.seq > saved_seq))
            if count:
                problems.append(Problem("erasure-pending", f"collection {names.get(cid, cid)!r}: {count} erased faces "
                                        f"may still be in its index file (never served; rewritten by the next checkpoint)",
                                        names.get(cid), repaired=repair))
        return problems

    def _repair_lost(self, cid: int) -> bool:
        """Rebuild a collection whose catalog lost data from what the catalog holds (the id counters were
        moved past the lost ids when the loss was found) and serve it again, in every process."""
        with self.catalog.session() as session, session.begin():
            session.execute(delete(Setting).where(Setting.key == f"lost:{cid}"))
        del self.lost[cid]
        self.indexes[cid] = self._rebuild(cid)
        log.warning("collection %s: index rebuilt from the catalog after it lost data", cid)
        return True

    def _held_and_stored(self, cid: int, index: CollectionIndex) -> tuple[set[int], set[int]]:
        """The face ids the index holds and the catalog holds, compared again after catching up while other
        processes write (a difference that is only a write in flight is not a problem)."""
        for _ in range(3):
            self._catch_up(cid, index)
            with self.catalog.session() as session:
                stored = set(session.scalars(select(FaceRecord.id).where(FaceRecord.collection_id == cid)))
            held = set(index.face_ids().tolist())
            if held == stored:
                break
        return held, stored

    def _orphan_files(self, names: dict[int, str], repair: bool) -> list[Problem]:
        """Index files no checkpoint names: of collections the catalog does not hold (a crash, a lost catalog),
        and unfinished or replaced vector files (a crash during a save). Looked at under each collection's
        checkpoint lock, so a save in progress in another process is never taken for a stray."""
        if not isinstance(self.vectors, FaissFiles) or not self.index_dir.is_dir():
            return []
        by_collection: dict[str, list[Path]] = {}
        for path in sorted(self.index_dir.glob("collection-*")):
            by_collection.setdefault(path.name.removeprefix("collection-").split(".", 1)[0], []).append(path)
        problems = []
        for number, paths in by_collection.items():
            cid = int(number) if number.isdigit() else None
            with self.locks.hold(cid) if cid is not None else contextlib.nullcontext():
                for path in self._strays(cid if cid in names else None, paths):
                    problems.append(Problem("orphan-index-file", f"{path}: an index file no checkpoint names",
                                            names.get(cid), repaired=repair))
                    if repair:
                        scrub_file(path)
        return problems

    def _sweep_crash_debris(self, collection_ids: list[int]) -> None:
        """Zero and remove what a save killed midway left beside a collection's checkpoint (an unfinished
        .tmp, a vector file no checkpoint names): it may hold erased vectors, and nothing will read it."""
        if not isinstance(self.vectors, FaissFiles):
            return
        for cid in collection_ids:
            files = list(self.index_dir.glob(f"collection-{cid}.*"))
            if not any(f.suffix == ".tmp" for f in files) and sum(f.suffix == ".vec" for f in files) <= 1:
                continue  # the index file and its vector file at most: nothing left over
            with self.locks.hold(cid):
                for path in self._strays(cid, files):
                    log.info("collection %s: removing %s, left by an interrupted save", cid, path.name)
                    scrub_file(path)

    def _strays(self, cid: int | None, paths: list[Path]) -> list[Path]:
        """Of a collection's files, those its current checkpoint does not name (all of them if it is gone)."""
        if cid is None:
            return paths
        index_file = self.vectors.path(cid)
        try:
            token = VectorIndex.read_header(index_file)["token"]
        except (OSError, ValueError):
            return []  # no checkpoint, or a damaged one: reported as such, its files rebuilt at the next save
        named = {index_file, vector_path(index_file, token)}
        return [path for path in paths if path not in named and path.exists()]

    def _require_sound(self, cid: int) -> None:
        if cid in self.lost:
            raise CatalogError(self.lost[cid])

    def _record_token(self, cid: int) -> str | None:
        with self.catalog.session() as session:
            return session.scalar(select(IndexCheckpoint.token).where(IndexCheckpoint.collection_id == cid))

    def _open(self, cid: int) -> CollectionIndex | None:
        """Load a collection's index (checkpoint + journal), proved equal to the catalog; None if refused.

        A load that finds a problem is tried again if another process saved a checkpoint meanwhile (its
        file may have replaced the one being read): only a problem that stays is healed and reported."""
        self.indexes.pop(cid, None)
        for attempt in range(3):
            basis = self._record_token(cid)
            index, problem = self._load_checkpoint(cid)
            if cid in self.lost:
                return None
            if index is None and problem is None:  # no checkpoint yet
                index = self._rebuild(cid)
                self._catch_up(cid, index)
                break
            if index is not None:
                self._catch_up(cid, index)
                mismatch = self._mismatch(cid, index)
                problem = ("index-mismatch", mismatch) if mismatch else None
            if problem is None:
                break
            if attempt < 2 and self._record_token(cid) != basis:
                continue
            log.warning("collection %s: %s; rebuilding its index from the catalog", cid, problem[1])
            self.healed[cid] = problem
            index = self._rebuild(cid)
            self._catch_up(cid, index)
            break
        index.basis = basis
        self.indexes[cid] = index
        return index

    def _load_checkpoint(self, cid: int) -> tuple[CollectionIndex | None, tuple[str, str] | None]:
        """(the saved checkpoint, None) if it can be used; (None, (kind, why)) to rebuild it; (None, None)
        when there is none. A checkpoint that holds more than the catalog ever reached means the catalog lost
        committed data: the collection is refused (see _refuse_lost)."""
        refused = self.catalog.get_setting(f"lost:{cid}")
        if refused:
            self.lost[cid] = refused
            return None, None
        try:
            index = self.vectors.load(cid)
        except Exception as exc:  # a damaged checkpoint is rebuilt, never trusted
            return None, ("index-damaged", f"index checkpoint unusable ({exc})")
        if index is None:
            return None, None
        with self.catalog.session() as session:
            kept = self._pruned_through(session, cid)
            journal_top = self.catalog.high_water(session, "index_journal", "seq")
            faces_top = self.catalog.high_water(session, "faces", "id")
        fingerprint = self._index_fingerprint(index)
        if index.seq > max(journal_top, kept) or (fingerprint and fingerprint.max_id > faces_top):
            self._refuse_lost(cid, index.seq, fingerprint.max_id if fingerprint else 0, journal_top, faces_top)
            return None, None
        if index.seq < kept:
            return None, ("index-mismatch", f"index checkpoint is stale (journal entry {index.seq}, catalog "
                                            f"checkpoint {kept})")
        return index, None

    def _refuse_lost(self, cid: int, seq: int, max_id: int, journal_top: int, faces_top: int) -> None:
        """The catalog lost committed data: refuse the collection in every process until it is repaired, and
        move the id counters past what the checkpoint held now, so no new face anywhere gets a lost id."""
        message = (f"collection {self._name(cid) or cid!r}: the catalog lost committed data (its index checkpoint holds "
                   f"journal entries to {seq} and face ids to {max_id}, the catalog only {journal_top} and "
                   f"{faces_top}): refused until facefinder check --repair")
        with self.catalog.session() as session, session.begin():
            self.catalog.raise_high_water(session, "index_journal", "seq", seq)
            self.catalog.raise_high_water(session, "faces", "id", max_id)
            self.catalog.set_setting(session, f"lost:{cid}", message)
        self.lost[cid] = message
        log.error("%s", message)

    def _catch_up(self, cid: int, index: CollectionIndex) -> None:
        """Apply every journal entry of the collection after the one the index reflects."""
        with self.catalog.session() as session:
            entries = session.execute(
                select(JournalEntry.seq, JournalEntry.collection_id, JournalEntry.face_id, JournalEntry.op)
                .where(JournalEntry.collection_id == cid, JournalEntry.seq > index.seq).order_by(JournalEntry.seq)
            ).all()
        self._replay(index, entries)

    def _mismatch(self, cid: int, index: CollectionIndex) -> str | None:
        """Why the index does not hold exactly the catalog's faces (None when it does). Compared in one
        snapshot of the catalog; retried while other processes change the collection meanwhile."""
        for _ in range(5):
            with self.catalog.session() as session:
                row = session.execute(
                    select(func.count(FaceRecord.id), func.coalesce(func.sum(FaceRecord.id), 0),
                           func.coalesce(func.max(FaceRecord.id), 0),
                           select(func.max(JournalEntry.seq)).where(JournalEntry.collection_id == cid).scalar_subquery())
                    .where(FaceRecord.collection_id == cid)).one()
            if row[3] is not None and row[3] > index.seq:
                self._catch_up(cid, index)  # written meanwhile: catch up and compare again
                continue
            catalog = Fingerprint(int(row[0]), int(row[1]), int(row[2]))
            held = self._index_fingerprint(index)
            if held is None:  # a remote index (Milvus): the count is what can be compared cheaply
                return None if len(index) == catalog.faces else f"index holds {len(index)} faces, catalog {catalog.faces}"
            return None if held == catalog else f"index holds {held}, catalog {catalog}"
        return None  # too busy to compare now; the next open or `facefinder check` will

    @staticmethod
    def _pruned_through(session, cid: int) -> int:
        """The journal position up to which the collection's entries were pruned by its last checkpoint
        (``pruned_through:<cid>`` is how catalogs from before ``index_checkpoints`` recorded it)."""
        recorded = session.scalar(select(IndexCheckpoint.seq).where(IndexCheckpoint.collection_id == cid)) or 0
        legacy = session.scalar(select(Setting.value).where(Setting.key == f"pruned_through:{cid}"))
        return max(int(recorded), int(legacy or 0))

    @staticmethod
    def _index_fingerprint(index) -> Fingerprint | None:
        return index.fingerprint() if isinstance(index, VectorIndex) else None

    def _name(self, cid: int) -> str | None:
        with self.catalog.session() as session:
            return session.scalar(select(Collection.name).where(Collection.id == cid))

    def _rebuild(self, cid: int) -> CollectionIndex:
        with self.catalog.session() as session, session.begin():
            # No journal writer is in flight while we hold its lock (PostgreSQL: a sequence number handed out
            # to an uncommitted entry must not count as reflected). On SQLite, a write between the two reads
            # is replayed again later, which is harmless.
            self.catalog.lock_journal(session)
            seq = max(session.scalar(select(func.max(JournalEntry.seq))) or 0, self._pruned_through(session, cid))
            rows = session.execute(select(FaceRecord.id, FaceRecord.embedding).where(FaceRecord.collection_id == cid)).all()
        dim = len(rows[0].embedding) // 4 if rows else 1
        index = self.vectors.new(cid, dim, seq=seq, tier=tier_for(len(rows)) if rows else None)
        index.basis = self._record_token(cid)  # replaces that checkpoint at the next save
        if rows:
            index.add(np.array([r.id for r in rows]), np.stack([np.frombuffer(r.embedding, np.float32) for r in rows]))
        if not isinstance(index, VectorIndex):  # a shared remote index is kept: take out what the catalog lacks
            index.remove(np.array(sorted(set(index.face_ids().tolist()) - {r.id for r in rows}), dtype=np.int64))
        index.dirty = True
        return index

    def _replay(self, index: CollectionIndex, entries: list) -> None:
        """Bring an index up to date: the last operation on each face wins, checked against the catalog as
        it is now (so replaying an entry twice, or an old one after a newer checkpoint, is harmless)."""
        if not entries:
            return
        final = {e.face_id: e.op for e in entries}
        adds = [fid for fid, op in final.items() if op == "add"]
        with self.catalog.session() as session:
            rows = session.execute(select(FaceRecord.id, FaceRecord.embedding).where(FaceRecord.id.in_(adds))).all() if adds else []
        present = {r.id for r in rows}
        index.remove(np.array([fid for fid in final if fid not in present], dtype=np.int64))
        if rows:
            vectors = np.stack([np.frombuffer(r.embedding, np.float32) for r in rows])
            if index.dim != vectors.shape[1] and len(index) == 0:
                index.reset(vectors.shape[1])
            index.add(np.array([r.id for r in rows]), vectors)
        index.seq = max(index.seq, entries[-1].seq)
        index.dirty = True


def check_policy(name: str, purpose: str | None, legal_basis: str | None,
                 retention_days: int | None) -> tuple[str, str, int]:
    """A collection's purpose, legal basis and retention period (days), all required."""
    missing = [flag for flag, value in (("--purpose", purpose), ("--legal-basis", legal_basis),
                                        ("--retention-days", retention_days))
               if value is None or (isinstance(value, str) and not value.strip())]
    if missing:
        raise CatalogError(f"collection {name!r}: a collection needs a purpose, a legal basis and a retention "
                           f"period; missing {', '.join(missing)}")
    try:
        days = int(retention_days)
    except (TypeError, ValueError):
        raise CatalogError(f"retention_days: a whole number of days, not {retention_days!r}") from None
    if days < 1 or days != retention_days:
        raise CatalogError(f"retention_days: a whole number of days, at least 1, not {retention_days!r}")
    return purpose.strip(), legal_basis.strip(), days
