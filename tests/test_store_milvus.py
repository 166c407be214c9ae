"""The store suite again with the vectors in a real Milvus server, plus what only Milvus can get wrong.

Needs a running Milvus (``eval "$(.ci/milvus.sh start)"``, as ``.ci/run`` does); skipped when
FACEFINDER_TEST_MILVUS_URI is unset. Each test gets its own namespace on that server.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers import POLICY, lfw
from test_store import (  # noqa: F401  (the backend-neutral tests, collected again here on Milvus)
    add_photos,
    assert_index_matches_catalog,
    face_ids,
    nearest,
    populated,
    test_a_long_lived_store_sees_faces_another_process_checkpointed,
    test_a_second_store_sees_another_process_writes_and_deletes,
    test_collection_is_bound_to_one_model,
    test_delete_face,
    test_delete_image,
    test_deleted_then_recreated_collection_starts_empty,
    test_deletes_are_replayed_too,
    test_engine_sees_photos_ingested_by_another_engine,
    test_index_is_replayed_from_the_journal_after_a_crash,
    unit_vectors,
)

from facefinder.storage.store import FaceStore

MILVUS = os.environ.get("FACEFINDER_TEST_MILVUS_URI")
pytestmark = pytest.mark.skipif(not MILVUS, reason="FACEFINDER_TEST_MILVUS_URI is not set (see .ci/milvus.sh)")


@pytest.fixture(autouse=True)
def milvus_namespace(monkeypatch):
    """Every FaceStore this test opens keeps its vectors in a fresh Milvus namespace, dropped afterwards."""
    namespace = f"t{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("FACEFINDER_VECTORS", f"{MILVUS}/{namespace}")
    yield namespace
    from pymilvus import connections, utility

    connections.connect("cleanup", uri=MILVUS.replace("milvus://", "http://"))
    for name in utility.list_collections(using="cleanup"):
        if name.startswith(namespace + "_"):
            utility.drop_collection(name, using="cleanup")
    connections.disconnect("cleanup")


def test_vectors_live_in_milvus_not_in_files(tmp_path, milvus_namespace):
    store = FaceStore(tmp_path)
    add_photos(store, "c", unit_vectors(6, seed=20))
    store.close()
    assert not (tmp_path / "index").exists()
    reopened = FaceStore(tmp_path)
    cid = reopened.collection("c").id
    assert reopened.vectors.name(cid) == f"{milvus_namespace}_c{cid}"
    assert reopened.index_size(cid) == 6 and reopened.indexes[cid].tier == "milvus"
    assert_index_matches_catalog(reopened, "c")
    reopened.close()


def test_a_lost_milvus_collection_is_rebuilt_from_the_catalog(tmp_path):
    vectors = unit_vectors(8, seed=21)
    store = FaceStore(tmp_path)
    add_photos(store, "c", vectors)
    store.close()
    other = FaceStore(tmp_path)
    other.vectors.drop(other.collection("c").id)  # as if the Milvus server lost it
    other.catalog.close()

    reopened = FaceStore(tmp_path)
    assert_index_matches_catalog(reopened, "c")
    assert all(s == pytest.approx(1.0, abs=1e-5) for _, s in nearest(reopened, "c", vectors))
    reopened.close()


def test_scores_are_exact_and_ranges_complete(tmp_path):
    vectors = unit_vectors(300, seed=22)
    store = FaceStore(tmp_path)
    add_photos(store, "c", vectors, faces_per_photo=3)
    cid = store.collection("c").id
    ids = np.array(sorted(face_ids(store, "c")))
    queries = unit_vectors(5, seed=23)
    exact = queries @ vectors.T
    for q, row in enumerate(store.search([cid], queries, 10)):
        best = np.argsort(-exact[q])[:10]
        assert [fid for fid, _ in row] == ids[best].tolist()
        assert [s for _, s in row] == pytest.approx(exact[q, best].tolist(), abs=1e-6)
    # the seven best of query 0 (a hair below the 7th: a dot product summed in another order can differ by 1 ulp)
    threshold = float(np.sort(exact[0])[-7]) - 1e-6
    [found] = store.search_above([cid], queries[:1], threshold)
    assert [fid for fid, _ in found] == ids[np.argsort(-exact[0])[:7]].tolist()
    store.close()


def test_a_deleted_face_is_never_returned_even_to_another_process(tmp_path):
    """Milvus applies deletes to reads lazily; the catalog check must keep them out at once."""
    vectors = unit_vectors(200, seed=24)
    writer, reader = FaceStore(tmp_path), FaceStore(tmp_path)
    add_photos(writer, "c", vectors, faces_per_photo=4)
    writer.checkpoint()
    doomed = sorted(face_ids(writer, "c"))[::2]
    writer.delete_faces(doomed)
    cid = reader.collection("c").id
    reader.refresh()
    returned = {fid for row in reader.search([cid], vectors, 5) for fid, _ in row}
    assert returned and not returned & set(doomed)
    assert not {fid for row in reader.search_above([cid], vectors, 0.5) for fid, _ in row} & set(doomed)
    writer.close()
    reader.close()


def test_erasure_removes_the_vector_from_milvus_storage(tmp_path):
    """After an erasure the store compacts; with the test server's short garbage-collection and message
    retention settings (.ci/milvus.sh), the erased vector's bytes then leave Milvus's data directory."""
    server_dir = os.environ.get("FACEFINDER_TEST_MILVUS_DIR")
    if not server_dir:
        pytest.skip("FACEFINDER_TEST_MILVUS_DIR is not set")
    vectors = unit_vectors(400, seed=25)
    store = FaceStore(tmp_path)
    add_photos(store, "c", vectors)
    store.checkpoint()
    erased = sorted(face_ids(store, "c"))[:1]
    needle = vectors[0].tobytes()[:64]
    assert holding(Path(server_dir), needle), "the vector should be on the server's disk before erasure"
    store.delete_faces(erased)
    store.compact()
    deadline = time.time() + 120
    while holding(Path(server_dir), needle, skip_message_log=True) and time.time() < deadline:
        time.sleep(3)
    assert not holding(Path(server_dir), needle, skip_message_log=True)
    store.close()


def holding(root: Path, needle: bytes, skip_message_log: bool = False) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if not path.is_file() or (skip_message_log and "rocksmq" in path.parts):
            continue
        try:
            if needle in path.read_bytes():
                hits.append(str(path))
        except OSError:
            continue
    return hits


def test_engine_search_and_erasure_on_milvus(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    ff.ingest(lfw("Colin_Powell", 1), collection="c", **POLICY)
    [record] = ff.search(lfw("Colin_Powell", 2))
    assert record.match and Path(record.candidates[0].source).name == "Colin_Powell_0001.jpg"
    ff.delete_image(record.candidates[0].image_id)
    [record] = ff.search(lfw("Colin_Powell", 2))
    assert not record.candidates
