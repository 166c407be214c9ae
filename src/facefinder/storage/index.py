"""The vector index: FAISS, one per collection, ids = catalog face ids.

Inner product on L2-normalised vectors (= cosine). An index file carries the journal sequence
number it reflects, in the same atomically-renamed file, so a reader knows what to replay.

Three tiers, chosen by the collection's size (``tier_for``) or forced with
``$FACEFINDER_INDEX_TIER=flat|hnsw|ivfpq`` (tests, benchmarks):

* ``flat`` (under ``FLAT_MAX`` faces): exact search, ``IndexIDMap2(IndexFlatIP)``; removal is physical.
* ``hnsw`` (``FLAT_MAX`` .. ``HNSW_MAX``): ``IndexHNSWFlat`` (M = 32). FAISS cannot take a node out of
  an HNSW graph, so a removed face's row is a tombstone: its id is dropped, its vector bytes are
  overwritten with zeros at once (in the graph's storage and in the full-precision file) and
  search skips it with an ``IDSelector``; the graph is rebuilt without tombstones at the next
  checkpoint once they are over ``COMPACT_FRACTION`` of the rows.
* ``ivfpq`` (``HNSW_MAX`` and up): ``IVF{nlist},PQ48x4fs`` (4-bit PQ fast-scan, 24 bytes a face)
  for a shortlist, re-ranked exactly against the full-precision vectors. Removal is physical
  (IVF lists drop the code).

``hnsw`` and ``ivfpq`` label FAISS entries by row number in a full-precision float32 store, kept
beside the index file in ``<index file>.vec`` and memory-mapped: every reported score is the exact
float32 inner product with that store, as in the flat tier. Rows added since the last checkpoint
are in RAM (inserts need no rebuild); a removed row is zeroed at once, in the mapped file too. Each
checkpoint writes a new vector file under a new token, which the index file names, so a crash
between the two writes is seen as a damaged checkpoint and rebuilt from the catalog. A collection that crosses a threshold is rebuilt into its new tier at the next
checkpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from pathlib import Path

import faiss
import numpy as np

MAGIC = b"FFIDX1\0\0"
MAGIC2 = b"FFIDX2\0\0"
VEC_MAGIC = b"FFVEC1\0\0"
VEC_HEADER = 64

TIERS = ("flat", "hnsw", "ivfpq")
FLAT_MAX = 50_000        # exact flat search below this many faces (~2 ms a query, 1 thread, 192-d)
HNSW_MAX = 250_000       # HNSW from FLAT_MAX to here; IVF-PQ + exact re-rank above
COMPACT_FRACTION = 0.1   # rebuild an HNSW graph / rewrite the vector store past this share of holes
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
PQ_M = 48                # 192-d / 48 = 4 dims per 4-bit sub-quantiser: 24 bytes a face (see pq_m)
RERANK = 128             # IVF-PQ shortlist re-ranked exactly (256 finds no more mates at 1M)
NPROBE_FRACTION = 0.375  # share of IVF lists probed (all under EXACT_BELOW faces): mate-recall@10 0.995 at 1M
EXACT_BELOW = 20_000


def pq_m(dim: int) -> int:
    """Sub-quantisers for a ``dim``-d embedding: a divisor of ``dim`` near dim / 4 (48 for 192-d, 128 for
    512-d), as FAISS needs; any other recognizer's size works too (the re-rank keeps scores exact)."""
    return min((m for m in range(1, dim + 1) if dim % m == 0), key=lambda m: (abs(m - dim / 4), -m))


def forced_tier() -> str | None:
    tier = os.environ.get("FACEFINDER_INDEX_TIER", "auto").strip().lower() or "auto"
    if tier == "auto":
        return None
    if tier not in TIERS:
        raise ValueError(f"FACEFINDER_INDEX_TIER: one of auto, {', '.join(TIERS)}, not {tier!r}")
    return tier


def tier_for(n: int, current: str | None = None) -> str:
    """The tier for a collection of ``n`` faces (with hysteresis: a shrinking one moves down at half)."""
    forced = forced_tier()
    if forced:
        return forced
    rank = 0 if n < FLAT_MAX else 1 if n < HNSW_MAX else 2
    if current in TIERS:
        held = TIERS.index(current)
        if rank < held and n >= (FLAT_MAX, HNSW_MAX)[held - 1] // 2:
            rank = held
    return TIERS[rank]


class _Vectors:
    """Full-precision rows: a memory-mapped file (the last checkpoint) plus rows added since, in RAM."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.base: np.ndarray | None = None  # np.memmap, rows [0, nbase)
        self.nbase = 0
        self.tail = np.zeros((0, dim), np.float32)
        self.ntail = 0
        self.path: Path | None = None
        self.token = ""

    def __len__(self) -> int:
        return self.nbase + self.ntail

    def append(self, vectors: np.ndarray) -> None:
        need = self.ntail + len(vectors)
        if need > len(self.tail):
            grown = np.zeros((max(need, 2 * len(self.tail), 1024), self.dim), np.float32)
            grown[: self.ntail] = self.tail[: self.ntail]
            self.tail = grown
        self.tail[self.ntail:need] = vectors
        self.ntail = need

    def get(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if self.base is None or (len(rows) and rows.min() >= self.nbase):
            return self.tail[rows - self.nbase]
        if not self.ntail or rows.max() < self.nbase:
            return np.asarray(self.base[rows])
        out = np.empty((len(rows), self.dim), np.float32)
        low = rows < self.nbase
        out[low] = self.base[rows[low]]
        out[~low] = self.tail[rows[~low] - self.nbase]
        return out

    def zero(self, rows: np.ndarray) -> None:
        for row in np.asarray(rows, np.int64):
            if row < self.nbase:
                self.base[row] = 0  # a shared mapping: the file's bytes, flushed at the next save
            else:
                self.tail[row - self.nbase] = 0

    def chunks(self, size: int = 65536):
        """(first row, block) over every row, for exhaustive scans and rebuilds."""
        for start in range(0, self.nbase, size):
            yield start, np.asarray(self.base[start:min(start + size, self.nbase)])
        for start in range(0, self.ntail, size):
            yield self.nbase + start, self.tail[start:min(start + size, self.ntail)]

    def all(self) -> np.ndarray:
        parts = [block for _, block in self.chunks()]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def save(self, path: Path, scrub: bool) -> None:
        """Write every row to a new file (new token) that atomically replaces ``path``.

        A written file is never appended to or truncated, so another process that maps it (a server
        beside an ingest) never reads past its end; the only change in place is zeroing the rows
        of erased faces. ``scrub`` zeroes the replaced file first (it may hold erased faces' rows,
        zeroed only in a mapping that is never written back once the file is gone).
        """
        self.token = secrets.token_hex(8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write((VEC_MAGIC + self.token.encode() + struct.pack("<q", self.dim)).ljust(VEC_HEADER, b"\0"))
            for _, block in self.chunks():
                handle.write(np.ascontiguousarray(block).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        rows = len(self)
        if self.base is not None:
            self.base.flush()
        self.base = None
        if scrub:
            scrub_file(path, unlink=False)
        os.replace(tmp, path)
        self.open(path, rows)

    def open(self, path: Path, rows: int) -> None:
        self.base = np.memmap(path, np.float32, "r+", VEC_HEADER, (rows, self.dim)) if rows else None
        self.nbase, self.path = rows, path
        self.tail, self.ntail = np.zeros((0, self.dim), np.float32), 0

    @classmethod
    def load(cls, path: Path, dim: int, rows: int, token: str) -> "_Vectors":
        with open(path, "r+b") as handle:
            header = handle.read(VEC_HEADER)
            if not header.startswith(VEC_MAGIC) or header[8:24].decode(errors="replace") != token:
                raise ValueError(f"{path}: does not match its index file")
            if handle.seek(0, 2) != VEC_HEADER + rows * dim * 4:
                raise ValueError(f"{path}: does not match its index file (size)")
        vectors = cls(dim)
        vectors.token = token
        vectors.open(path, rows)
        return vectors


class VectorIndex:
    def __init__(self, dim: int, index: faiss.Index | None = None, seq: int = 0, tier: str | None = None) -> None:
        self.dim = dim
        self.tier = tier or ("flat" if index is not None else tier_for(0))
        self.seq = seq  # the last journal entry this index reflects
        self.dirty = False
        self.removed = False  # since the last save: the old files held vectors that are gone now
        self.vectors: _Vectors | None = None
        self.row_ids = np.zeros(0, np.int64)  # hnsw/ivfpq: face id per row, -1 for a removed row
        self.nrows = 0
        self.live = 0
        self.trained_n = 0
        self._selector = None
        if self.tier == "flat":
            self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            ids = faiss.vector_to_array(self.index.id_map) if self.index.ntotal else np.zeros(0, np.int64)
            self.max_id = int(ids.max()) if len(ids) else -1
        else:
            self.index = index
            self.vectors = _Vectors(dim)
            self.max_id = -1

    def __len__(self) -> int:
        return self.index.ntotal if self.tier == "flat" else self.live

    def face_ids(self) -> np.ndarray:
        """Every face id held."""
        if self.tier == "flat":
            return faiss.vector_to_array(self.index.id_map) if self.index.ntotal else np.zeros(0, np.int64)
        ids = self.row_ids[: self.nrows]
        return ids[ids >= 0]

    # ----- writes ------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors; replaying an add that is already applied is harmless."""
        if len(ids) == 0:
            return
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        # Catalog ids only grow, so only an id at or below the largest held can already be here;
        # skipping the removal scan otherwise keeps adds O(1) in the index size.
        self.remove(ids[ids <= self.max_id])
        if self.tier == "flat":
            self.index.add_with_ids(vectors, ids)
        else:
            if self.index is None:
                self._build_inner(vectors)
            rows = np.arange(self.nrows, self.nrows + len(ids), dtype=np.int64)
            if self.nrows + len(ids) > len(self.row_ids):
                grown = np.full(max(self.nrows + len(ids), 2 * len(self.row_ids), 1024), -1, np.int64)
                grown[: self.nrows] = self.row_ids[: self.nrows]
                self.row_ids = grown
            self.row_ids[rows] = ids
            self.vectors.append(vectors)
            if self.tier == "hnsw":
                self.index.add(vectors)  # labels are insertion order = rows
            else:
                self.index.add_with_ids(vectors, rows)
            self.nrows += len(ids)
            self.live += len(ids)
        self.max_id = max(self.max_id, int(ids.max()))
        self.dirty = True

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0 or len(self) == 0:
            return 0
        ids = np.asarray(ids, dtype=np.int64)
        if self.tier == "flat":
            removed = int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))
        else:
            rows = np.nonzero(np.isin(self.row_ids[: self.nrows], ids[ids >= 0]))[0].astype(np.int64)
            removed = len(rows)
            if removed:
                self.row_ids[rows] = -1
                self.vectors.zero(rows)
                if self.tier == "ivfpq":
                    self.index.remove_ids(faiss.IDSelectorBatch(rows))
                else:  # HNSW keeps the node: zero its vector bytes, skip it in searches
                    storage = faiss.downcast_index(self.index.storage)
                    xb = faiss.rev_swig_ptr(storage.get_xb(), self.index.ntotal * self.dim)
                    xb.reshape(-1, self.dim)[rows] = 0
                    self._selector = None
                self.live -= removed
        self.dirty = self.dirty or removed > 0
        self.removed = self.removed or removed > 0
        return removed

    # ----- reads -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; ids are -1 where the index holds fewer than k faces."""
        k = max(1, min(k, len(self)))
        if len(self) == 0:
            empty = np.full((len(queries), 1), -1, dtype=np.int64)
            return np.full((len(queries), 1), -np.inf, dtype=np.float32), empty
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        # A few queries gain nothing from OpenMP threads and lose a lot when cores are busy
        # (measured: 0.3 ms on 1 thread vs 20-30 ms p50 on 2 under load, at 10k faces).
        faiss.omp_set_num_threads(1 if len(queries) < 16 else os.cpu_count() or 1)
        if self.tier == "flat":
            return self.index.search(queries, k)
        if self.tier == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(HNSW_EF_SEARCH, k)
            if self.live < self.index.ntotal:
                if self._selector is None:
                    batch = faiss.IDSelectorBatch(np.nonzero(self.row_ids[: self.nrows] < 0)[0].astype(np.int64))
                    self._selector = (batch, faiss.IDSelectorNot(batch))
                params.sel = self._selector[1]
            _, rows = self.index.search(queries, k, params=params)
        else:
            nlist = self.index.nlist
            nprobe = nlist if self.live < EXACT_BELOW else max(1, int(round(nlist * NPROBE_FRACTION)))
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe
            _, rows = self.index.search(queries, min(max(RERANK, k), self.live), params=params)
        return self._rerank(queries, rows, k)

    def _rerank(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact float32 inner products of each query with its shortlist's full-precision rows."""
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        for q, row in enumerate(rows):
            row = row[row >= 0]
            ids = self.row_ids[row]
            row, ids = row[ids >= 0], ids[ids >= 0]
            if not len(row):
                continue
            scores = self.vectors.get(row) @ queries[q]
            order = np.argsort(-scores, kind="stable")[:k]
            out_scores[q, : len(order)] = scores[order]
            out_ids[q, : len(order)] = ids[order]
        return out_scores, out_ids

    def above(self, queries: np.ndarray, threshold: float) -> list[list[tuple[int, float]]]:
        """Every (id, score) at or above ``threshold`` per query (exhaustive: a range search)."""
        if len(self) == 0:
            return [[] for _ in range(len(queries))]
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.tier == "flat":
            lims, scores, ids = self.index.range_search(queries, float(threshold) - 1e-6)  # FAISS keeps score > radius
            return [[(int(i), float(d)) for i, d in zip(ids[lims[q]:lims[q + 1]], scores[lims[q]:lims[q + 1]])
                     if d >= threshold] for q in range(len(queries))]
        found: list[list[tuple[int, float]]] = [[] for _ in range(len(queries))]
        for start, block in self.vectors.chunks():  # exact, over the full-precision rows
            ids = self.row_ids[start:start + len(block)]
            scores = block @ queries.T
            for r, q in zip(*np.nonzero((scores >= threshold) & (ids >= 0)[:, None])):
                found[q].append((int(ids[r]), float(scores[r, q])))
        return found

    # ----- tiers -------------------------------------------------------------------------------
    def _live_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every face held, in id order."""
        if self.tier == "flat":
            ids = self.face_ids()
            vectors = self.index.index.reconstruct_n(0, self.index.ntotal) if len(ids) else np.zeros((0, self.dim), np.float32)
        else:
            keep = np.nonzero(self.row_ids[: self.nrows] >= 0)[0]
            ids, vectors = self.row_ids[keep], self.vectors.get(keep) if len(keep) else np.zeros((0, self.dim), np.float32)
        order = np.argsort(ids, kind="stable")
        return ids[order], np.ascontiguousarray(vectors[order], dtype=np.float32)

    def _build_inner(self, sample: np.ndarray) -> None:
        if self.tier == "hnsw":
            self.index = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            return
        n = len(sample)
        nlist = int(min(4096, max(1, 2 ** round(np.log2(max(1.0, np.sqrt(n)))))))
        index = faiss.index_factory(self.dim, f"IVF{nlist},PQ{pq_m(self.dim)}x4fs", faiss.METRIC_INNER_PRODUCT)
        train = sample
        if len(train) > 64 * nlist:
            train = train[np.random.default_rng(0).choice(len(train), 64 * nlist, replace=False)]
        if len(train) < max(1000, 39 * nlist):  # tiny: pad with random unit vectors (the re-rank is exact anyway)
            pad = np.random.default_rng(0).standard_normal((max(1000, 39 * nlist) - len(train), self.dim)).astype(np.float32)
            pad /= np.linalg.norm(pad, axis=1, keepdims=True)
            train = np.concatenate([train, pad])
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        self.index = index
        self.trained_n = n

    def needs_rebuild(self) -> bool:
        if tier_for(len(self), self.tier) != self.tier:
            return True
        if self.tier == "flat":
            return False
        holes = self.nrows - self.live
        if holes and holes > COMPACT_FRACTION * self.nrows:
            return True
        return self.tier == "ivfpq" and len(self) >= 1000 and len(self) > 4 * max(self.trained_n, 1)

    def reset(self, dim: int) -> None:
        """Empty the index for embeddings of another size (the collection's first model)."""
        self.__init__(dim, seq=self.seq)

    def rebuild(self, tier: str | None = None) -> None:
        """Rebuild into ``tier`` (default: the one for the current size), without holes."""
        ids, vectors = self._live_rows()
        self.tier = tier or tier_for(len(ids), self.tier)
        removed, seq = self.removed, self.seq
        self.__init__(self.dim, seq=seq, tier=self.tier)
        if self.tier != "flat" and len(ids):
            self._build_inner(vectors)
        if self.tier == "hnsw":
            faiss.omp_set_num_threads(os.cpu_count() or 1)
        self.add(ids, vectors)
        self.removed, self.dirty = removed, True

    # ----- files -------------------------------------------------------------------------------
    def save(self, path: Path, scrub: bool = False) -> None:
        """Write atomically: a crash leaves either the old file or the new one, never half of one.

        ``scrub`` (after an erasure) also overwrites the old file's bytes with zeros before the new one
        replaces it, so the erased vectors are not left in freed disk blocks. A crash between the two
        leaves a zeroed file, which the store treats as damaged and rebuilds from the catalog.
        A collection past its tier's thresholds (or with too many holes) is rebuilt first.
        """
        if self.needs_rebuild():
            self.rebuild()
        scrub = scrub or self.removed
        path.parent.mkdir(parents=True, exist_ok=True)
        vec_path = path.with_name(path.name + ".vec")
        if self.tier == "flat":
            head = MAGIC + struct.pack("<qq", self.seq, self.dim)
            payload = faiss.serialize_index(self.index).tobytes()
        else:
            self.vectors.save(vec_path, scrub=scrub)
            meta = json.dumps({"tier": self.tier, "nrows": self.nrows, "live": self.live, "token": self.vectors.token,
                               "trained_n": self.trained_n, "max_id": self.max_id}).encode()
            head = MAGIC2 + struct.pack("<qqq", self.seq, self.dim, len(meta)) + meta
            inner = faiss.serialize_index(self.index).tobytes() if self.index is not None else b""
            payload = struct.pack("<q", self.nrows) + self.row_ids[: self.nrows].tobytes() + inner
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(head)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if scrub:
            scrub_file(path, unlink=False)
        os.replace(tmp, path)
        if self.tier == "flat" and vec_path.exists():
            scrub_file(vec_path)  # left from a larger tier
        self.dirty = self.removed = False

    @classmethod
    def load(cls, path: Path) -> "VectorIndex":
        data = path.read_bytes()
        if data.startswith(MAGIC):
            seq, dim = struct.unpack("<qq", data[len(MAGIC) : len(MAGIC) + 16])
            index = faiss.deserialize_index(np.frombuffer(data[len(MAGIC) + 16 :], dtype=np.uint8))
            return cls(dim, index, seq, tier="flat")
        if not data.startswith(MAGIC2):
            raise ValueError(f"{path}: not a facefinder index file")
        at = len(MAGIC2)
        seq, dim, meta_len = struct.unpack("<qqq", data[at : at + 24])
        at += 24
        meta = json.loads(data[at : at + meta_len])
        at += meta_len
        (nrows,) = struct.unpack("<q", data[at : at + 8])
        at += 8
        self = cls(dim, seq=seq, tier=meta["tier"])
        self.row_ids = np.frombuffer(data[at : at + 8 * nrows], np.int64).copy()
        at += 8 * nrows
        self.index = faiss.deserialize_index(np.frombuffer(data[at:], dtype=np.uint8)) if at < len(data) else None
        self.nrows, self.live, self.trained_n, self.max_id = nrows, meta["live"], meta["trained_n"], meta["max_id"]
        self.vectors = _Vectors.load(path.with_name(path.name + ".vec"), dim, nrows, meta["token"])
        return self


def index_files(path: Path) -> list[Path]:
    """An index file and the files beside it (full-precision vectors, an unfinished write)."""
    return [path, path.with_name(path.name + ".vec"), path.with_name(path.name + ".vec.tmp"),
            path.with_suffix(path.suffix + ".tmp")]


def scrub_file(path: Path, unlink: bool = True) -> None:
    """Overwrite a file with zeros in place (fsynced), then remove it unless ``unlink`` is False.

    On an ordinary filesystem (ext4, xfs) this overwrites the blocks that held the data. On
    copy-on-write filesystems (btrfs, ZFS), in snapshots, and inside SSD firmware, old copies can
    survive; full-disk encryption is the answer there (see the README, "Privacy and compliance").
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    with open(path, "r+b") as handle:
        chunk = b"\0" * (1 << 20)
        for start in range(0, size, len(chunk)):
            handle.write(chunk[: min(len(chunk), size - start)])
        handle.flush()
        os.fsync(handle.fileno())
    if unlink:
        path.unlink(missing_ok=True)


class FaissFiles:
    """Where FAISS indexes live: one checkpoint file per collection under ``<data dir>/index``.

    The store talks to this or to ``MilvusBackend`` through the same five calls (load, new, save, drop,
    describe), so the journal, crash recovery and erasure logic is written once for both."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir

    def describe(self) -> str:
        return f"FAISS files in {self.index_dir}"

    def path(self, cid: int) -> Path:
        return self.index_dir / f"collection-{cid}.faiss"

    def load(self, cid: int) -> VectorIndex | None:
        """The checkpoint, or None if there is none; a damaged one raises (and is rebuilt)."""
        path = self.path(cid)
        return VectorIndex.load(path) if path.exists() else None

    def new(self, cid: int, dim: int, seq: int = 0, tier: str | None = None) -> VectorIndex:
        return VectorIndex(dim, seq=seq, tier=tier)

    def save(self, cid: int, index: VectorIndex, scrub: bool = False) -> None:
        index.save(self.path(cid), scrub=scrub)

    def drop(self, cid: int) -> None:
        for path in index_files(self.path(cid)):
            scrub_file(path)  # zeroed, then removed (the index and its full-precision vectors)

    def close(self) -> None:
        pass
