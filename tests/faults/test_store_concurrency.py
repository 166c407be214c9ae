"""Many processes on one store at once: writers checkpointing, a long-lived reader that closes last (as a
server stopped after an ingest does), erasers. Nothing stored may be lost, nothing erased may come back.

Store-level (random unit vectors, no vision), on the real SQLite + FAISS, and on PostgreSQL + Milvus
when CI provides them (FACEFINDER_TEST_POSTGRES_URL, FACEFINDER_TEST_MILVUS_URI).
"""

from __future__ import annotations

import time

import pytest
from helpers import POLICY
from integrity import assert_sound, finish, postgres_and_milvus, worker
from sqlalchemy import select
from store_worker import COLLECTION, FACES_PER_PHOTO

from facefinder.storage.catalog import FaceRecord
from facefinder.storage.store import FaceStore


@pytest.fixture(params=["sqlite+faiss", "sqlite+faiss-hnsw", "postgresql+milvus"])
def backend(request, tmp_path, monkeypatch):
    """(catalog url, vectors) for one store, with the environment the worker processes read."""
    if request.param == "postgresql+milvus":
        yield from postgres_and_milvus(monkeypatch)
        return
    if request.param.endswith("hnsw"):
        monkeypatch.setenv("FACEFINDER_INDEX_TIER", "hnsw")  # memory-mapped vector files, shared between processes
    yield None, None


def create_collection(data_dir, url, vectors) -> None:
    store = FaceStore(data_dir, url, vectors)
    store.set_model(store.collection(COLLECTION, create=True, **POLICY).id, "test-model")
    store.close()


def stored_faces(data_dir, url, vectors) -> int:
    store = FaceStore(data_dir, url, vectors)
    with store.catalog.session() as session:
        count = len(list(session.scalars(select(FaceRecord.id))))
    store.close()
    return count


@pytest.mark.slow
def test_writers_checkpointing_and_a_stale_reader_lose_nothing(tmp_path, backend):
    url, vectors = backend
    data = tmp_path / "data"
    create_collection(data, url, vectors)
    reader = worker("read", data, 6)  # opens first, closes last: its checkpoint must not win
    time.sleep(1.5)
    writers = [worker("write", data, f"w{n}", 60, every) for n, every in enumerate((7, 11, 0))]
    finish(*writers, reader)
    assert stored_faces(data, url, vectors) == 3 * 60 * FACES_PER_PHOTO
    assert assert_sound(data, url, vectors) == 3 * 60 * FACES_PER_PHOTO


@pytest.mark.slow
def test_erasing_while_others_write_and_read(tmp_path, backend):
    url, vectors = backend
    data = tmp_path / "data"
    create_collection(data, url, vectors)
    finish(worker("write", data, "base", 40, 10))
    reader = worker("read", data, 5)
    writers = [worker("write", data, f"w{n}", 40, 9) for n in range(2)]
    eraser = worker("erase", data, 1, 15)
    finish(*writers, eraser, reader)
    # 120 photos written, 15 erased
    assert stored_faces(data, url, vectors) == (120 - 15) * FACES_PER_PHOTO
    assert_sound(data, url, vectors)


def test_a_store_opened_before_another_checkpoints_never_saves_an_older_index(tmp_path):
    """The stale-checkpoint bug in one process: B opens, A writes and checkpoints, B closes."""
    data = tmp_path / "data"
    create_collection(data, None, None)
    early = FaceStore(data)
    cid = early.collection(COLLECTION).id
    finish(worker("write", data, "a", 30, 10))
    early.indexes[cid].dirty = True  # as after any replay: it will save at close
    early.close()
    assert assert_sound(data) == 30 * FACES_PER_PHOTO
