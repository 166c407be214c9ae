"""The full-precision vectors of the ``hnsw`` and ``ivfpq`` tiers (storage/index.py), one float32 row a face.

Those tiers label FAISS entries by row number in this store, kept beside the index file in
``<index file>.<token>.vec`` and memory-mapped: every reported score is the exact float32 inner product
with it, as in the flat tier. Rows added since the last checkpoint are in RAM (inserts need no
rebuild); a removed row is zeroed at once, in the mapped file too. Each checkpoint writes a new vector
file under a new token, which the index file names, so a crash between the two writes is seen as a
damaged checkpoint and rebuilt from the catalog. A mapped vector file is never written in place (the
mapping is copy-on-write): another process may be reading it.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facefinder.storage.files import written_file

VEC_MAGIC = b"FFVEC1\0\0"  # + the 16-character token + i64 dimension, padded to VEC_HEADER bytes; then the rows
VEC_HEADER = 64


class FullPrecisionRows:
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
        self.tail[self.ntail : need] = vectors
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
                self.base[row] = 0  # a private (copy-on-write) page: the file is rewritten at the next save
            else:
                self.tail[row - self.nbase] = 0

    def chunks(self, size: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, block) over every row, for exhaustive scans and rebuilds."""
        for start in range(0, self.nbase, size):
            yield start, np.asarray(self.base[start : min(start + size, self.nbase)])
        for start in range(0, self.ntail, size):
            yield self.nbase + start, self.tail[start : min(start + size, self.ntail)]

    def all(self) -> np.ndarray:
        parts = [block for _, block in self.chunks()]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def write(self, path: Path, token: str) -> int:
        """Write every row to a new file ``path`` (named by ``token``); returns its CRC-32. The rows stay where
        they are (``adopt`` moves them to the file once the index file that names it is in place).

        A written file is never appended to, truncated or overwritten, so another process that maps it
        (a server beside an ingest) never reads past its end or sees a live row change.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        crc = 0
        with written_file(tmp) as handle:
            handle.write((VEC_MAGIC + token.encode() + struct.pack("<q", self.dim)).ljust(VEC_HEADER, b"\0"))
            for _, block in self.chunks():
                data = np.ascontiguousarray(block).tobytes()
                crc = zlib.crc32(data, crc)
                handle.write(data)
        os.replace(tmp, path)
        return crc

    def adopt(self, path: Path, token: str) -> None:
        """Serve every row from the file ``write`` made (the index file that names it is saved)."""
        self.token = token
        self.open(path, len(self))

    def scrub_rows(self, path: Path, rows: np.ndarray) -> None:
        """Zero ``rows`` of the vector file ``path`` on disk: erased faces' rows in a file being retired.
        Only dead rows are touched, so a process still mapping the file loses nothing it may serve."""
        if not len(rows):
            return
        zeros = b"\0" * (self.dim * 4)
        with open(path, "r+b") as handle:
            for row in np.asarray(rows, np.int64):
                handle.seek(VEC_HEADER + int(row) * self.dim * 4)
                handle.write(zeros)
            handle.flush()
            os.fsync(handle.fileno())

    def open(self, path: Path, rows: int) -> None:
        self.base = np.memmap(path, np.float32, "c", VEC_HEADER, (rows, self.dim)) if rows else None
        self.nbase, self.path = rows, path
        self.tail, self.ntail = np.zeros((0, self.dim), np.float32), 0

    @classmethod
    def load(cls, path: Path, dim: int, rows: int, token: str, crc: int) -> FullPrecisionRows:
        if not path.is_file():
            raise ValueError(f"{path}: missing (the index file does not match the vector files beside it)")
        with open(path, "rb") as handle:
            header = handle.read(VEC_HEADER)
            if not header.startswith(VEC_MAGIC) or header[8:24].decode(errors="replace") != token:
                raise ValueError(f"{path}: does not match its index file")
            if handle.seek(0, 2) != VEC_HEADER + rows * dim * 4:
                raise ValueError(f"{path}: does not match its index file (size)")
            handle.seek(VEC_HEADER)
            found = 0
            while block := handle.read(1 << 24):
                found = zlib.crc32(block, found)
            if found != crc:
                raise ValueError(f"{path}: checksum mismatch (the file is damaged)")
        vectors = cls(dim)
        vectors.token = token
        vectors.open(path, rows)
        return vectors
