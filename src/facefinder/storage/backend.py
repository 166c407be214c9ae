"""The seam between the face store and where vectors live: FAISS files (faiss_files.py) or Milvus (milvus.py).

The store keeps the catalog and the journal; a backend keeps one ``CollectionIndex`` per collection and
saves it as a checkpoint. Everything about crash safety and concurrency (journal replay, checkpoint
locks, the index == catalog proof) is written once in store.py and opening.py against these two protocols.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class CollectionIndex(Protocol):
    """One collection's vectors, keyed by catalog face id; scores are exact cosines."""

    dim: int
    tier: str
    seq: int  # the last journal entry it reflects
    token: str | None  # the checkpoint it was loaded from or last saved as
    basis: str | None  # the catalog's checkpoint token when it was loaded (see FaceStore.refresh)
    dirty: bool  # changed since the last save
    removed: bool  # faces removed since the last save (the next save scrubs the old files)

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> int: ...

    def reset(self, dim: int) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def above(self, queries: np.ndarray, threshold: float) -> list[list[tuple[int, float]]]: ...

    def face_ids(self) -> np.ndarray: ...


class VectorBackend(Protocol):
    """Loads, makes, saves and drops the collections' indexes."""

    def describe(self) -> str: ...

    def load(self, cid: int) -> CollectionIndex | None:
        """The saved checkpoint (None if there is none); raises if it is damaged."""

    def new(self, cid: int, dim: int, seq: int = 0, tier: str | None = None) -> CollectionIndex: ...

    def save(self, cid: int, index: CollectionIndex, scrub: bool = False) -> None: ...

    def drop(self, cid: int) -> None: ...

    def close(self) -> None: ...
