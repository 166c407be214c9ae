"""Damaged files: a lost or damaged SQLite WAL, a flipped bit in any index file, a stray index file.

A catalog that lost committed photos must never be served as if whole: before this, the index kept the
lost photos' vectors and the next ingest reused their face ids, so a probe of one person returned
another person's photo at score 1.0. A flipped bit in an index file must never serve a wrong vector.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from integrity import assert_sound, finish, worker
from store_worker import COLLECTION, embedding
from test_store import add_photos, unit_vectors
from test_store_concurrency import create_collection

from facefinder.errors import CatalogError
from facefinder.storage.catalog import Catalog
from facefinder.storage.store import FaceStore


def ingest_into_wal(data, photos: int = 30) -> None:
    """A collection whose catalog file is clean, then ``photos`` more photos that sit only in the WAL,
    with an index checkpoint that holds them (a process that checkpointed and was then killed)."""
    create_collection(data, None, None)
    finish(worker("write", data, "early", 10, 0))
    catalog = Catalog(f"sqlite:///{data / 'catalog.db'}")
    catalog.truncate_wal()  # the first ten are in catalog.db itself
    catalog.close()
    finish(worker("write", data, "late", photos, 0, env={"FF_WORKER_EXIT_HARD": "1"}))
    assert (data / "catalog.db-wal").stat().st_size > 0


def damage_wal(data, how: str) -> None:
    wal = data / "catalog.db-wal"
    if how.startswith("removed"):  # as in a copy of catalog.db made without its -wal (and -shm) files
        wal.unlink()
        if how == "removed":
            (data / "catalog.db-shm").unlink(missing_ok=True)
    elif how == "truncated":
        with open(wal, "r+b") as handle:
            handle.truncate(wal.stat().st_size // 3)
    else:  # the header's salt and checksum zeroed: SQLite ignores every frame
        with open(wal, "r+b") as handle:
            handle.write(b"\0" * 32)


@pytest.mark.parametrize("how", ["removed", "removed-keeping-shm", "truncated", "zeroed-header"])
def test_a_lost_wal_is_noticed_and_no_lost_id_is_reused(tmp_path, how):
    data = tmp_path / "data"
    ingest_into_wal(data)
    damage_wal(data, how)

    store = FaceStore(data)
    cid = store.collection(COLLECTION).id
    with pytest.raises(CatalogError, match="lost committed data.*check --repair"):
        store.search([cid], embedding("early", 0, 0)[None, :], 1)
    with pytest.raises(CatalogError, match="lost committed data"):
        add_photos(store, COLLECTION, unit_vectors(2, seed=5), tag="refused")
    problems = store.check()
    assert [p.kind for p in problems] == ["catalog-lost-data"], [p.message for p in problems]
    store.close()

    store = FaceStore(data)
    claimed_max = max(int(i) for i in store.vectors.load(cid).face_ids())
    repaired = store.check(repair=True)
    assert repaired and all(p.repaired for p in repaired)
    add_photos(store, COLLECTION, unit_vectors(2, seed=6), tag="after")
    store.close()
    assert assert_sound(data) >= 2
    store = FaceStore(data)
    top = store.search([cid], unit_vectors(2, seed=6), 1)
    assert all(pair[0][0] > claimed_max and pair[0][1] > 0.999 for pair in top), (top, claimed_max)
    # the early photos, in catalog.db itself, are all still found
    early = np.stack([embedding("early", photo, face) for photo in range(10) for face in range(2)])
    assert all(row[0][1] > 0.999 for row in store.search([cid], early, 1))
    store.close()


def flip_bit(path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    at = rng.randrange(len(data))
    data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "tier,file",
    [("flat", ".faiss"), ("hnsw", ".faiss"), ("hnsw", ".faiss.*.vec"), ("ivfpq", ".faiss"), ("ivfpq", ".faiss.*.vec")],
)
def test_a_flipped_bit_in_an_index_file_is_caught_and_rebuilt(tmp_path, monkeypatch, tier, file):
    monkeypatch.setenv("FACEFINDER_INDEX_TIER", tier)
    rng = random.Random(f"{tier}{file}")
    vectors = unit_vectors(40, seed=3)
    for trial in range(4):  # a bit in the header, and anywhere else
        data = tmp_path / f"data{trial}"
        store = FaceStore(data)
        add_photos(store, "c", vectors)
        cid = store.collection("c").id
        store.close()
        target = next((data / "index").glob(f"collection-{cid}{file}"))
        if trial == 0:
            raw = bytearray(target.read_bytes())
            raw[min(20, len(raw) - 1)] ^= 0x10
            target.write_bytes(bytes(raw))
        else:
            flip_bit(target, rng)
        store = FaceStore(data)
        assert [p.kind for p in store.check()] == ["index-damaged"]
        assert [row[0][1] > 0.999 for row in store.search([cid], vectors, 1)] == [True] * 40
        assert all(p.repaired for p in store.check(repair=True))  # saves the rebuilt index
        store.close()
        assert assert_sound(data) == 40


def test_check_finds_and_removes_a_stray_index_file(tmp_path):
    data = tmp_path / "data"
    store = FaceStore(data)
    add_photos(store, "c", unit_vectors(4, seed=1))
    store.close()
    stray = data / "index" / "collection-99.faiss"
    stray.write_bytes(b"left over")
    unfinished = data / "index" / "collection-1.faiss.0123456789abcdef.vec.tmp"  # a save killed midway
    unfinished.write_bytes(b"vectors")
    store = FaceStore(data)
    assert not unfinished.exists()  # opening sweeps what an interrupted save left beside a live checkpoint
    assert [p.kind for p in store.check()] == ["orphan-index-file"]  # a file of no collection: evidence, kept
    assert all(p.repaired for p in store.check(repair=True))
    assert not stray.exists()
    store.close()
    assert_sound(data)


def test_the_check_command_reports_repairs_and_is_audited(tmp_path):
    from typer.testing import CliRunner

    from facefinder.interfaces.cli import app
    from facefinder.services.audit import AuditLog

    data = tmp_path / "data"
    store = FaceStore(data)
    add_photos(store, "c", unit_vectors(6, seed=2))
    store.close()
    run = lambda *args: CliRunner().invoke(app, ["--data-dir", str(data), "check", *args])  # noqa: E731
    ok = run()
    assert ok.exit_code == 0 and "ok:" in ok.stdout, ok.stdout
    flip_bit(next((data / "index").glob("collection-*.faiss")), random.Random(1))
    found = run()
    assert found.exit_code == 1 and "problem: collection 'c': index checkpoint unusable" in found.stdout, found.stdout
    repaired = run("--repair", "--json")
    report = json.loads(repaired.stdout)
    assert repaired.exit_code == 0 and report["ok"] and report["problems"][0]["kind"] == "index-damaged"
    assert run().exit_code == 0
    catalog = Catalog(f"sqlite:///{data / 'catalog.db'}")
    checks = [e for e in AuditLog(catalog).entries() if e.action == "store.check"]
    catalog.close()
    assert len(checks) == 4 and json.loads(checks[2].details)["repaired"] == 1
