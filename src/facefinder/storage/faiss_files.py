"""The FAISS vector backend: one checkpoint file per collection (and its vector file) under the data dir."""

from __future__ import annotations

from pathlib import Path

from facefinder.storage.files import index_files, scrub_file
from facefinder.storage.index import VectorIndex


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
