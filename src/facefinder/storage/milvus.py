"""The vector index on Milvus: the distributed engine for collections past one machine.

``milvus://host:19530/namespace`` (or ``milvus+https://`` for TLS; ``$FACEFINDER_MILVUS_TOKEN`` holds
``user:password`` or an API key) puts every facefinder collection's vectors in its own Milvus
collection, ``<namespace>_c<collection id>``, and nothing else changes: the catalog stays the truth,
the store's journal feeds the index exactly as it feeds FAISS, and the same tests run on both. A
Milvus standalone server and a Milvus cluster differ only in that URI.

Three rules make it behave as the FAISS index does:

* **Deleted faces never come back.** Milvus applies a delete to reads at a consistency level:
  with its default ("Bounded") deleted faces came back in searches for a while, and "Strong" makes
  every read wait for the next time tick (200 ms a read here, 400 ms with vectors). So reads use
  "Session" consistency (this process's own writes are visible at once: every process applies the
  journal entries it reads, deletes included) and every candidate is checked against the catalog,
  which is the truth: a face it no longer holds is dropped, whatever Milvus still shows. Counts and
  id lists, which have no catalog check, are read with "Strong" (and cached until the next write).
* **Exact scores**: candidates come back with their stored float32 vectors and are re-scored here,
  as in the FAISS tiers, whatever index Milvus runs; twice k are asked for, so that candidates
  dropped as deleted do not shorten the list.
* **Erasure**: deletes are Milvus delete records at once; ``save(scrub=True)`` (after an erasure)
  flushes them and runs a compaction, which rewrites segments without the deleted rows. Milvus then
  removes the old segment files by garbage collection (``dataCoord.gc.*``) and the message log by its
  retention (``rocksmq``/Pulsar/Kafka): the README says which settings bound that delay.

The journal sequence number an index reflects is kept in the catalog (``milvus_seq:<name>``), written
after a flush, so a restart replays only what the server may not hold yet.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from urllib.parse import urlparse

import numpy as np
from sqlalchemy import delete, select

from facefinder.errors import FaceFinderError
from facefinder.storage.catalog import FaceRecord, IndexCheckpoint, Setting

SHORTLIST = 2  # candidates asked for, per result wanted (at least MIN_SHORTLIST)
MIN_SHORTLIST = 20
CHUNK = 10_000  # rows per insert/delete request (well under gRPC's message cap)
MAX_TOPK = 16_384  # Milvus's limit on results per query
HNSW = {"index_type": "HNSW", "metric_type": "IP", "params": {"M": 32, "efConstruction": 128}}
SESSION = "Session"
STRONG = "Strong"  # exact counts and id lists (index_size, checks): ~200 ms a call, so never in search
TOKEN_ENV = "FACEFINDER_MILVUS_TOKEN"

_aliases = itertools.count()
_alias_lock = threading.Lock()


def is_milvus_uri(spec: str | None) -> bool:
    return bool(spec) and spec.split("://", 1)[0] in ("milvus", "milvus+http", "milvus+https")


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise FaceFinderError("the Milvus backend needs pymilvus: pip install 'facefinder[milvus]'") from None
    return pymilvus


class MilvusBackend:
    """One connection to a Milvus server, and the indexes of the collections in one namespace."""

    def __init__(self, spec: str, catalog) -> None:
        parsed = urlparse(spec)
        if not parsed.hostname:
            raise FaceFinderError(f"vectors: expected milvus://host:port/namespace, not {spec!r}")
        scheme = "https" if parsed.scheme == "milvus+https" else "http"
        self.uri = f"{scheme}://{parsed.hostname}:{parsed.port or 19530}"
        self.namespace = parsed.path.strip("/") or "facefinder"
        if not self.namespace.replace("_", "").isalnum():
            raise FaceFinderError(f"vectors: the namespace {self.namespace!r} may hold letters, digits and _ only")
        self.catalog = catalog
        pm = _pymilvus()
        with _alias_lock:
            self.alias = f"facefinder-{os.getpid()}-{next(_aliases)}"
        try:
            pm.connections.connect(self.alias, uri=self.uri, token=os.environ.get(TOKEN_ENV, ""), timeout=30)
        except Exception as exc:
            raise FaceFinderError(f"vectors: cannot reach Milvus at {self.uri} ({exc})") from None

    def describe(self) -> str:
        return f"Milvus at {self.uri}, namespace {self.namespace!r}"

    def name(self, cid: int) -> str:
        return f"{self.namespace}_c{cid}"

    def load(self, cid: int) -> "MilvusIndex | None":
        """The collection's index if Milvus holds it and the catalog knows what it reflects; else None
        (the store then rebuilds it from the catalog)."""
        pm = _pymilvus()
        name = self.name(cid)
        seq = self.catalog.get_setting(f"milvus_seq:{name}")
        if seq is None or not pm.utility.has_collection(name, using=self.alias):
            return None
        collection = pm.Collection(name, using=self.alias)
        dim = next(f.params["dim"] for f in collection.schema.fields if f.name == "embedding")
        self._load(collection)
        index = MilvusIndex(self, cid, dim, int(seq), collection)
        with self.catalog.session() as session:
            index.token = session.scalar(select(IndexCheckpoint.token).where(IndexCheckpoint.collection_id == cid))
        return index

    def new(self, cid: int, dim: int, seq: int = 0, tier: str | None = None) -> "MilvusIndex":
        """The index to rebuild from the catalog. A Milvus collection that exists is kept, not dropped:
        other processes may be writing to it right now (the store upserts every catalog row into it and
        deletes what the catalog lacks). A missing one is made at the first add, when the size is known."""
        pm = _pymilvus()
        name = self.name(cid)
        if not pm.utility.has_collection(name, using=self.alias):
            return MilvusIndex(self, cid, dim, seq, None)
        collection = pm.Collection(name, using=self.alias)
        found = next(f.params["dim"] for f in collection.schema.fields if f.name == "embedding")
        if dim <= 1:  # the catalog holds no face yet, so no size to check: the collection is someone's new one
            dim = found
        elif found != dim:  # another model's vectors: none of them can stay
            self.drop(cid)
            return MilvusIndex(self, cid, dim, seq, None)
        self._load(collection)
        return MilvusIndex(self, cid, dim, seq, collection)

    def save(self, cid: int, index: "MilvusIndex", scrub: bool = False) -> None:
        """Flush, then record the journal position the server now holds; a new token names this checkpoint."""
        index.save(scrub)
        index.token = secrets.token_hex(8)
        with self.catalog.session() as session, session.begin():
            self.catalog.set_setting(session, f"milvus_seq:{self.name(cid)}", str(index.seq))

    def drop(self, cid: int) -> None:
        pm = _pymilvus()
        name = self.name(cid)
        if pm.utility.has_collection(name, using=self.alias):
            pm.utility.drop_collection(name, using=self.alias)
        if self.catalog is not None:
            with self.catalog.session() as session, session.begin():
                session.execute(delete(Setting).where(Setting.key == f"milvus_seq:{name}"))

    def close(self) -> None:
        _pymilvus().connections.disconnect(self.alias)

    def _create(self, cid: int, dim: int):
        pm = _pymilvus()
        schema = pm.CollectionSchema(
            [
                pm.FieldSchema("face_id", pm.DataType.INT64, is_primary=True, auto_id=False),
                pm.FieldSchema("embedding", pm.DataType.FLOAT_VECTOR, dim=dim),
            ],
            description="facefinder faces: catalog face id -> embedding",
        )
        try:  # another process may be making it at the same moment: then use theirs
            collection = pm.Collection(self.name(cid), schema, using=self.alias, consistency_level=SESSION)
            if not collection.has_index():
                collection.create_index("embedding", HNSW)
        except pm.exceptions.MilvusException:
            collection = pm.Collection(self.name(cid), using=self.alias)
        self._load(collection)
        return collection

    @staticmethod
    def _load(collection, attempts: int = 20) -> None:
        """Load a collection into the server's memory; retried while another process creates or loads it."""
        for attempt in range(attempts):
            try:
                if not collection.has_index():
                    raise _pymilvus().exceptions.MilvusException(message="index not built yet")
                collection.load()
                return
            except _pymilvus().exceptions.MilvusException:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.25)


class MilvusIndex:
    """One facefinder collection's vectors in Milvus, with the interface of ``VectorIndex``."""

    tier = "milvus"

    def __init__(self, backend: MilvusBackend, cid: int, dim: int, seq: int, collection) -> None:
        self.backend, self.cid, self.dim, self.seq = backend, cid, dim, seq
        self.token: str | None = None  # the checkpoint (IndexCheckpoint.token) this index reflects
        self.basis: str | None = None  # the catalog's checkpoint token when loaded (see store)
        self.collection = collection
        self.dirty = False
        self.removed = False
        self._count: int | None = None

    def __bool__(self) -> bool:
        """Whether there is anything to search, without counting (a count waits for a time tick)."""
        return self.collection is not None

    def __len__(self) -> int:
        if self.collection is None:
            return 0
        if self._count is None:
            rows = self.collection.query("", output_fields=["count(*)"], consistency_level=STRONG)
            self._count = int(rows[0]["count(*)"])
        return self._count

    def face_ids(self) -> np.ndarray:
        if self.collection is None:
            return np.zeros(0, np.int64)
        ids = []
        iterator = self.collection.query_iterator(
            batch_size=CHUNK, expr="face_id >= 0", output_fields=["face_id"], consistency_level=STRONG
        )
        while batch := iterator.next():
            ids.extend(row["face_id"] for row in batch)
        iterator.close()
        return np.array(sorted(ids), dtype=np.int64)

    # ----- writes ------------------------------------------------------------------------------
    def reset(self, dim: int) -> None:
        """Take embeddings of ``dim`` (the collection's first model). A Milvus collection another process
        made for them meanwhile is used as it is; only one of another size is dropped."""
        fresh = self.backend.new(self.cid, dim, self.seq)
        self.collection, self.dim, self._count, self.dirty = fresh.collection, dim, None, True

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace vectors (an upsert, so replaying the journal twice is harmless)."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids) and self.collection is None:
            self.dim = vectors.shape[1]
            self.collection = self.backend._create(self.cid, self.dim)
        for start in range(0, len(ids), CHUNK):
            self.collection.upsert([ids[start : start + CHUNK].tolist(), vectors[start : start + CHUNK]])
        if len(ids):
            self._count, self.dirty = None, True

    def remove(self, ids: np.ndarray) -> int:
        """Delete faces; returns how many were held."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.collection is None:
            return 0
        removed = 0
        for start in range(0, len(ids), CHUNK):
            held = self._held(ids[start : start + CHUNK])
            if held:
                self.collection.delete(f"face_id in {held}")
                removed += len(held)
        if removed:
            self._count, self.dirty, self.removed = None, True, True
        return removed

    def _held(self, ids: np.ndarray) -> list[int]:
        if not len(ids):
            return []
        rows = self.collection.query(f"face_id in {ids.tolist()}", output_fields=["face_id"], consistency_level=SESSION)
        return sorted(int(row["face_id"]) for row in rows)

    def save(self, scrub: bool = False) -> None:
        """Flush (the server then holds everything this index reflects); after an erasure, start a
        compaction. It runs in the background: waiting for it took minutes on a loaded server, and
        the deleted rows are already invisible to every Strong read."""
        if self.collection is None:
            self.dirty = self.removed = False
            return
        self.collection.flush()
        if scrub or self.removed:
            self.collection.compact()
        self.dirty = self.removed = False

    # ----- reads -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query, exact float32 inner products; ids are -1 past the last face."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, k)
        if self.collection is None:
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        shortlist = min(max(SHORTLIST * k, MIN_SHORTLIST), MAX_TOPK)
        hits = self.collection.search(
            queries,
            "embedding",
            {"metric_type": "IP", "params": {"ef": max(shortlist, 64)}},
            limit=shortlist,
            output_fields=["embedding"],
            consistency_level=SESSION,
        )
        live = self._in_catalog(hits)
        for q, found in enumerate(hits):
            ids, scores = self._rescore(found, queries[q], live)
            order = np.argsort(-scores, kind="stable")[:k]
            out_scores[q, : len(order)], out_ids[q, : len(order)] = scores[order], ids[order]
        return out_scores, out_ids

    def above(self, queries: np.ndarray, threshold: float) -> list[list[tuple[int, float]]]:
        """Every (id, score) at or above ``threshold`` per query: a Milvus range search, re-scored exactly.
        At most 16,384 per query (Milvus's cap), far more than any sane threshold finds."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.collection is None:
            return [[] for _ in range(len(queries))]
        params = {
            "metric_type": "IP",
            "params": {"ef": MAX_TOPK, "radius": float(threshold) - 1e-3, "range_filter": 1.0 + 1e-3},
        }
        hits = self.collection.search(
            queries, "embedding", params, limit=MAX_TOPK, output_fields=["embedding"], consistency_level=SESSION
        )
        live = self._in_catalog(hits)
        found = []
        for q, row in enumerate(hits):
            ids, scores = self._rescore(row, queries[q], live)
            keep = np.nonzero(scores >= threshold)[0]
            keep = keep[np.argsort(-scores[keep], kind="stable")]
            found.append([(int(ids[i]), float(scores[i])) for i in keep])
        return found

    def _in_catalog(self, hits) -> set[int] | None:
        """The candidate ids the catalog still holds (None: no catalog to ask, as in benchmarks)."""
        if self.backend.catalog is None:
            return None
        ids = list({hit.id for row in hits for hit in row})
        if not ids:
            return set()
        with self.backend.catalog.session() as session:
            return set(session.scalars(select(FaceRecord.id).where(FaceRecord.id.in_(ids))))

    @staticmethod
    def _rescore(hits, query: np.ndarray, live: set[int] | None) -> tuple[np.ndarray, np.ndarray]:
        kept = [hit for hit in hits if live is None or hit.id in live]
        if not kept:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        ids = np.array([hit.id for hit in kept], dtype=np.int64)
        vectors = np.array([hit.entity.get("embedding") for hit in kept], dtype=np.float32)
        return ids, vectors @ query
