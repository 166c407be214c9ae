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

``hnsw`` and ``ivfpq`` label FAISS entries by row number in a full-precision float32 store beside the
index file (storage/vectors.py), so every reported score is exact, as in the flat tier. A collection
that crosses a threshold is rebuilt into its new tier at the next checkpoint. The files, their
checksums and how they are written durably: storage/files.py.
"""

from __future__ import annotations

import os
import secrets
import zlib
from pathlib import Path

import faiss
import numpy as np

from facefinder.storage.files import (
    Fingerprint,
    header_bytes,
    parse_header,
    replace_file,
    scrub_file,
    vector_path,
    written_file,
)
from facefinder.storage.vectors import FullPrecisionRows

TIERS = ("flat", "hnsw", "ivfpq")
FLAT_MAX = 50_000  # exact flat search below this many faces (~2 ms a query, 1 thread, 192-d)
HNSW_MAX = 250_000  # HNSW from FLAT_MAX to here; IVF-PQ + exact re-rank above
COMPACT_FRACTION = 0.1  # rebuild an HNSW graph / rewrite the vector store past this share of holes
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
PQ_M = 48  # 192-d / 48 = 4 dims per 4-bit sub-quantiser: 24 bytes a face (see pq_m)
RERANK = 128  # IVF-PQ shortlist re-ranked exactly (256 finds no more mates at 1M)
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


class VectorIndex:
    """One collection's FAISS index in its tier, saved as a checksummed checkpoint file (see ``save``)."""

    def __init__(self, dim: int, index: faiss.Index | None = None, seq: int = 0, tier: str | None = None) -> None:
        self.dim = dim
        self.tier = tier or ("flat" if index is not None else tier_for(0))
        self.seq = seq  # the last journal entry this index reflects
        self.token: str | None = None  # the checkpoint file this index was loaded from or last saved as
        self.basis: str | None = None  # the catalog's checkpoint token when loaded (IndexCheckpoint; see store)
        self.dirty = False
        self.removed = False  # since the last save: the old files held vectors that are gone now
        self.vectors: FullPrecisionRows | None = None
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
            self.vectors = FullPrecisionRows(dim)
            self.max_id = -1

    def __len__(self) -> int:
        return self.index.ntotal if self.tier == "flat" else self.live

    def fingerprint(self) -> Fingerprint:
        """What the index holds, in three numbers the catalog can compute too (see Fingerprint)."""
        return Fingerprint.of(self.face_ids())

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
            return [
                [
                    (int(i), float(d))
                    for i, d in zip(ids[lims[q] : lims[q + 1]], scores[lims[q] : lims[q + 1]])
                    if d >= threshold
                ]
                for q in range(len(queries))
            ]
        found: list[list[tuple[int, float]]] = [[] for _ in range(len(queries))]
        for start, block in self.vectors.chunks():  # exact, over the full-precision rows
            ids = self.row_ids[start : start + len(block)]
            scores = block @ queries.T
            for r, q in zip(*np.nonzero((scores >= threshold) & (ids >= 0)[:, None])):
                found[q].append((int(ids[r]), float(scores[r, q])))
        return found

    # ----- tiers -------------------------------------------------------------------------------
    def _live_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every face held, in id order."""
        if self.tier == "flat":
            ids = self.face_ids()
            vectors = (
                self.index.index.reconstruct_n(0, self.index.ntotal)
                if len(ids)
                else np.zeros((0, self.dim), np.float32)
            )
        else:
            keep = np.nonzero(self.row_ids[: self.nrows] >= 0)[0]
            ids, vectors = (
                self.row_ids[keep],
                self.vectors.get(keep) if len(keep) else np.zeros((0, self.dim), np.float32),
            )
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
            pad = (
                np.random.default_rng(0)
                .standard_normal((max(1000, 39 * nlist) - len(train), self.dim))
                .astype(np.float32)
            )
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
        token, basis = self.token, self.basis
        self.__init__(dim, seq=self.seq)
        self.token, self.basis = token, basis

    def rebuild(self, tier: str | None = None) -> None:
        """Rebuild into ``tier`` (default: the one for the current size), without holes."""
        ids, vectors = self._live_rows()
        self.tier = tier or tier_for(len(ids), self.tier)
        removed, seq, token, basis = self.removed, self.seq, self.token, self.basis
        self.__init__(self.dim, seq=seq, tier=self.tier)
        self.token, self.basis = token, basis
        if self.tier != "flat" and len(ids):
            self._build_inner(vectors)
        if self.tier == "hnsw":
            faiss.omp_set_num_threads(os.cpu_count() or 1)
        self.add(ids, vectors)
        self.removed, self.dirty = removed, True

    # ----- files -------------------------------------------------------------------------------
    def save(self, path: Path, scrub: bool = False) -> None:
        """Write atomically under a new token: a crash leaves either the old checkpoint or the new one, whole.

        The vector file (hnsw, ivfpq) is written first under its own new name, then the index file that
        names it replaces the old one. ``scrub`` (after an erasure) then zeroes the replaced index file and
        the erased rows of the retired vector file, so the erased vectors are not left in freed disk blocks.
        A collection past its tier's thresholds (or with too many holes) is rebuilt first.
        """
        scrub = scrub or self.removed
        retired = self.vectors.path if self.vectors is not None else None
        dead = np.nonzero(self.row_ids[: self.vectors.nbase] < 0)[0] if retired else np.zeros(0, np.int64)
        if self.needs_rebuild():
            self.rebuild()
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        written = vector_path(path, token) if self.tier != "flat" else None
        try:
            header, payload = self._checkpoint_bytes(token, written)
            head = header_bytes(header)
            tmp = path.with_suffix(path.suffix + ".tmp")
            with written_file(tmp) as handle:
                handle.write(head)
                handle.write(payload)
            replace_file(tmp, path, scrub)
        except BaseException:  # e.g. a full disk: the old checkpoint stays whole and in use
            if written is not None:
                written.unlink(missing_ok=True)
            raise
        if written is not None:
            self.vectors.adopt(written, token)
        self._retire_vector_files(path, token, retired, dead, scrub)
        self.token = token
        self.dirty = self.removed = False

    def _checkpoint_bytes(self, token: str, vector_file: Path | None) -> tuple[dict, bytes]:
        """The index file's header and payload (after writing the vector file, for the tiers that have one)."""
        fingerprint = self.fingerprint()
        header = {
            "seq": self.seq,
            "token": token,
            "dim": self.dim,
            "tier": self.tier,
            "faces": fingerprint.faces,
            "id_sum": fingerprint.id_sum,
            "max_id": fingerprint.max_id,
        }
        if vector_file is None:
            payload = faiss.serialize_index(self.index).tobytes()
        else:
            header["vec_crc"] = self.vectors.write(vector_file, token)
            header.update(nrows=self.nrows, live=self.live, trained_n=self.trained_n, index_max_id=self.max_id)
            inner = faiss.serialize_index(self.index).tobytes() if self.index is not None else b""
            payload = self.row_ids[: self.nrows].tobytes() + inner
        header["payload_crc"] = zlib.crc32(payload)
        header["payload_len"] = len(payload)
        return header, payload

    def _retire_vector_files(self, path: Path, keep: str, retired: Path | None, dead: np.ndarray, scrub: bool) -> None:
        """Remove the vector files the new checkpoint does not name (unfinished ones included). The one this
        index mapped gets its erased rows zeroed first (``dead``): a process still mapping it keeps its live
        rows. With ``scrub``, any other one (whose rows this index does not know) is zeroed whole."""
        for stale in path.parent.glob(f"{path.name}.*.vec*"):
            if stale.name == vector_path(path, keep).name:
                continue
            if stale == retired:
                if scrub and dead.size:
                    FullPrecisionRows(self.dim).scrub_rows(stale, dead)
                stale.unlink(missing_ok=True)
            elif scrub:
                scrub_file(stale)
            else:
                stale.unlink(missing_ok=True)

    @staticmethod
    def read_header(path: Path) -> dict:
        """The checkpoint's header (journal position, token, fingerprint), its own checksum verified."""
        with open(path, "rb") as handle:
            return parse_header(path, handle)

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        """The checkpoint in ``path``; raises ValueError if any byte of it (or of its vector file) is wrong."""
        with open(path, "rb") as handle:
            header = parse_header(path, handle)
            payload = handle.read()
        if len(payload) != header["payload_len"] or zlib.crc32(payload) != header["payload_crc"]:
            raise ValueError(f"{path}: checksum mismatch (the file is damaged)")
        dim, tier = header["dim"], header["tier"]
        if tier == "flat":
            self = cls(dim, faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8)), header["seq"], tier="flat")
        else:
            nrows = header["nrows"]
            self = cls(dim, seq=header["seq"], tier=tier)
            self.row_ids = np.frombuffer(payload[: 8 * nrows], np.int64).copy()
            inner = payload[8 * nrows :]
            self.index = faiss.deserialize_index(np.frombuffer(inner, dtype=np.uint8)) if inner else None
            self.nrows, self.live, self.trained_n = nrows, header["live"], header["trained_n"]
            self.max_id = header["index_max_id"]
            self.vectors = FullPrecisionRows.load(
                vector_path(path, header["token"]), dim, nrows, header["token"], header["vec_crc"]
            )
        self.token = header["token"]
        if self.fingerprint() != Fingerprint(header["faces"], header["id_sum"], header["max_id"]):
            raise ValueError(f"{path}: holds other faces than its header says")
        return self
