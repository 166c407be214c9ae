"""What every fault test asserts afterwards: the store is sound and serves exactly what the catalog holds."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import select

from facefinder.storage.catalog import FaceRecord
from facefinder.storage.store import FaceStore

WORKER = Path(__file__).resolve().parent / "store_worker.py"


def postgres_and_milvus(monkeypatch):
    """Generator for a fixture: (catalog url, vectors) of a fresh PostgreSQL database and Milvus namespace,
    also set as FACEFINDER_DATABASE_URL / FACEFINDER_VECTORS for the processes a test starts; skips the
    test when CI's servers are not there (.ci/run starts both)."""
    import pytest

    milvus = os.environ.get("FACEFINDER_TEST_MILVUS_URI")
    if not (os.environ.get("FACEFINDER_TEST_POSTGRES_URL") and milvus):
        pytest.skip("needs FACEFINDER_TEST_POSTGRES_URL and FACEFINDER_TEST_MILVUS_URI (.ci/run starts both)")
    from service_helpers import make_backend

    made = make_backend("postgresql")
    url, vectors = made.new_url(), f"{milvus}/t{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("FACEFINDER_DATABASE_URL", url)
    monkeypatch.setenv("FACEFINDER_VECTORS", vectors)
    yield url, vectors
    made.drop_all()


def worker(*args: object, env: dict | None = None) -> subprocess.Popen:
    """Start store_worker.py in its own process."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(*processes: subprocess.Popen, timeout: float = 300) -> None:
    for process in processes:
        out, _ = process.communicate(timeout=timeout)
        assert process.returncode == 0, out


def assert_sound(
    data_dir: Path, url: str | None = None, vectors: str | None = None, erased: set[int] = frozenset()
) -> int:
    """A fresh process's view: ``check`` finds nothing, the index holds exactly the catalog's faces, every
    stored face is found by searching itself (rank 1, score >= 0.99), and no erased face is held.
    Returns how many faces are stored."""
    store = FaceStore(data_dir, url, vectors)
    try:
        # An erasure killed between its commit and its checkpoint is pending (never served); this store's
        # close completes it, which the check at the end proves.
        problems = [p for p in store.check() if p.kind != "erasure-pending"]
        assert problems == [], [p.message for p in problems]
        with store.catalog.session() as session:
            rows = session.execute(select(FaceRecord.id, FaceRecord.collection_id, FaceRecord.embedding)).all()
        assert not erased & {r.id for r in rows}
        for cid in {r.collection_id for r in rows}:
            ids = [r.id for r in rows if r.collection_id == cid]
            held = set(store.indexes[cid].face_ids().tolist())
            assert held == set(ids), f"index lacks {len(set(ids) - held)}, holds {len(held - set(ids))} extra"
            assert not held & erased
            vectors_ = np.stack([np.frombuffer(r.embedding, np.float32) for r in rows if r.collection_id == cid])
            for start in range(0, len(ids), 256):
                found = store.search([cid], vectors_[start : start + 256], 1)
                for face_id, top in zip(ids[start : start + 256], found):
                    assert top and top[0][1] >= 0.99, f"face {face_id} does not find itself: {top}"
                    assert top[0][0] == face_id or top[0][1] >= 0.9999, f"face {face_id} finds {top}"
    finally:
        store.close()
    again = FaceStore(data_dir, url, vectors)
    try:
        leftover = again.check()
        assert leftover == [], [p.message for p in leftover]
    finally:
        again.close()
    return len(rows)
