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
* opening a collection proves index == catalog and rebuilds what does not match, saying so in one log
  line; a catalog that lost committed data is refused until repaired (storage/opening.py);
  ``FaceStore.check`` finds and repairs the rest (storage/checkup.py).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, select

from facefinder.errors import CatalogError
from facefinder.storage.backend import CollectionIndex, VectorBackend
from facefinder.storage.catalog import Catalog, Collection, FaceRecord, ImageRecord, IngestFailure, JournalEntry
from facefinder.storage.checkpoints import changes_since, save_checkpoint
from facefinder.storage.checkup import StoreCheckup
from facefinder.storage.faiss_files import FaissFiles
from facefinder.storage.files import scrub_file
from facefinder.storage.locks import CheckpointLocks
from facefinder.storage.milvus import MilvusBackend, is_milvus_uri
from facefinder.storage.opening import IndexOpener
from facefinder.storage.people import people_of, settle_people
from facefinder.storage.records import (  # the services import these from here too
    PROVENANCE_FIELDS,
    CollectionInfo,
    NewFace,
    NewImage,
    Problem,
    check_policy,
)
from facefinder.storage.video import drop_tracks, whole_tracks, write_tracks

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


class FaceStore:
    """The catalog and the vector index of every collection, kept consistent (see the module docstring)."""

    def __init__(
        self, data_dir: Path, url: str | None = None, vectors: str | None = None, owned_copies: Path | None = None
    ) -> None:
        """``url``: the catalog (default SQLite in ``data_dir``); ``vectors``: see ``open_vectors``;
        ``owned_copies``: a folder of photo copies the store owns (the server keeps uploads there), so
        that erasing a photo whose source lies under it erases that copy too."""
        self.data_dir = Path(data_dir)
        self.owned_copies = Path(owned_copies).resolve() if owned_copies else None
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
        self.opener = IndexOpener(self)
        self.checkup = StoreCheckup(self)
        self.reload()

    # ----- collections -------------------------------------------------------------------
    def collection(
        self,
        name: str,
        create: bool = False,
        description: str = "",
        purpose: str | None = None,
        legal_basis: str | None = None,
        retention_days: int | None = None,
    ) -> Collection:
        """The named collection; with ``create``, made if new, which needs its retention policy."""
        with self.catalog.session() as session:
            found = self.catalog.collection(session, name)
        if found is None and create:
            return self.create_collection(
                name, purpose=purpose, legal_basis=legal_basis, retention_days=retention_days, description=description
            )
        if found is None:
            raise CatalogError(f"collection {name!r} does not exist")
        return found

    def create_collection(
        self,
        name: str,
        *,
        purpose: str | None,
        legal_basis: str | None,
        retention_days: int | None,
        description: str = "",
    ) -> Collection:
        """A new collection. It cannot exist without a purpose, a legal basis and a retention period."""
        if not name.strip():
            raise CatalogError("collection: a name is required")
        purpose, legal_basis, retention_days = check_policy(name, purpose, legal_basis, retention_days)
        with self.catalog.session() as session:
            if self.catalog.collection(session, name) is not None:
                raise CatalogError(f"collection {name!r} already exists")
            found = Collection(
                name=name,
                description=description,
                purpose=purpose,
                legal_basis=legal_basis,
                retention_days=retention_days,
            )
            session.add(found)
            session.commit()
            return found

    def set_policy(
        self, name: str, purpose: str | None = None, legal_basis: str | None = None, retention_days: int | None = None
    ) -> Collection:
        """Change some of a collection's policy fields; the result must be complete."""
        with self.catalog.session() as session:
            row = self.catalog.collection(session, name)
            if row is None:
                raise CatalogError(f"collection {name!r} does not exist")
            row.purpose, row.legal_basis, row.retention_days = check_policy(
                name,
                purpose if purpose is not None else row.purpose,
                legal_basis if legal_basis is not None else row.legal_basis,
                retention_days if retention_days is not None else row.retention_days,
            )
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
            images = dict(
                session.execute(
                    select(ImageRecord.collection_id, func.count()).group_by(ImageRecord.collection_id)
                ).all()
            )
            faces = dict(
                session.execute(select(FaceRecord.collection_id, func.count()).group_by(FaceRecord.collection_id)).all()
            )
            failures = dict(
                session.execute(
                    select(IngestFailure.collection_id, func.count()).group_by(IngestFailure.collection_id)
                ).all()
            )
            return [
                CollectionInfo(
                    c.id,
                    c.name,
                    c.description,
                    c.model_id,
                    images.get(c.id, 0),
                    faces.get(c.id, 0),
                    failures.get(c.id, 0),
                    c.purpose,
                    c.legal_basis,
                    c.retention_days,
                )
                for c in session.scalars(select(Collection).order_by(Collection.name))
            ]

    def collection_models(self) -> list[tuple[int, str, str | None]]:
        """(id, name, model id) of every collection: what a search needs, without counting rows."""
        with self.catalog.session() as session:
            return [
                tuple(row)
                for row in session.execute(
                    select(Collection.id, Collection.name, Collection.model_id).order_by(Collection.name)
                )
            ]

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
            collection_id=collection_id,
            sha256=image.sha256,
            source=image.source,
            width=image.width,
            height=image.height,
            **{k: image.provenance.get(k) for k in PROVENANCE_FIELDS},
        )
        session.add(record)
        session.flush()
        rows = [
            FaceRecord(
                image_id=record.id,
                collection_id=collection_id,
                box=f.box,
                landmarks=f.landmarks,
                detector_score=f.detector_score,
                quality=f.quality,
                quality_parts=f.quality_parts,
                model_id=model_id,
                embedding=np.asarray(f.embedding, dtype=np.float32).tobytes(),
                thumbnail=f.thumbnail,
            )
            for f in faces
        ]
        session.add_all(rows)
        session.flush()
        session.add_all([JournalEntry(collection_id=collection_id, face_id=r.id, op="add") for r in rows])
        if image.tracks:
            write_tracks(
                session, record.id, collection_id, image.tracks, [r.id for r in rows], [f.video_place for f in faces]
            )
        session.execute(
            delete(IngestFailure).where(
                IngestFailure.collection_id == collection_id, IngestFailure.source == image.source
            )
        )
        return record.id

    def record_failure(self, collection_id: int, source: str, reason: str, detail: str) -> None:
        with self.catalog.session() as session, session.begin():
            session.execute(
                delete(IngestFailure).where(
                    IngestFailure.collection_id == collection_id, IngestFailure.source == source
                )
            )
            session.add(IngestFailure(collection_id=collection_id, source=source, reason=reason, detail=detail[:2000]))

    def failures(self, collection_id: int) -> list[IngestFailure]:
        with self.catalog.session() as session:
            return list(
                session.scalars(
                    select(IngestFailure)
                    .where(IngestFailure.collection_id == collection_id)
                    .order_by(IngestFailure.source)
                )
            )

    def delete_faces(self, face_ids: list[int]) -> int:
        """Erase faces from catalog and index; returns how many existed. Their people are settled in the
        same transaction (storage/people.py). A video's face goes with its whole track (storage/video.py)."""
        with self.catalog.session() as session, session.begin():
            self.catalog.lock_journal(session)
            face_ids, track_ids = whole_tracks(session, face_ids)
            rows = session.execute(
                select(FaceRecord.id, FaceRecord.collection_id).where(FaceRecord.id.in_(face_ids))
            ).all()
            people = people_of(session, [r.id for r in rows])
            drop_tracks(session, track_ids)
            session.execute(delete(FaceRecord).where(FaceRecord.id.in_([r.id for r in rows])))
            settle_people(session, people)
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
        self._scrub_owned_copies(sources)
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
        self._scrub_owned_copies(sources)
        return len(found), count

    def delete_collection(self, name: str) -> None:
        collection = self.collection(name)
        with self.catalog.session() as session:
            sources = list(
                session.scalars(select(ImageRecord.source).where(ImageRecord.collection_id == collection.id))
            )
        with self.catalog.session() as session, session.begin():
            session.execute(delete(JournalEntry).where(JournalEntry.collection_id == collection.id))
            session.execute(delete(Collection).where(Collection.id == collection.id))
        self.indexes.pop(collection.id, None)
        self.lost.pop(collection.id, None)
        with self.locks.hold(collection.id):
            self.vectors.drop(collection.id)
        self._scrub_owned_copies(sources)

    def _scrub_owned_copies(self, sources: list[str]) -> None:
        """Zero and remove the copies under ``owned_copies`` of photos whose rows were erased.
        Operators' own folders are never touched."""
        if self.owned_copies is None:
            return
        for source in sources:
            path = Path(source).resolve()
            if path.is_relative_to(self.owned_copies) and path.is_file():
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
    def search_above(
        self, collection_ids: list[int], queries: np.ndarray, threshold: float
    ) -> list[list[tuple[int, float]]]:
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
            self.opener.open(cid)
        self.checkup.sweep_crash_debris(collection_ids)

    @_locked
    def refresh(self) -> None:
        """Apply journal entries written since we last looked (by us or by another process), and start
        again from any checkpoint another process saved since (it may have pruned entries we need)."""
        changes = changes_since(self.catalog, self.applied_seq)
        for cid in list(self.indexes):
            gone, superseded = cid not in changes.collections, changes.tokens.get(cid) != self.indexes[cid].basis
            if gone or superseded or cid in changes.refused:
                del self.indexes[cid]
        for cid in set(self.lost) - changes.refused:  # repaired by another process
            del self.lost[cid]
        for cid in changes.collections - set(self.indexes) - set(self.lost):
            self.opener.open(cid)
        by_collection: dict[int, list] = {}
        for entry in changes.entries:
            by_collection.setdefault(entry.collection_id, []).append(entry)
        for cid, cid_entries in by_collection.items():
            if cid in self.indexes:
                self.opener.replay(self.indexes[cid], [e for e in cid_entries if e.seq > self.indexes[cid].seq])
        if changes.entries:
            self.applied_seq = changes.entries[-1].seq

    @_locked
    def checkpoint(self, scrub: bool = False) -> None:
        """Persist changed indexes and drop the journal entries they now cover (``scrub``: see compact).
        Each runs under the collection's cross-process lock (storage/checkpoints.py)."""
        for cid in list(self.indexes):
            if self.indexes[cid].dirty:
                save_checkpoint(self, cid, scrub)

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
        return self.checkup.run(repair)

    def _require_sound(self, cid: int) -> None:
        if cid in self.lost:
            raise CatalogError(self.lost[cid])
