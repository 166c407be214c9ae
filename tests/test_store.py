"""The store: erasure (catalog + index, across reopening) and crash consistency of the FAISS index.

The store-level tests use random unit vectors as embeddings (no vision needed) but the real SQLite
catalog and the real FAISS index; the erasure tests go through FaceFinder with the real models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import GROUP, LFW, POLICY, lfw
from sqlalchemy import func, select

from facefinder.errors import CatalogError
from facefinder.storage.catalog import FaceRecord, ImageRecord, JournalEntry
from facefinder.storage.index import VectorIndex
from facefinder.storage.store import FaceStore, NewFace, NewImage

DIM = 192


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def add_photos(
    store: FaceStore, collection: str, vectors: np.ndarray, faces_per_photo: int = 2, tag: str = "p"
) -> list[int]:
    """Store the vectors as photos of ``faces_per_photo`` faces each; returns the image ids."""
    cid = store.collection(collection, create=True, **POLICY).id
    store.set_model(cid, "test-model")
    image_ids = []
    for start in range(0, len(vectors), faces_per_photo):
        chunk = vectors[start : start + faces_per_photo]
        faces = [NewFace([0, 0, 10, 10], [[1, 1]] * 5, 0.9, 0.8, {"score": 0.8}, v, b"thumb") for v in chunk]
        image = NewImage(f"{tag}-{start:05d}", f"/photos/{tag}-{start}.jpg", 100, 100, {"case_id": "K"})
        image_ids.append(store.add_image(cid, image, faces, "test-model"))
    return image_ids


def face_ids(store: FaceStore, collection: str) -> set[int]:
    cid = store.collection(collection).id
    with store.catalog.session() as session:
        return set(session.scalars(select(FaceRecord.id).where(FaceRecord.collection_id == cid)))


def nearest(store: FaceStore, collection: str, vectors: np.ndarray) -> list[tuple[int, float]]:
    cid = store.collection(collection).id
    return [row[0] if row else (None, None) for row in store.search([cid], vectors, 1)]


def journal_length(store: FaceStore) -> int:
    with store.catalog.session() as session:
        return session.scalar(select(func.count()).select_from(JournalEntry))


def crash(store: FaceStore) -> None:
    """Drop the store without close(): no checkpoint, as after kill -9 (SQLite commits are durable)."""
    store.catalog.engine.dispose()


def assert_index_matches_catalog(store: FaceStore, collection: str) -> None:
    cid = store.collection(collection).id
    ids = face_ids(store, collection)
    assert store.index_size(cid) == len(ids)
    index = store.indexes[cid]
    if ids:
        stored = {int(i) for i in index.face_ids()}
        assert stored == ids


# ----- 8. crash consistency: the journal -----------------------------------------------------------
def test_index_is_replayed_from_the_journal_after_a_crash(tmp_path):
    vectors = unit_vectors(20, seed=1)
    store = FaceStore(tmp_path)
    add_photos(store, "c", vectors)
    assert store.index_size(store.collection("c").id) == 20
    assert not (tmp_path / "index").exists() or not list((tmp_path / "index").iterdir())  # never checkpointed
    crash(store)

    reopened = FaceStore(tmp_path)
    assert_index_matches_catalog(reopened, "c")
    hits = nearest(reopened, "c", vectors)
    ids = sorted(face_ids(reopened, "c"))
    assert [fid for fid, _ in hits] == ids  # face ids follow insertion order
    assert all(score == pytest.approx(1.0, abs=1e-5) for _, score in hits)
    reopened.close()


def test_checkpoint_then_more_writes_then_crash(tmp_path):
    first, second = unit_vectors(10, seed=2), unit_vectors(6, seed=3)
    store = FaceStore(tmp_path)
    add_photos(store, "c", first)
    store.checkpoint()
    cid = store.collection("c").id
    assert (tmp_path / "index" / f"collection-{cid}.faiss").is_file()
    assert journal_length(store) == 0  # the checkpoint covers everything, the journal is pruned
    add_photos(store, "c", second, tag="q")
    assert journal_length(store) == 6
    crash(store)

    reopened = FaceStore(tmp_path)
    assert reopened.index_size(cid) == 16
    assert_index_matches_catalog(reopened, "c")
    assert all(s == pytest.approx(1.0, abs=1e-5) for _, s in nearest(reopened, "c", np.vstack([first, second])))
    reopened.close()
    assert journal_length(FaceStore(tmp_path)) == 0


def test_deletes_are_replayed_too(tmp_path):
    vectors = unit_vectors(12, seed=4)
    store = FaceStore(tmp_path)
    image_ids = add_photos(store, "c", vectors, faces_per_photo=3)
    store.checkpoint()
    doomed = sorted(face_ids(store, "c"))[:2]
    assert store.delete_faces(doomed) == 2
    assert store.delete_image(image_ids[-1]) == 3
    crash(store)

    reopened = FaceStore(tmp_path)
    cid = reopened.collection("c").id
    assert reopened.index_size(cid) == 12 - 2 - 3
    assert_index_matches_catalog(reopened, "c")
    hit_ids = {fid for fid, _ in nearest(reopened, "c", vectors)}
    assert not hit_ids & set(doomed)
    reopened.close()


def test_missing_index_file_is_rebuilt_from_the_catalog(tmp_path):
    vectors = unit_vectors(8, seed=5)
    store = FaceStore(tmp_path)
    add_photos(store, "c", vectors)
    store.close()
    index_files = list((tmp_path / "index").glob("*.faiss"))
    assert len(index_files) == 1
    index_files[0].unlink()

    reopened = FaceStore(tmp_path)
    assert_index_matches_catalog(reopened, "c")
    assert reopened.index_size(reopened.collection("c").id) == 8
    assert all(s == pytest.approx(1.0, abs=1e-5) for _, s in nearest(reopened, "c", vectors))
    reopened.close()
    assert index_files[0].is_file()  # and checkpointed again on close


def test_damaged_index_file_is_rebuilt(tmp_path):
    vectors = unit_vectors(8, seed=6)
    store = FaceStore(tmp_path)
    add_photos(store, "c", vectors)
    store.close()
    [index_file] = (tmp_path / "index").glob("*.faiss")
    index_file.write_bytes(b"garbage, as after a disk error")

    reopened = FaceStore(tmp_path)
    assert_index_matches_catalog(reopened, "c")
    assert reopened.index_size(reopened.collection("c").id) == 8
    reopened.close()


def test_stale_index_file_is_not_trusted(tmp_path):
    """An index file older than the pruned journal (restored from a backup, say) is rebuilt."""
    store = FaceStore(tmp_path)
    add_photos(store, "c", unit_vectors(4, seed=7))
    store.checkpoint()
    [index_file] = (tmp_path / "index").glob("*.faiss")
    old = {path: path.read_bytes() for path in (tmp_path / "index").iterdir()}  # with the tiers' .vec file
    add_photos(store, "c", unit_vectors(4, seed=8), tag="later")
    store.close()
    for path, content in old.items():
        path.write_bytes(content)
    assert len(VectorIndex.load(index_file)) == 4

    reopened = FaceStore(tmp_path)
    assert reopened.index_size(reopened.collection("c").id) == 8
    assert_index_matches_catalog(reopened, "c")
    reopened.close()


def test_a_second_store_sees_another_process_writes_and_deletes(tmp_path):
    vectors = unit_vectors(6, seed=9)
    writer, reader = FaceStore(tmp_path), FaceStore(tmp_path)
    add_photos(writer, "c", vectors[:4])
    cid = writer.collection("c").id
    assert {fid for fid, _ in nearest(reader, "c", vectors[:4])} == face_ids(writer, "c")
    add_photos(writer, "c", vectors[4:], tag="more")
    writer.delete_faces([min(face_ids(writer, "c"))])
    reader.refresh()
    assert reader.index_size(cid) == 5
    assert_index_matches_catalog(reader, "c")
    writer.delete_collection("c")
    reader.refresh()
    assert cid not in reader.indexes
    writer.close()
    reader.close()


def test_a_long_lived_store_sees_faces_another_process_checkpointed(tmp_path):
    """Another process ingests and checkpoints (pruning the journal): we must not miss its faces,
    and our own later checkpoint must not persist an index without them."""
    vectors = unit_vectors(8, seed=11)
    server = FaceStore(tmp_path)
    add_photos(server, "c", vectors[:4])
    cid = server.collection("c").id

    ingest = FaceStore(tmp_path)
    add_photos(ingest, "c", vectors[4:], tag="later")
    ingest.close()  # checkpoints and prunes the journal entries of those four faces
    assert journal_length(server) == 0

    assert [fid for fid, _ in nearest(server, "c", vectors)] == sorted(face_ids(server, "c"))
    assert server.index_size(cid) == 8
    server.delete_faces([min(face_ids(server, "c"))])
    server.close()

    reopened = FaceStore(tmp_path)
    assert reopened.index_size(cid) == 7
    assert_index_matches_catalog(reopened, "c")
    reopened.close()


def test_a_rebuilt_index_is_not_rebuilt_again_on_every_refresh(tmp_path):
    store = FaceStore(tmp_path)
    add_photos(store, "c", unit_vectors(4, seed=12))
    store.close()
    next((tmp_path / "index").glob("*.faiss")).unlink()
    reopened = FaceStore(tmp_path)
    cid = reopened.collection("c").id
    rebuilt = reopened.indexes[cid]
    reopened.refresh()
    assert reopened.indexes[cid] is rebuilt
    reopened.close()


def test_engine_sees_photos_ingested_by_another_engine(tmp_path, make_finder):
    reader = make_finder(tmp_path / "data")
    reader.ingest(lfw("Tony_Blair", 1), collection="c", **POLICY)
    [before] = reader.search(lfw("Colin_Powell", 2))
    assert not before.match
    writer = make_finder(tmp_path / "data")
    writer.ingest(lfw("Colin_Powell", 1), collection="c", **POLICY)  # ends with a checkpoint
    writer.close()
    [after] = reader.search(lfw("Colin_Powell", 2))
    assert after.match and Path(after.candidates[0].source).name == "Colin_Powell_0001.jpg"


def test_index_save_is_atomic_and_round_trips(tmp_path):
    index = VectorIndex(DIM, seq=41)
    vectors = unit_vectors(5, seed=10)
    index.add(np.arange(100, 105), vectors)
    index.add(np.array([100]), vectors[:1])  # replaying an add is harmless
    assert len(index) == 5
    path = tmp_path / "x.faiss"
    index.save(path)
    assert not path.with_suffix(".faiss.tmp").exists()
    loaded = VectorIndex.load(path)
    assert (loaded.seq, loaded.dim, len(loaded)) == (41, DIM, 5)
    scores, ids = loaded.search(vectors[2:3], 2)
    assert ids[0, 0] == 102 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert loaded.remove(np.array([102, 999])) == 1 and len(loaded) == 4
    (tmp_path / "bad.faiss").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a facefinder index file"):
        VectorIndex.load(tmp_path / "bad.faiss")


def test_collection_is_bound_to_one_model(tmp_path):
    store = FaceStore(tmp_path)
    cid = store.collection("c", create=True, **POLICY).id
    store.set_model(cid, "model-a")
    store.set_model(cid, "model-a")
    with pytest.raises(CatalogError, match="holds model-a embeddings; cannot add model-b"):
        store.set_model(cid, "model-b")
    with pytest.raises(CatalogError, match="a name is required"):
        store.collection("  ", create=True)
    with pytest.raises(CatalogError, match="'other' does not exist"):
        store.collection("other")
    store.close()


# ----- 7. erasure through the API ------------------------------------------------------------
@pytest.fixture
def populated(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    assert ff.ingest(LFW, collection="lfw", **POLICY).faces == 15
    assert ff.ingest(GROUP / "sample2.jpg", collection="groups", **POLICY).faces == 3
    return ff


def top_face(ff, photo: Path, **kwargs):
    """The stored copy of the first face in ``photo``, or None when it is no longer there."""
    record = ff.search(photo, top_k=1, threshold=0.99, **kwargs)[0]
    return record.candidates[0] if record.candidates else None


def test_delete_face(populated, tmp_path, make_finder):
    ff = populated
    cid = ff.store.collection("lfw").id
    face = top_face(ff, lfw("Tony_Blair", 1))
    assert face is not None and Path(face.source).name == "Tony_Blair_0001.jpg"
    embedding = ff.store.faces([face.face_id])[face.face_id][0].embedding

    assert ff.delete_face(face.face_id) is True
    assert ff.delete_face(face.face_id) is False  # already gone
    assert top_face(ff, lfw("Tony_Blair", 1)) is None
    assert ff.store.faces([face.face_id]) == {}
    assert ff.store.index_size(cid) == 14
    [record] = ff.search(lfw("Tony_Blair", 1), top_k=20, threshold=-1)
    assert face.face_id not in {c.face_id for c in record.candidates}
    # the photo stays (it might hold other faces); only the face is erased
    with ff.store.catalog.session() as session:
        assert session.get(ImageRecord, face.image_id) is not None
    ff.close()

    reopened = make_finder(tmp_path / "data")
    assert reopened.store.index_size(cid) == 14
    assert top_face(reopened, lfw("Tony_Blair", 1)) is None
    assert_index_matches_catalog(reopened.store, "lfw")
    reopened.close()
    # erased means erased: neither the catalog file nor the index file still holds the embedding
    for path in [tmp_path / "data" / "catalog.db", *(tmp_path / "data" / "index").glob("*.faiss")]:
        assert embedding not in path.read_bytes(), path


def test_delete_image(populated, tmp_path, make_finder):
    ff = populated
    cid = ff.store.collection("groups").id
    face = top_face(ff, GROUP / "sample2.jpg")
    assert face.collection == "groups"
    assert ff.delete_image(face.image_id) == 3
    assert ff.store.index_size(cid) == 0
    records = ff.search(GROUP / "sample2.jpg", threshold=-1)
    assert len(records) == 3
    assert all(c.collection == "lfw" for r in records for c in r.candidates)
    with ff.store.catalog.session() as session:
        assert session.get(ImageRecord, face.image_id) is None
        faces_left = select(func.count()).select_from(FaceRecord).where(FaceRecord.image_id == face.image_id)
        assert session.scalar(faces_left) == 0
    with pytest.raises(CatalogError, match=f"image {face.image_id} does not exist"):
        ff.delete_image(face.image_id)
    [info] = [c for c in ff.collections() if c.name == "groups"]
    assert (info.images, info.faces) == (0, 0)
    ff.close()

    reopened = make_finder(tmp_path / "data")
    assert reopened.store.index_size(cid) == 0
    assert reopened.store.index_size(reopened.store.collection("lfw").id) == 15
    # the photo can be ingested again afterwards: it is no longer a duplicate
    assert reopened.ingest(GROUP / "sample2.jpg", collection="groups", **POLICY).ingested == 1


def test_delete_collection(populated, tmp_path, make_finder):
    ff = populated
    cid = ff.store.collection("lfw").id
    index_file = tmp_path / "data" / "index" / f"collection-{cid}.faiss"
    assert index_file.is_file()
    ff.delete_collection("lfw")
    assert [c.name for c in ff.collections()] == ["groups"]
    assert ff.store.index_size(cid) == 0 and not index_file.exists()
    with pytest.raises(CatalogError, match="'lfw' does not exist"):
        ff.search(lfw("Tony_Blair", 1), collections=["lfw"])
    [record] = ff.search(lfw("Tony_Blair", 1), threshold=-1, top_k=50)
    assert {c.collection for c in record.candidates} == {"groups"}
    with ff.store.catalog.session() as session:
        for table in (ImageRecord, FaceRecord):
            assert session.scalar(select(func.count()).select_from(table).where(table.collection_id == cid)) == 0
        journal = select(func.count()).select_from(JournalEntry).where(JournalEntry.collection_id == cid)
        assert session.scalar(journal) == 0
    with pytest.raises(CatalogError):
        ff.delete_collection("lfw")
    ff.close()

    reopened = make_finder(tmp_path / "data")
    assert [c.name for c in reopened.collections()] == ["groups"]
    assert cid not in reopened.store.indexes and not index_file.exists()
    [record] = reopened.search(lfw("Tony_Blair", 1), threshold=-1, top_k=50)
    assert {c.collection for c in record.candidates} == {"groups"}


def test_deleted_then_recreated_collection_starts_empty(populated, tmp_path, make_finder):
    ff = populated
    ff.delete_collection("lfw")
    report = ff.ingest(lfw("Tony_Blair", 1), collection="lfw", **POLICY)
    assert report.ingested == 1 and report.duplicates == 0
    cid = ff.store.collection("lfw").id
    assert ff.store.index_size(cid) == 1
    ff.close()
    reopened = make_finder(tmp_path / "data")
    assert reopened.store.index_size(reopened.store.collection("lfw").id) == 1
    assert_index_matches_catalog(reopened.store, "lfw")
