"""An exact inner-product index over a small set of templates, searched on the calling thread.

What the opt-out list screens every probe and ingested face against: a few thousand templates at
most, so a flat scan is exact and fast, and running it on one thread keeps it from competing with
the ingest workers or the search threads around it.
"""

from __future__ import annotations

import faiss
import numpy as np


class ExactIndex:
    """Unit vectors in rows; ``best`` returns each query's best score and the row that gave it."""

    def __init__(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        self._index = faiss.IndexFlatIP(vectors.shape[1])
        self._index.add(vectors)

    def __len__(self) -> int:
        return self._index.ntotal

    @property
    def dim(self) -> int:
        return self._index.d

    def best(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), one each per query; rows are -1 where the index is empty."""
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # this thread only (OpenMP settings are per thread)
        try:
            scores, rows = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
        finally:
            faiss.omp_set_num_threads(threads)
        return scores[:, 0], rows[:, 0]
