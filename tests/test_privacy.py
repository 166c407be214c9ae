"""Privacy by design: erasure, opt-out by face, retention and purge, consent withdrawal, subject access.

The first test is the scripted end-to-end privacy run of issue 4, through the command line: ingest a
gallery; opt a person out by a different photo of them; their faces are gone from search, from the
catalog, from thumbnails and from the files on disk (index, catalog.db and its WAL); re-ingesting the
same photos skips them; the audit log shows each step; an expired collection is purged.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from helpers import GALLERY, GROUP, LFW, POLICY, POLICY_ARGS, PROBES, lfw, open_finder
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from facefinder.errors import CatalogError, FaceFinderError
from facefinder.interfaces.cli import app
from facefinder.interfaces.web.documents import access_report_html
from facefinder.services.calibration import PRIVACY_FMR, default_calibration
from facefinder.services.privacy import optout as optouts
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Catalog, ImageRecord

PEOPLE = ("amy", "howard", "sheldon")  # whose probes clear the strict threshold against all their photos


# ----- helpers ---------------------------------------------------------------------------------------
def run_cli(data: Path, *args, expect: int = 0, input: str | None = None):
    result = CliRunner().invoke(app, ["--data-dir", str(data), *map(str, args)], input=input)
    assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def gallery_copy(root: Path, people=PEOPLE, group: bool = True) -> Path:
    """A gallery folder with some of the demo people (and a group photo of strangers)."""
    folder = root / "gallery"
    for person in people:
        shutil.copytree(GALLERY / person, folder / person)
    if group:
        (folder / "group").mkdir(parents=True)
        shutil.copy(GROUP / "sample1.jpg", folder / "group" / "sample1.jpg")
    return folder


def held_faces(data: Path, source_part: str) -> dict[int, tuple[bytes, bytes]]:
    """face id -> (embedding bytes, thumbnail bytes) of the faces whose photo path contains ``source_part``."""
    with sqlite3.connect(data / "catalog.db") as db:
        rows = db.execute(
            "SELECT f.id, f.embedding, f.thumbnail FROM faces f JOIN images i ON i.id = f.image_id "
            "WHERE i.source LIKE ?",
            (f"%{source_part}%",),
        ).fetchall()
    return {r[0]: (bytes(r[1]), bytes(r[2])) for r in rows}


def disk_bytes(data: Path) -> dict[str, bytes]:
    """Every file facefinder keeps the faces in: the catalog, its WAL, and the index files."""
    files = [data / "catalog.db", data / "catalog.db-wal", *sorted((data / "index").glob("*"))]
    return {f.name: f.read_bytes() for f in files if f.exists()}


def fragments(blob: bytes, size: int = 32) -> list[bytes]:
    """Pieces of a blob to look for: SQLite splits a long row over overflow pages, so a whole embedding
    need not sit in one run of bytes. A JPEG's first half (headers, tables) is shared by every
    thumbnail, so only its second half, the entropy-coded data of this one face, counts."""
    start = len(blob) // 2 if blob[:2] == b"\xff\xd8" else 0
    return [blob[i : i + size] for i in range(start, len(blob) - size + 1, size)]


def files_holding(data: Path, blob: bytes) -> list[str]:
    """The files that hold any piece of ``blob``."""
    pieces = fragments(blob)
    return [name for name, content in disk_bytes(data).items() if any(p in content for p in pieces)]


def index_files_holding(data: Path, blob: bytes) -> list[str]:
    """The files of collection 1's index that hold ``blob``: the FAISS file, or (HNSW, IVF-PQ tiers) the
    full-precision vectors beside it, collection-1.faiss.TOKEN.vec."""
    return [name for name in files_holding(data, blob) if name.startswith("collection-1.faiss")]


def actions(ff) -> list[str]:
    return [e.action for e in ff.audit.entries()]


# ----- 1. the scripted end-to-end privacy test -----------------------------------------------------------
def test_privacy_end_to_end(tmp_path, models_dir, pipeline):
    data = tmp_path / "data"
    folder = gallery_copy(tmp_path)

    # Ingest a gallery (3 people x 4 photos + a group photo of 3 strangers).
    report = json.loads(
        run_cli(data, "ingest", folder, "-c", "people", *POLICY_ARGS, "--workers", "0", "--json").stdout
    )
    assert (report["ingested"], report["faces"], report["opted_out"]) == (13, 15, 0)
    amy = held_faces(data, "/amy/")
    assert len(amy) == 4
    # The embeddings and thumbnails are on disk now (the checks below would prove nothing otherwise).
    for embedding, thumbnail in amy.values():
        assert index_files_holding(data, embedding)
        assert {"catalog.db", "catalog.db-wal"} & set(files_holding(data, embedding))
        assert files_holding(data, thumbnail)

    # Amy opts out with a photo the gallery does not hold; the photo file is deleted once templated.
    request = tmp_path / "request" / "amy-optout.png"
    request.parent.mkdir()
    shutil.copy(PROBES / "amy_amy5.png", request)
    added = json.loads(run_cli(data, "optout", "add", request, "--reference", "REQ-17", "--json").stdout)
    assert not request.exists() and added["photo_deleted"] is True
    assert sorted(m["face_id"] for m in added["matches"]) == sorted(amy)  # listed for review ...
    assert all(Path(m["source"]).parent.name == "amy" for m in added["matches"])
    # ... and hidden from search at once, before anyone erases them.
    hits = json.loads(run_cli(data, "search", GALLERY / "amy" / "amy1.png", "--json").stdout)
    assert hits["candidates"] == [] and hits["match"] is False

    # Review, then erase.
    reviewed = json.loads(run_cli(data, "optout", "review", str(added["id"]), "--json").stdout)
    assert sorted(m["face_id"] for m in reviewed) == sorted(amy)
    erased = run_cli(data, "optout", "erase", str(added["id"]), "--yes")
    assert f"opt-out {added['id']}: erased 4 faces and 4 photos" in erased.stderr

    ff = open_finder(data, pipeline)
    try:
        # Gone from search (even at a low threshold) ...
        for probe in (PROBES / "amy_amy5.png", GALLERY / "amy" / "amy2.png"):
            [record] = ff.search(probe, top_k=20, threshold=0.3)
            assert not {c.face_id for c in record.candidates} & set(amy)
            assert not any("/amy/" in c.source for c in record.candidates)
        [sheldon] = ff.search(PROBES / "sheldon_sheldon5.png", top_k=5)  # others are still found
        assert len(sheldon.candidates) == 4 and all("/sheldon/" in c.source for c in sheldon.candidates)
        # ... from the catalog and its thumbnails ...
        assert ff.store.faces(list(amy)) == {}
        for face_id in amy:
            with pytest.raises(FaceFinderError, match="does not exist"):
                ff.thumbnail(face_id)
        with ff.store.catalog.session() as session:
            assert (
                session.scalar(select(func.count()).select_from(ImageRecord).where(ImageRecord.source.like("%/amy/%")))
                == 0
            )
        # ... from the index in memory and from every file on disk.
        cid = ff.store.collection("people").id
        assert ff.store.index_size(cid) == 11
        for embedding, thumbnail in amy.values():
            assert files_holding(data, embedding) == []
            assert files_holding(data, thumbnail) == []
        # (catalog.db-wal was cut to zero bytes by the erasure; the audit entries written since are in it.)
        # The others' embeddings are still there: the index file was rewritten, not emptied.
        some_sheldon = next(iter(held_faces(data, "/sheldon/").values()))[0]
        assert index_files_holding(data, some_sheldon)
    finally:
        ff.close()

    # Re-ingest the same photos: Amy's faces are skipped (and her photos not stored at all).
    again = json.loads(run_cli(data, "ingest", folder, "-c", "people", "--workers", "0", "--json").stdout)
    assert (again["ingested"], again["duplicates"], again["opted_out"], again["opted_out_photos"]) == (0, 9, 4, 4)
    fresh = json.loads(run_cli(data, "ingest", folder, "-c", "fresh", *POLICY_ARGS, "--workers", "0", "--json").stdout)
    assert (fresh["ingested"], fresh["faces"], fresh["opted_out"]) == (9, 11, 4)
    assert held_faces(data, "/amy/") == {}
    human = run_cli(data, "ingest", folder, "-c", "people", "--workers", "0")
    assert "skipped 4 faces on the opt-out list (4 photos entirely)" in human.stderr

    # The audit log shows every step, and its chain is intact.
    ff = open_finder(data, pipeline)
    try:
        log = ff.audit.entries()
        assert [e.action for e in log][:7] == [
            "collection.create",
            "ingest",
            "optout.add",
            "search",
            "optout.review",
            "optout.review",
            "optout.erase",
        ]  # erase lists first
        details = {e.action: json.loads(e.details) for e in log}
        assert details["optout.add"]["reference"] == "REQ-17" and details["optout.add"]["photo_deleted"] is True
        assert sorted(details["optout.add"]["matches"]) == sorted(amy)
        assert sorted(details["optout.erase"]["face_ids"]) == sorted(amy) and details["optout.erase"]["images"] == 4
        reingest = [json.loads(e.details) for e in log if e.action == "ingest"][1]
        assert (reingest["opted_out"], reingest["opted_out_photos"]) == (4, 4)
        assert ff.audit.verify() == []
        assert not any("embedding" in e.details for e in log)  # no template ever goes into the log
    finally:
        ff.close()

    # Expire a collection and purge it: first a dry run as of 31 days from now, then for real.
    ff = open_finder(data, pipeline)
    try:
        dry = ff.privacy.purge(now=utcnow() + timedelta(days=31), dry_run=True)
        assert (dry.images, dry.faces) == (9 + 9, 11 + 11) and ff.store.index_size(cid) == 11
        with ff.store.catalog.session() as session, session.begin():  # "people" was ingested 31 days ago
            for image in session.scalars(select(ImageRecord).where(ImageRecord.collection_id == cid)):
                image.ingested_at -= timedelta(days=31)
    finally:
        ff.close()
    sheldon_vectors = [e for e, _ in held_faces(data, "/sheldon/").values()]
    purged = json.loads(run_cli(data, "purge", "--json").stdout)
    by_name = {c["collection"]: c for c in purged["collections"]}
    assert (by_name["people"]["images"], by_name["people"]["faces"]) == (9, 11)
    assert (by_name["fresh"]["images"], by_name["fresh"]["faces"]) == (0, 0)
    ff = open_finder(data, pipeline)
    try:
        infos = {c.name: c for c in ff.collections()}
        assert (infos["people"].images, infos["people"].faces, infos["fresh"].images) == (0, 0, 9)
        assert ff.store.index_size(cid) == 0
        [purge] = [
            json.loads(e.details) for e in ff.audit.entries(action="purge") if not json.loads(e.details)["dry_run"]
        ]
        assert purge["images"] == 9 and purge["faces"] == 11
        # The purged vectors are gone from the people index file (the "fresh" collection has its own copies).
        people_index = (data / "index" / f"collection-{cid}.faiss").read_bytes()
        assert not any(v in people_index for v in sheldon_vectors)
        assert ff.audit.verify() == []
    finally:
        ff.close()


# ----- 2. collections need a purpose, a legal basis and a retention period ------------------------------
def test_a_collection_cannot_be_created_without_its_policy(make_finder, tmp_path):
    ff = make_finder()
    with pytest.raises(CatalogError, match="missing purpose, legal_basis, retention_days"):
        ff.ingest(lfw("Tony_Blair", 1), collection="c")
    with pytest.raises(CatalogError, match="missing retention_days"):
        ff.ingest(lfw("Tony_Blair", 1), collection="c", purpose="p", legal_basis="b")
    with pytest.raises(CatalogError, match="at least 1"):
        ff.create_collection("c", purpose="p", legal_basis="b", retention_days=0)
    with pytest.raises(CatalogError, match="missing purpose"):
        ff.create_collection("c", purpose="  ", legal_basis="b", retention_days=3)
    assert ff.collections() == []

    ff.create_collection("c", purpose="p", legal_basis="b", retention_days=3)
    with pytest.raises(CatalogError, match="already exists"):
        ff.create_collection("c", purpose="p", legal_basis="b", retention_days=3)
    assert ff.ingest(lfw("Tony_Blair", 1), collection="c").ingested == 1  # existing: no policy needed
    assert ff.ingest(lfw("Tony_Blair", 2), collection="c", retention_days=3).ingested == 1  # matching: fine
    with pytest.raises(FaceFinderError, match="has retention_days 3, not 5; change it with"):
        ff.ingest(lfw("Tony_Blair", 3), collection="c", retention_days=5)
    ff.set_collection_policy("c", retention_days=5)
    [info] = ff.collections()
    assert (info.purpose, info.legal_basis, info.retention_days, info.images) == ("p", "b", 5, 2)
    assert actions(ff) == ["collection.create", "ingest", "ingest", "collection.policy"]


def test_cli_collections_create_and_set(tmp_path):
    data = tmp_path / "data"
    run_cli(data, "collections", "create", "c", expect=2)  # the options are required
    run_cli(
        data,
        "collections",
        "create",
        "c",
        "--purpose",
        "missing persons",
        "--legal-basis",
        "Art. 9(2)(g)",
        "--retention-days",
        "90",
    )
    run_cli(data, "collections", "set", "c", "--retention-days", "30")
    [row] = json.loads(run_cli(data, "collections", "--json").stdout)
    assert (row["purpose"], row["legal_basis"], row["retention_days"]) == ("missing persons", "Art. 9(2)(g)", 30)
    assert "30 days" in run_cli(data, "collections").stdout
    bad = run_cli(data, "ingest", lfw("Tony_Blair", 1), "-c", "new", "--workers", "0", expect=2)
    assert "a collection needs a purpose, a legal basis and a retention period" in bad.stderr
    assert "missing --purpose, --legal-basis, --retention-days" in bad.stderr  # the CLI names its flags


def test_a_catalog_from_before_policies_opens_and_gets_one(tmp_path, make_finder):
    """Older catalogs lack the new columns: they are added, and the policy is filled in on next ingest."""
    data = tmp_path / "old"
    data.mkdir()
    with sqlite3.connect(data / "catalog.db") as db:
        db.execute(
            "CREATE TABLE collections (id INTEGER PRIMARY KEY, name VARCHAR(200) UNIQUE, "
            "description TEXT, model_id VARCHAR(200), created_at DATETIME)"
        )
        db.execute("INSERT INTO collections (name, description, created_at) VALUES ('legacy', '', '2020-01-01')")
    ff = make_finder(data)
    [info] = ff.collections()
    assert info.name == "legacy" and info.retention_days is None
    assert ff.privacy.purge().unmanaged == ["legacy"]  # nothing expires without a period
    ff.ingest(lfw("Tony_Blair", 1), collection="legacy", **POLICY)
    assert ff.collections()[0].retention_days == 30
    assert "collection.policy" in actions(ff)


# ----- 3. erasure by face, image, collection and person ---------------------------------------------------
@pytest.fixture
def lfw_data(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    assert ff.ingest(LFW, collection="lfw", **POLICY).faces == 15
    return ff


def assert_erased_on_disk(data: Path, vectors: dict[int, tuple[bytes, bytes]]) -> None:
    for embedding, thumbnail in vectors.values():
        assert files_holding(data, embedding) == [] and files_holding(data, thumbnail) == []


def test_erase_one_face(lfw_data, tmp_path):
    ff, data = lfw_data, tmp_path / "data"
    doomed = held_faces(data, "Tony_Blair_0001")
    [face_id] = doomed
    assert files_holding(data, doomed[face_id][0])
    erased = ff.privacy.erase_faces([face_id])
    assert erased.faces == 1 and erased.wal is not None and erased.wal[0] == 0  # WAL truncated, not busy
    assert ff.delete_face(face_id) is False
    assert_erased_on_disk(data, doomed)
    assert ff.store.index_size(ff.store.collection("lfw").id) == 14
    [entry] = [json.loads(e.details) for e in ff.audit.entries(action="delete.face")]
    assert entry["face_ids"] == [face_id]


def test_erase_one_image(lfw_data, tmp_path):
    ff, data = lfw_data, tmp_path / "data"
    doomed = held_faces(data, "Colin_Powell_0002")
    image_id = ff.store.faces(list(doomed))[next(iter(doomed))][1].id
    assert ff.delete_image(image_id) == 1
    assert_erased_on_disk(data, doomed)
    with sqlite3.connect(data / "catalog.db") as db:
        assert db.execute("SELECT count(*) FROM images WHERE source LIKE '%Colin_Powell_0002%'").fetchone() == (0,)
    assert "delete.image" in actions(ff)


def test_erase_collection_zeroes_and_removes_its_index_file(lfw_data, tmp_path, make_finder):
    ff, data = lfw_data, tmp_path / "data"
    ff.ingest(GROUP / "sample2.jpg", collection="keep", **POLICY)
    doomed = held_faces(data, "/lfw/")
    assert len(doomed) == 15
    index_file = data / "index" / f"collection-{ff.store.collection('lfw').id}.faiss"
    assert index_file.exists()
    ff.delete_collection("lfw")
    assert not index_file.exists()
    assert_erased_on_disk(data, doomed)
    assert [c.name for c in ff.collections()] == ["keep"]
    [entry] = [json.loads(e.details) for e in ff.audit.entries(action="delete.collection")]
    assert (entry["collection"], entry["images"], entry["faces"]) == ("lfw", 15, 15)


def test_erase_person_lists_first_then_erases_what_was_confirmed(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    ff.ingest(gallery_copy(tmp_path), collection="people", **POLICY)
    found = ff.privacy.find_person(PROBES / "sheldon_sheldon5.png")
    assert found.threshold == default_calibration().privacy_threshold
    assert len(found.matches) == 4 and all("/sheldon/" in m.source for m in found.matches)
    assert all(m.score >= found.threshold for m in found.matches)
    assert [m.score for m in found.matches] == sorted((m.score for m in found.matches), reverse=True)
    assert ff.store.faces(found.face_ids).keys() == set(found.face_ids)  # listing erases nothing

    with pytest.raises(FaceFinderError, match="not among the listed matches"):
        ff.privacy.erase_person(found, [found.face_ids[0], 999])
    kept = found.face_ids[-1]
    doomed = {fid: v for fid, v in held_faces(tmp_path / "data", "/sheldon/").items() if fid != kept}
    erased = ff.privacy.erase_person(found, found.face_ids[:3])  # the reviewer kept one back
    assert (erased.faces, erased.images) == (3, 3)  # one face per photo: the photos go too
    assert_erased_on_disk(tmp_path / "data", doomed)
    assert set(held_faces(tmp_path / "data", "/sheldon/")) == {kept}
    assert actions(ff)[-2:] == ["privacy.find", "delete.person"]
    # A group photo keeps its row while it still shows someone else.
    group = ff.privacy.find_person(GROUP / "sample1.jpg", face=0, threshold=0.95)
    assert len(group.matches) == 1
    assert ff.privacy.erase_person(group).images == 0
    assert len(held_faces(tmp_path / "data", "sample1.jpg")) == 2


def test_person_photo_with_several_faces_needs_a_choice(tmp_path, make_finder):
    ff = make_finder()
    with pytest.raises(FaceFinderError, match=r"3 faces found; say which one is the person \(--face N"):
        ff.privacy.find_person(GROUP / "sample1.jpg")
    with pytest.raises(FaceFinderError, match="has faces 0..2, not 7"):
        ff.privacy.find_person(GROUP / "sample1.jpg", face=7)


def test_cli_delete_person(tmp_path):
    data = tmp_path / "data"
    run_cli(data, "ingest", gallery_copy(tmp_path), "-c", "people", *POLICY_ARGS, "--workers", "0")
    asked = run_cli(data, "delete", "person", PROBES / "howard_howard5.png", input="n\n", expect=1)
    assert "4 faces match" in asked.stderr
    done = json.loads(run_cli(data, "delete", "person", PROBES / "howard_howard5.png", "--yes", "--json").stdout)
    assert done["erased"]["faces"] == 4 and len(done["matches"]) == 4
    none = run_cli(data, "delete", "person", PROBES / "howard_howard5.png", "--yes")
    assert "nothing held matches" in none.stderr


# ----- 4. the opt-out list --------------------------------------------------------------------------------
def test_optout_threshold_is_the_calibrated_strict_one():
    calibration = default_calibration()
    assert calibration.privacy_threshold > calibration.threshold  # stricter than search
    assert calibration.false_match_rate(calibration.privacy_threshold) <= PRIVACY_FMR * 1.01
    assert calibration.false_match_rate(calibration.privacy_threshold - 0.01) > PRIVACY_FMR


def test_optout_screen_matches_and_follows_changes_from_elsewhere(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    other = Catalog(f"sqlite:///{tmp_path / 'c.db'}")  # e.g. the server, while the CLI adds an opt-out
    screen = optouts.OptOutScreen(catalog, threshold=0.7)
    rng = np.random.default_rng(0)
    people = rng.normal(size=(3, 8)).astype(np.float32)
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    assert screen.size() == 0 and list(screen.match(people, "m")) == [0, 0, 0]
    first = optouts.add(other, [(people[0], 0.9)], "m", "R1", "admin", "alice")
    assert list(screen.match(people, "m")) == [first, 0, 0]
    assert list(screen.match(people, "other-model")) == [0, 0, 0]  # templates of one model only
    near = people[1] + 0.05 * rng.normal(size=8).astype(np.float32)
    second = optouts.add(other, [(near / np.linalg.norm(near), 0.9)], "m", "", "public", "public")
    assert list(screen.match(people, "m")) == [first, second, 0]
    optouts.remove(other, first)
    assert list(screen.match(people, "m")) == [0, second, 0]
    with pytest.raises(FaceFinderError, match="channel"):
        optouts.add(other, [(people[2], 1.0)], "m", "", "email", "x")


def test_optout_hides_at_once_and_erases_after_review(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    ff.ingest(gallery_copy(tmp_path), collection="people", **POLICY)
    photo = tmp_path / "howard.png"
    shutil.copy(PROBES / "howard_howard5.png", photo)
    result = ff.privacy.optout_add([photo], reference="T-1")  # the admin keeps the file (default here)
    assert photo.exists() and result.templates == 1 and len(result.matches) == 4
    # Hidden from search both ways: as candidates, and when the person is the probe.
    [as_probe] = ff.search(GALLERY / "howard" / "howard1.png", top_k=10, threshold=0.2)
    assert not any("/howard/" in c.source for c in as_probe.candidates)
    assert as_probe.candidates == []  # the probe itself is on the list: nothing at all comes back
    assert all(record.candidates for record in ff.search(GROUP / "sample1.jpg"))  # others are not affected
    # Erase after review: the reviewer confirmed three of the four.
    listed = [m.face_id for m in ff.privacy.optout_matches(result.id)]
    with pytest.raises(FaceFinderError, match="not among the listed matches"):
        ff.privacy.optout_erase(result.id, [listed[0], 12345])
    erased = ff.privacy.optout_erase(result.id, listed[:3])
    assert erased.faces == 3
    assert [m.face_id for m in ff.privacy.optout_matches(result.id)] == listed[3:]
    [info] = ff.privacy.optout_list()
    assert (info.reference, info.channel, info.templates) == ("T-1", "admin", 1) and info.erased_at is not None
    # Taking the person off the list makes the remaining face searchable again.
    ff.privacy.optout_remove(result.id, note="request withdrawn")
    assert ff.privacy.optout_list() == []
    [record] = ff.search(GALLERY / "howard" / "howard1.png", top_k=10)
    assert [c.face_id for c in record.candidates] == listed[3:]
    assert [a for a in actions(ff) if a.startswith("optout.")] == [
        "optout.add",
        "optout.review",
        "optout.erase",
        "optout.review",
        "optout.remove",
    ]


def test_optout_from_bytes_and_several_photos(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    ff.ingest(gallery_copy(tmp_path, people=("sheldon",), group=False), collection="p", **POLICY)
    photos = [(PROBES / "sheldon_sheldon5.png").read_bytes(), GALLERY / "sheldon" / "sheldon1.png"]
    result = ff.privacy.optout_add(photos, channel="public")
    assert result.templates == 2 and len(result.matches) == 4 and result.photo_deleted is False
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank, format="PNG")
    with pytest.raises(FaceFinderError, match="uploaded photo: no face found"):
        ff.privacy.optout_add([blank.getvalue()], channel="public")
    assert len(ff.privacy.optout_list()) == 1


def test_public_optout_form_is_off_until_switched_on(make_finder):
    ff = make_finder()
    assert ff.privacy.public_optout_enabled() is False
    ff.privacy.set_public_optout(True)
    assert ff.privacy.public_optout_enabled() is True
    assert json.loads(ff.audit.entries(action="optout.public_form")[0].details) == {"enabled": True}


def test_cli_optout_list_remove_and_status(tmp_path):
    data = tmp_path / "data"
    photo = tmp_path / "me.png"
    shutil.copy(PROBES / "amy_amy5.png", photo)
    run_cli(data, "optout", "add", photo, "--keep-photo")
    assert photo.exists()
    [row] = json.loads(run_cli(data, "optout", "list", "--json").stdout)
    assert row["templates"] == 1 and row["channel"] == "admin"
    status = json.loads(run_cli(data, "privacy", "status", "--json").stdout)
    assert status["optouts"] == 1 and status["public_optout_form"] is False
    assert status["threshold"] == default_calibration().privacy_threshold
    run_cli(data, "privacy", "public-optout", "on")
    assert json.loads(run_cli(data, "privacy", "status", "--json").stdout)["public_optout_form"] is True
    run_cli(data, "optout", "remove", str(row["id"]), "--yes")
    assert json.loads(run_cli(data, "optout", "list", "--json").stdout) == []
    run_cli(data, "optout", "review", "99", expect=2)


# ----- 5. consent records and withdrawal --------------------------------------------------------------
def consented_folder(root: Path) -> Path:
    folder = root / "consented"
    folder.mkdir()
    for name, consent_id in (
        ("Tony_Blair_0001.jpg", "C-1"),
        ("Tony_Blair_0002.jpg", "C-1"),
        ("Colin_Powell_0001.jpg", "C-2"),
    ):
        shutil.copy(LFW / name.rsplit("_", 1)[0] / name, folder / name)
        (folder / f"{name}.json").write_text(json.dumps({"consent_id": consent_id}))
    return folder


def test_consent_withdrawal_erases_and_blocks_reingest(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    folder = consented_folder(tmp_path)
    ff.create_collection(
        "volunteers", purpose="consented gallery", legal_basis="consent (GDPR Art. 9(2)(a))", retention_days=365
    )
    assert ff.ingest(folder, collection="volunteers").ingested == 3
    ff.privacy.consent_record(
        "C-1",
        "volunteer 1 (form #1)",
        "face search in the volunteers collection",
        "2024-05-01",
        collection="volunteers",
    )
    with pytest.raises(FaceFinderError, match="already recorded"):
        ff.privacy.consent_record("C-1", "x", "y", "2024-05-01")
    with pytest.raises(FaceFinderError, match="given_at"):
        ff.privacy.consent_record("C-3", "x", "y", "last tuesday")
    [c1] = ff.privacy.consents()
    assert (c1.images, c1.withdrawn) == (2, False)

    doomed = held_faces(tmp_path / "data", "Tony_Blair")
    erased = ff.privacy.consent_withdraw("C-1", note="letter of 2024-06-01")
    assert (erased.images, erased.faces) == (2, 2)
    assert_erased_on_disk(tmp_path / "data", doomed)
    [c1] = ff.privacy.consents("C-1")
    assert c1.withdrawn and c1.withdrawn_by == ff.actor and c1.images == 0
    with pytest.raises(FaceFinderError, match="already withdrawn"):
        ff.privacy.consent_withdraw("C-1")

    again = ff.ingest(folder, collection="volunteers")
    assert (again.consent_withdrawn, again.ingested, again.duplicates) == (2, 0, 1)
    # A consent id that was never recorded can still be withdrawn: a record saying so is made.
    assert ff.privacy.consent_withdraw("C-2").images == 1
    assert {c.consent_id: c.subject for c in ff.privacy.consents()}["C-2"] == "(not recorded)"
    entries = [json.loads(e.details) for e in ff.audit.entries(action="consent.withdraw")]
    assert [(e["consent_id"], e["images"], e["recorded_before"]) for e in entries] == [
        ("C-1", 2, True),
        ("C-2", 1, False),
    ]
    assert "consent.record" in actions(ff)


def test_cli_consent(tmp_path):
    data = tmp_path / "data"
    run_cli(data, "ingest", consented_folder(tmp_path), "-c", "v", *POLICY_ARGS, "--workers", "0")
    run_cli(data, "consent", "add", "C-1", "--subject", "volunteer 1", "--scope", "search", "--given-at", "2024-05-01")
    [row] = json.loads(run_cli(data, "consent", "list", "--json").stdout)
    assert (row["consent_id"], row["images"]) == ("C-1", 2)
    run_cli(data, "consent", "withdraw", "C-1", input="n\n", expect=1)
    done = run_cli(data, "consent", "withdraw", "C-1", "--yes")
    assert "erased 2 photos and 2 faces" in done.stderr


# ----- 6. retention -------------------------------------------------------------------------------------
def test_purge_erases_only_what_has_expired(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    ff.create_collection("short", purpose="p", legal_basis="b", retention_days=7)
    ff.create_collection("long", purpose="p", legal_basis="b", retention_days=90)
    ff.ingest(lfw("Tony_Blair", 1).parent, collection="short")
    ff.ingest(lfw("Colin_Powell", 1).parent, collection="long")
    doomed = held_faces(tmp_path / "data", "Tony_Blair")
    assert ff.privacy.purge().images == 0  # nothing is old enough yet
    report = ff.privacy.purge(now=utcnow() + timedelta(days=8))
    by_name = {c.collection: c for c in report.collections}
    assert (by_name["short"].images, by_name["short"].faces, by_name["long"].images) == (3, 3, 0)
    assert_erased_on_disk(tmp_path / "data", doomed)
    assert {c.name: c.images for c in ff.collections()} == {"short": 0, "long": 3}
    entries = [json.loads(e.details) for e in ff.audit.entries(action="purge")]
    assert [e["images"] for e in entries] == [0, 3]
    assert entries[1]["collections"][1]["collection"] == "short" and len(entries[1]["collections"][1]["image_ids"]) == 3


def test_a_scheduler_purges_under_its_own_name(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    ff.ingest(lfw("Tony_Blair", 1), collection="c", **POLICY)
    report = ff.privacy.purge(now=utcnow() + timedelta(days=31), actor="system:purge")
    assert report.images == 1 and report.to_dict()["unmanaged"] == []
    assert ff.audit.entries(action="purge")[0].actor == "system:purge"


# ----- 7. subject access ---------------------------------------------------------------------------------
def test_subject_access_export(tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    folder = gallery_copy(tmp_path)
    (folder / "sheldon" / "sheldon1.png.json").write_text(
        json.dumps({"consent_id": "C-9", "source_url": "https://x/<1>"})
    )
    ff.ingest(folder, collection="people", **POLICY)
    ff.privacy.consent_record("C-9", "S. Cooper", "research gallery", "2024-01-02")
    ff.search(PROBES / "sheldon_sheldon5.png", case_id="K-42", purpose="missing person")
    ff.search(GALLERY / "howard" / "howard1.png")  # returns no sheldon face

    with pytest.raises(FaceFinderError, match="approval"):
        ff.privacy.subject_access(GALLERY / "sheldon" / "sheldon2.png", approved_by=" ")
    report = ff.privacy.subject_access(GALLERY / "sheldon" / "sheldon2.png", approved_by="admin:carol")
    json.dumps(report)  # JSON-ready
    assert report["approved_by"] == "admin:carol" and report["on_optout_list"] is None
    assert len(report["faces"]) == 4 and all("/sheldon/" in f["image"]["source"] for f in report["faces"])
    search_entry = ff.audit.entries(action="search")[0]
    for face in report["faces"]:
        assert face["collection"] == {"name": "people", **POLICY}
        assert face["image"]["expires_at"] > face["image"]["ingested_at"]
        assert [(s["audit_id"], s["case_id"], s["purpose"]) for s in face["searches"]] == [
            (search_entry.id, "K-42", "missing person")
        ]
        assert face["thumbnail_jpeg_base64"]
    [with_consent] = [f for f in report["faces"] if f["image"]["source"].endswith("sheldon1.png")]
    assert with_consent["consent"]["subject"] == "S. Cooper"
    assert with_consent["image"]["provenance"]["source_url"] == "https://x/<1>"

    html = access_report_html(report)
    assert html.startswith("<!doctype html>") and "Subject access report" in html
    assert "https://x/&lt;1&gt;" in html and "<1>" not in html  # escaped
    assert html.count('<section class="face">') == 4 and "K-42" in html
    [entry] = ff.audit.entries(action="access.export")
    details = json.loads(entry.details)
    assert details["approved_by"] == "admin:carol" and sorted(details["face_ids"]) == sorted(
        f["face_id"] for f in report["faces"]
    )


def test_cli_subject_access_writes_json_and_html(tmp_path):
    data = tmp_path / "data"
    run_cli(
        data, "ingest", gallery_copy(tmp_path, people=("amy",), group=False), "-c", "p", *POLICY_ARGS, "--workers", "0"
    )
    run_cli(data, "privacy", "access", PROBES / "amy_amy5.png", "--out", tmp_path / "out", expect=2)  # no approver
    done = run_cli(
        data, "privacy", "access", PROBES / "amy_amy5.png", "--approved-by", "dpo", "--out", tmp_path / "out"
    )
    assert "4 faces held" in done.stderr
    report = json.loads((tmp_path / "out" / "subject-access.json").read_text())
    assert len(report["faces"]) == 4
    assert "Subject access report" in (tmp_path / "out" / "subject-access.html").read_text()
