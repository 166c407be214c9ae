"""The index tiers (storage/index.py): flat, HNSW and IVF-PQ + exact re-rank behind one VectorIndex.

The whole store suite (test_store.py) also runs once per non-default tier (test_store_tiers.py), forced
with FACEFINDER_INDEX_TIER; these tests check what is particular to the tiers: exact scores after
the re-rank, rebuilds as a collection grows, removal that never returns a face and leaves no bytes.
"""

from __future__ import annotations

import numpy as np
import pytest

from facefinder.storage import index as tiers
from facefinder.storage.index import VectorIndex, tier_for

DIM = 192


def unit(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def faces_like(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Five samples per identity (cosine ~0.7 within one), as in benchmarks/scale.py."""
    rng = np.random.default_rng(seed)
    centres = unit(count // 5, seed)
    sigma = np.sqrt((1 / 0.7 - 1) / DIM)
    samples = np.repeat(centres, 5, axis=0) + rng.normal(scale=sigma, size=(count // 5 * 5, DIM)).astype(np.float32)
    samples /= np.linalg.norm(samples, axis=1, keepdims=True)
    return samples.astype(np.float32), np.repeat(np.arange(count // 5), 5)


@pytest.fixture(params=["hnsw", "ivfpq"])
def tier(request, monkeypatch):
    monkeypatch.setenv("FACEFINDER_INDEX_TIER", request.param)
    return request.param


def test_tier_for_thresholds_and_override(monkeypatch):
    monkeypatch.delenv("FACEFINDER_INDEX_TIER", raising=False)
    assert [tier_for(n) for n in (0, tiers.FLAT_MAX - 1, tiers.FLAT_MAX, tiers.HNSW_MAX)] == [
        "flat",
        "flat",
        "hnsw",
        "ivfpq",
    ]
    assert tier_for(tiers.FLAT_MAX - 10, "hnsw") == "hnsw"  # hysteresis: down only at half the threshold
    assert tier_for(tiers.FLAT_MAX // 2 - 1, "hnsw") == "flat"
    monkeypatch.setenv("FACEFINDER_INDEX_TIER", "ivfpq")
    assert tier_for(3) == "ivfpq" and VectorIndex(DIM).tier == "ivfpq"
    monkeypatch.setenv("FACEFINDER_INDEX_TIER", "bogus")
    with pytest.raises(ValueError, match="FACEFINDER_INDEX_TIER"):
        tier_for(3)


def test_reranked_scores_are_exact_cosines(tier, monkeypatch):
    monkeypatch.setattr(tiers, "EXACT_BELOW", 0)  # probe only some IVF lists, as at scale
    vectors, people = faces_like(5000, seed=1)
    ids = np.arange(10, 10 + len(vectors))
    index = VectorIndex(DIM)
    assert index.tier == tier
    index.add(ids, vectors)
    queries = vectors[::250] + np.random.default_rng(2).normal(scale=0.01, size=(20, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, found = index.search(queries, 10)
    exact = queries @ vectors.T
    found_mates = 0
    for q in range(len(queries)):
        assert (found[q] >= 0).all()
        np.testing.assert_allclose(scores[q], exact[q, found[q] - 10], rtol=0, atol=1e-5)
        assert (np.diff(scores[q]) <= 1e-7).all()
        found_mates += len(set(ids[people == people[q * 250]]) & set(found[q]))
    assert found_mates >= 0.95 * 5 * len(queries)  # same-identity faces in the top 10 (approximate tiers)


def test_collection_is_rebuilt_into_the_next_tier_as_it_grows(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEFINDER_INDEX_TIER", raising=False)
    monkeypatch.setattr(tiers, "FLAT_MAX", 200)
    monkeypatch.setattr(tiers, "HNSW_MAX", 600)
    vectors = unit(1500, seed=3)
    path = tmp_path / "collection-1.faiss"
    index = VectorIndex(DIM)
    held = 0
    for upto, expected in ((150, "flat"), (400, "hnsw"), (1500, "ivfpq")):
        index.add(np.arange(held, upto), vectors[held:upto])  # incremental: no rebuild on insert
        held = upto
        index.seq = upto
        index.save(path)  # the checkpoint moves it into its tier
        assert index.tier == expected
        loaded = VectorIndex.load(path)
        assert (loaded.tier, len(loaded), loaded.seq) == (expected, upto, upto)
        assert sorted(loaded.face_ids()) == list(range(upto))
        scores, ids = loaded.search(vectors[upto - 1 : upto], 1)
        assert ids[0, 0] == upto - 1 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
        index = loaded
    assert len(list(tmp_path.glob("collection-1.faiss.*.vec"))) == 1  # named by the checkpoint token
    # Inserts into the IVF-PQ tier go into the trained index; a shrunk collection goes back to flat.
    index.add(np.arange(1500, 1510), unit(10, seed=4))
    assert len(index) == 1510 and index.tier == "ivfpq"
    index.remove(np.arange(0, 1400))
    index.save(path)
    assert index.tier == "flat" and len(index) == 110
    assert not list(tmp_path.glob("collection-1.faiss.*.vec"))


def test_removed_faces_are_never_returned_and_their_bytes_are_gone(tier, tmp_path):
    vectors = unit(600, seed=5)
    ids = np.arange(1, 601)
    path = tmp_path / "collection-7.faiss"
    index = VectorIndex(DIM)
    index.add(ids, vectors)
    index.save(path)
    doomed = np.arange(1, 601, 7)  # 86 faces, over the 10 % that triggers a compaction
    assert index.remove(doomed) == len(doomed)
    # In between (before any checkpoint): never returned, by top-k or by the exhaustive scan.
    scores, found = index.search(vectors[doomed - 1], 5)
    assert not set(found.ravel()) & set(doomed)
    assert not {i for row in index.above(vectors[doomed - 1], 0.3) for i, _ in row} & set(doomed)
    index.save(path, scrub=True)
    assert index.nrows == index.live == 600 - len(doomed)  # compacted: no holes left
    disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for v in vectors[doomed - 1]:
        assert v.tobytes()[:64] not in disk and v.tobytes()[-64:] not in disk
    assert vectors[1].tobytes() in disk  # the kept ones are (full precision, for the re-rank)
    loaded = VectorIndex.load(path)
    assert len(loaded) == 600 - len(doomed)
    scores, found = loaded.search(vectors[doomed - 1], 5)
    assert not set(found.ravel()) & set(doomed)


def test_a_few_removals_are_zeroed_in_place_without_a_rebuild(tier, tmp_path):
    vectors = unit(300, seed=6)
    path = tmp_path / "collection-2.faiss"
    index = VectorIndex(DIM)
    index.add(np.arange(300), vectors)
    index.save(path)
    index.remove(np.array([5, 6]))
    index.save(path, scrub=True)
    assert (index.nrows, index.live) == (300, 298)  # holes, under the compaction threshold
    disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert vectors[5].tobytes()[:64] not in disk and vectors[6].tobytes()[-64:] not in disk
    loaded = VectorIndex.load(path)
    _, found = loaded.search(vectors[[5, 6]], 3)
    assert not {5, 6} & set(found.ravel())
    loaded.add(np.array([5]), vectors[5:6])  # re-adding an id after removal works
    assert loaded.search(vectors[5:6], 1)[1][0, 0] == 5


def test_vector_file_that_does_not_match_its_index_is_refused(tier, tmp_path):
    path = tmp_path / "collection-3.faiss"
    index = VectorIndex(DIM)
    index.add(np.arange(50), unit(50, seed=8))
    index.save(path)
    old = path.read_bytes()
    index.rebuild()  # a compaction writes the vectors under a new token ...
    index.save(path)
    path.write_bytes(old)  # ... and a crash left the old index file
    with pytest.raises(ValueError, match="does not match"):
        VectorIndex.load(path)


@pytest.mark.parametrize("dim", [128, 512, 100, 97])
def test_any_embedding_size_works(tier, dim):
    """Custom recognizers bring other sizes; PQ needs a sub-quantiser count that divides the size."""
    assert dim % tiers.pq_m(dim) == 0 and tiers.pq_m(192) == tiers.PQ_M
    vectors = np.random.default_rng(dim).normal(size=(40, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(dim)
    index.add(np.arange(40), vectors)
    scores, ids = index.search(vectors[:3], 1)
    assert list(ids[:, 0]) == [0, 1, 2] and scores[:, 0] == pytest.approx(1.0, abs=1e-5)
