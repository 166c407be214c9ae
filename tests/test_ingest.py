"""Ingest: bad files reported not fatal, archives, provenance, duplicates, progress, model errors."""

from __future__ import annotations

import csv
import json
import random
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import GROUP, LFW, LFW_PEOPLE, POLICY, lfw, save_jpeg
from PIL import Image
from sqlalchemy import func, select

from facefinder import FaceFinder
from facefinder.errors import FaceFinderError, ModelError
from facefinder.services.ingest import Ingestor
from facefinder.services.sources.folders import SourceError, iter_sources
from facefinder.storage.catalog import FaceRecord, ImageRecord
from facefinder.storage.store import FaceStore


def catalog_counts(store: FaceStore, collection: str) -> tuple[int, int]:
    cid = store.collection(collection).id
    with store.catalog.session() as session:
        images = session.scalar(select(func.count()).select_from(ImageRecord).where(ImageRecord.collection_id == cid))
        faces = session.scalar(select(func.count()).select_from(FaceRecord).where(FaceRecord.collection_id == cid))
    return images, faces


# ----- 3. a folder with bad files ------------------------------------------------------------
def make_mixed_folder(root: Path) -> dict[str, str | None]:
    """Three good photos and one file for each failure reason; returns name -> expected reason."""
    root.mkdir(parents=True)
    good = [lfw("Tony_Blair", 1), lfw("Colin_Powell", 1), lfw("Hugo_Chavez", 1)]
    for path in good:
        shutil.copy(path, root / path.name)
    jpeg = lfw("George_W_Bush", 1).read_bytes()
    rng = random.Random(42)
    (root / "random-bytes.jpg").write_bytes(bytes(rng.getrandbits(8) for _ in range(8192)))
    garbled = bytearray(jpeg)
    garbled[1000:3000] = bytes(rng.getrandbits(8) for _ in range(2000))  # a JPEG whose data is damaged
    (root / "corrupt.jpg").write_bytes(bytes(garbled))
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # the first half of a real JPEG
    (root / "letter.png").write_text("Dear operator,\nthis is a text file renamed .png.\n")
    (root / "empty.jpg").write_bytes(b"")
    big = Image.open(lfw("Vladimir_Putin", 1)).resize((500, 400))
    big.save(root / "huge.jpg", quality=90)  # 200,000 pixels: over the 100,000-pixel cap below
    (root / "notes.txt").write_text("not a photo, and skipped as such")
    expected = {p.name: None for p in good}
    expected.update(
        {
            "random-bytes.jpg": "not-an-image",
            "corrupt.jpg": "corrupt",
            "truncated.jpg": "truncated",
            "letter.png": "not-an-image",
            "empty.jpg": "not-an-image",
            "huge.jpg": "too-large",
        }
    )
    return expected


def test_ingest_survives_bad_files_and_reports_each(tmp_path, models_dir, pipeline, make_finder):
    folder = tmp_path / "mixed"
    expected = make_mixed_folder(folder)
    store = FaceStore(tmp_path / "data")
    ingestor = Ingestor(store, models_dir, workers=0, max_pixels=100_000, pipeline=pipeline)
    report = ingestor.ingest(folder, "mixed", policy=POLICY)

    assert report.seen == len(expected)  # notes.txt is not a candidate photo
    assert report.ingested == 3 and report.faces == 3 and report.duplicates == 0
    reasons = {Path(f.source).name: f.reason for f in report.failures}
    assert reasons == {name: why for name, why in expected.items() if why}
    for failure in report.failures:
        assert Path(failure.source).parent == folder  # the full path, so the operator can find it
    assert "exceeds" in next(f.detail for f in report.failures if f.reason == "too-large")
    assert catalog_counts(store, "mixed") == (3, 3)
    store.close()

    # The failures are kept in the catalog, and FaceFinder.failures() lists them.
    ff = make_finder(tmp_path / "data")
    listed = {Path(f.source).name: f.reason for f in ff.failures("mixed")}
    assert listed == reasons
    [info] = ff.collections()
    assert (info.images, info.faces, info.failures) == (3, 3, 6)
    # Only the good photos are searchable.
    [hit] = ff.search(lfw("Hugo_Chavez", 2))
    assert [Path(c.source).name for c in hit.candidates] == ["Hugo_Chavez_0001.jpg"]


def test_fixed_file_clears_its_failure(tmp_path, make_finder):
    folder = tmp_path / "photos"
    folder.mkdir()
    jpeg = lfw("Tony_Blair", 2).read_bytes()
    (folder / "blair.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    ff = make_finder()
    first = ff.ingest(folder, collection="c", **POLICY)
    assert [(f.reason, Path(f.source).name) for f in first.failures] == [("truncated", "blair.jpg")]
    assert [f.reason for f in ff.failures("c")] == ["truncated"]

    (folder / "blair.jpg").write_bytes(jpeg)  # the operator re-copies the file
    second = ff.ingest(folder, collection="c", **POLICY)
    assert second.ingested == 1 and not second.failures
    assert ff.failures("c") == []


def test_default_pixel_cap_lets_large_group_photos_through(make_finder, tmp_path):
    ff = make_finder()
    report = ff.ingest(GROUP / "sample6.jpg", collection="g", **POLICY)  # 1920x1537
    assert report.ingested == 1 and report.faces == 4 and not report.failures


def test_failures_of_unknown_collection(make_finder):
    with pytest.raises(FaceFinderError, match="'nope' does not exist"):
        make_finder().failures("nope")


# ----- 4. archives and provenance --------------------------------------------------------------
PEOPLE = ["Tony_Blair", "Colin_Powell", "Hugo_Chavez", "George_W_Bush"]


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "source_url", "case_id", "captured_at", "notes"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_zip_archive_with_manifest(tmp_path, make_finder):
    archive = tmp_path / "evidence.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for person in PEOPLE:
            zf.write(lfw(person, 1), f"batch/{person}.jpg")
        zf.writestr("batch/readme.txt", "skipped")
        zf.writestr("batch/.hidden.jpg", b"skipped too")
    manifest = write_manifest(
        tmp_path / "manifest.csv",
        [
            {
                "path": f"batch/{p}.jpg",
                "source_url": f"https://example.org/{p}",
                "case_id": "CASE-ZIP",
                "captured_at": "2001-02-03",
                "notes": "",
            }
            for p in PEOPLE
        ],
    )
    ff = make_finder()
    report = ff.ingest(archive, collection="zip", manifest=str(manifest), **POLICY)
    assert (report.seen, report.ingested, report.faces, report.failures) == (4, 4, 4, [])

    [record] = ff.search(lfw("Colin_Powell", 2), collections=["zip"])
    best = record.candidates[0]
    assert best.source == f"{archive}!batch/Colin_Powell.jpg"
    assert best.provenance == {
        "source_url": "https://example.org/Colin_Powell",
        "case_id": "CASE-ZIP",
        "captured_at": "2001-02-03",
        "consent_id": None,
        "notes": None,
    }


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_tar_archives(tmp_path, make_finder, suffix, mode):
    archive = tmp_path / f"photos{suffix}"
    with tarfile.open(archive, mode) as tf:
        for person in PEOPLE:
            tf.add(lfw(person, 2), f"{person}/{person}.jpg")
    ff = make_finder()
    report = ff.ingest(archive, collection="tar", **POLICY)
    assert (report.ingested, report.faces, report.failures) == (4, 4, [])
    [record] = ff.search(lfw("Hugo_Chavez", 3))
    assert record.candidates[0].source == f"{archive}!Hugo_Chavez/Hugo_Chavez.jpg"


def test_folder_holding_archives_and_photos(tmp_path, make_finder):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(lfw("Tony_Blair", 3), folder / "loose.jpg")
    with zipfile.ZipFile(folder / "inner.zip", "w") as zf:
        zf.write(lfw("Colin_Powell", 3), "powell.jpg")
    with tarfile.open(folder / "inner.tar.gz", "w:gz") as tf:
        tf.add(lfw("Vladimir_Putin", 3), "putin.jpg")
    report = make_finder().ingest(folder, collection="m", **POLICY)
    assert (report.seen, report.ingested, report.faces) == (3, 3, 3)
    sources = sorted(item.source for item in iter_sources(folder))
    assert sources == [
        f"{folder / 'inner.tar.gz'}!putin.jpg",
        f"{folder / 'inner.zip'}!powell.jpg",
        str(folder / "loose.jpg"),
    ]


def test_sidecar_json_and_manifest_provenance(tmp_path, make_finder):
    folder = tmp_path / "case"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(lfw("Tony_Blair", 1), folder / "a.jpg")
    shutil.copy(lfw("Colin_Powell", 1), folder / "b.jpg")
    shutil.copy(lfw("Hugo_Chavez", 1), folder / "c.jpg")
    shutil.copy(lfw("Vladimir_Putin", 1), folder / "sub" / "d.jpg")
    (folder / "a.jpg.json").write_text(
        json.dumps(
            {
                "source_url": "https://example.org/a",
                "case_id": "CASE-SIDECAR",
                "consent_id": "CONSENT-7",
                "unrelated": "ignored",
            }
        )
    )
    (folder / "b.json").write_text(json.dumps({"captured_at": "2020-01-02T03:04:05", "notes": "from b.json"}))
    write_manifest(
        folder / "manifest.csv",
        [
            {
                "path": "a.jpg",
                "source_url": "",
                "case_id": "CASE-MANIFEST",
                "captured_at": "",
                "notes": "manifest note",
            },
            {
                "path": "c.jpg",
                "source_url": "https://example.org/c",
                "case_id": "CASE-3",
                "captured_at": "",
                "notes": "",
            },
            {"path": "sub/d.jpg", "source_url": "", "case_id": "CASE-4", "captured_at": "1999", "notes": ""},
        ],
    )
    ff = make_finder()
    report = ff.ingest(folder, collection="case", **POLICY)
    assert report.seen == 4 and report.ingested == 4 and not report.failures  # no .json/.csv as photos

    def provenance_of(photo: Path) -> dict:
        [record] = ff.search(photo, top_k=1)
        return record.candidates[0].provenance

    # The sidecar wins over the manifest for the fields it has; the manifest fills the rest.
    assert provenance_of(lfw("Tony_Blair", 1)) == {
        "source_url": "https://example.org/a",
        "case_id": "CASE-SIDECAR",
        "consent_id": "CONSENT-7",
        "captured_at": None,
        "notes": "manifest note",
    }
    assert provenance_of(lfw("Colin_Powell", 1)) == {
        "source_url": None,
        "case_id": None,
        "consent_id": None,
        "captured_at": "2020-01-02T03:04:05",
        "notes": "from b.json",
    }
    assert provenance_of(lfw("Hugo_Chavez", 1))["case_id"] == "CASE-3"
    assert provenance_of(lfw("Hugo_Chavez", 1))["source_url"] == "https://example.org/c"
    assert provenance_of(lfw("Vladimir_Putin", 1))["case_id"] == "CASE-4"
    assert provenance_of(lfw("Vladimir_Putin", 1))["captured_at"] == "1999"


def test_manifest_without_path_column_is_refused(tmp_path, make_finder):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(lfw("Tony_Blair", 1), folder / "a.jpg")
    (folder / "manifest.csv").write_text("file,case_id\na.jpg,X\n")
    with pytest.raises(SourceError, match="manifest.csv: a manifest needs a 'path' column"):
        make_finder().ingest(folder, collection="c", **POLICY)


def test_invalid_sidecar_fails_that_photo_only(tmp_path, make_finder):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(lfw("Tony_Blair", 1), folder / "a.jpg")
    shutil.copy(lfw("Tony_Blair", 2), folder / "b.jpg")
    (folder / "a.jpg.json").write_text("{not json")
    ff = make_finder()
    report = ff.ingest(folder, collection="c", **POLICY)
    assert report.ingested == 1
    assert [(f.source, f.reason) for f in report.failures] == [(str(folder / "a.jpg"), "bad-sidecar")]
    assert "a.jpg.json: sidecar is not valid JSON" in report.failures[0].detail
    # Fixing the sidecar and re-running picks the photo up, with its provenance.
    (folder / "a.jpg.json").write_text('{"case_id": "K-1"}')
    again = ff.ingest(folder, collection="c", **POLICY)
    assert (again.ingested, again.duplicates, again.failures) == (1, 1, [])
    assert catalog_counts(ff.store, "c")[0] == 2


def test_corrupt_archive_inside_a_folder_is_one_failure(tmp_path, make_finder):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(lfw("Tony_Blair", 1), folder / "a.jpg")
    (folder / "broken.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    report = make_finder().ingest(folder, collection="c", **POLICY)
    assert report.ingested == 1
    assert [(f.source, f.reason) for f in report.failures] == [(str(folder / "broken.zip"), "corrupt")]


def test_missing_path_and_bad_archive(tmp_path, make_finder):
    ff = make_finder()
    with pytest.raises(SourceError, match="no such file or folder"):
        ff.ingest(tmp_path / "nowhere", collection="c", **POLICY)
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(SourceError, match="broken.zip: unreadable archive"):
        ff.ingest(bad, collection="c", **POLICY)


# ----- 6. duplicates ----------------------------------------------------------------------------
def test_ingesting_twice_stores_nothing_new(make_finder):
    ff = make_finder()
    first = ff.ingest(LFW, collection="lfw", **POLICY)
    assert (first.seen, first.ingested, first.faces, first.duplicates) == (15, 15, 15, 0)
    second = ff.ingest(LFW, collection="lfw", **POLICY)
    assert (second.seen, second.ingested, second.faces, second.duplicates) == (15, 0, 0, 15)
    [info] = ff.collections()
    assert (info.images, info.faces) == (15, 15)
    assert ff.store.index_size(info.id) == 15
    [record] = ff.search(lfw("Tony_Blair", 1), top_k=10)
    assert len(record.candidates) == len({c.face_id for c in record.candidates}) == 3  # no doubled faces


def test_identical_content_under_two_names_is_stored_once(tmp_path, make_finder):
    folder = tmp_path / "photos"
    (folder / "copies").mkdir(parents=True)
    shutil.copy(lfw("Tony_Blair", 1), folder / "a.jpg")
    shutil.copy(lfw("Tony_Blair", 1), folder / "copies" / "a-copy.jpg")
    shutil.copy(lfw("Colin_Powell", 1), folder / "b.jpg")
    ff = make_finder()
    report = ff.ingest(folder, collection="c", **POLICY)
    assert (report.seen, report.ingested, report.duplicates, report.faces) == (3, 2, 1, 2)
    [record] = ff.search(lfw("Tony_Blair", 1), threshold=0.99)
    assert [Path(c.source).name for c in record.candidates] == ["a.jpg"]  # the first one, in sorted order


def test_same_photo_in_two_collections_is_stored_in_each(make_finder):
    ff = make_finder()
    assert ff.ingest(lfw("Tony_Blair", 1), collection="one", **POLICY).ingested == 1
    assert ff.ingest(lfw("Tony_Blair", 1), collection="two", **POLICY).ingested == 1
    assert sorted((c.name, c.images) for c in ff.collections()) == [("one", 1), ("two", 1)]


# ----- reports and progress -----------------------------------------------------------------
def test_report_counts_photos_without_faces_and_progress(tmp_path, make_finder):
    folder = tmp_path / "photos"
    folder.mkdir()
    for person in LFW_PEOPLE[:3]:
        shutil.copy(lfw(person, 1), folder / f"{person}.jpg")
    save_jpeg(np.full((300, 400, 3), 90, np.uint8), folder / "wall.jpg")
    updates = []
    report = make_finder().ingest(folder, collection="c", on_progress=updates.append, **POLICY)
    assert (report.ingested, report.faces, report.photos_without_faces) == (4, 3, 1)
    assert updates and updates[-1].done == updates[-1].total == 4
    assert updates[-1].faces == 3 and updates[-1].failures == 0
    assert [u.done for u in updates] == sorted(u.done for u in updates)
    assert report.seconds > 0 and report.photos_per_second > 0
    assert set(report.stage_seconds) == {"read", "decode", "detect", "align", "embed", "optout", "store"}
    assert report.stage_seconds["detect"] > 0 and report.stage_seconds["embed"] > 0


def test_worker_processes_give_the_same_faces(tmp_path, make_finder, models_dir):
    """The default multi-process ingest stores the same faces as the in-process one."""
    photos = [lfw(p, 1) for p in LFW_PEOPLE]
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    with FaceFinder(tmp_path / "multi", workers=2) as multi:
        report = multi.ingest(folder, collection="c", **POLICY)
        assert (report.ingested, report.faces, report.failures) == (5, 5, [])
        rows = multi.store.faces(list(range(1, 6)))
    single = make_finder()
    single.ingest(folder, collection="c", **POLICY)
    single_rows = single.store.faces(list(range(1, 6)))
    for face_id, (face, image, _) in rows.items():
        other, other_image, _ = single_rows[face_id]
        assert image.source == other_image.source
        np.testing.assert_allclose(face.box, other.box, atol=0.5)
        a, b = np.frombuffer(face.embedding, np.float32), np.frombuffer(other.embedding, np.float32)
        assert float(a @ b) > 0.999


def test_missing_model_fails_the_ingest_instead_of_every_photo(tmp_path):
    """A wrong model path is one clear error, not a 'corrupt' failure recorded against each photo."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(lfw("Tony_Blair", 1), folder / "a.jpg")
    for workers in (0, 2):
        with FaceFinder(tmp_path / f"data-{workers}", recognizer=str(tmp_path / "missing.onnx"), workers=workers) as ff:
            with pytest.raises(ModelError, match="missing.onnx"):
                ff.ingest(folder, collection="c", **POLICY)
            assert all(info.failures == 0 and info.images == 0 for info in ff.collections())


# ----- sources -------------------------------------------------------------------------------
def test_sources_skip_hidden_files_sidecars_and_notes(tmp_path):
    folder = tmp_path / "photos"
    (folder / ".thumbnails").mkdir(parents=True)
    (folder / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(lfw("Tony_Blair", 1), folder / "b.jpg")
    shutil.copy(lfw("Tony_Blair", 2), folder / "nested" / "deeper" / "a.jpg")
    shutil.copy(lfw("Tony_Blair", 3), folder / ".thumbnails" / "c.jpg")
    shutil.copy(lfw("Tony_Blair", 3), folder / ".hidden.jpg")
    for name in ("b.jpg.json", "manifest.csv", "README.md", "list.txt"):
        (folder / name).write_text("{}" if name.endswith(".json") else "path\n")
    items = list(iter_sources(folder))
    assert [Path(i.source).relative_to(folder).as_posix() for i in items] == ["b.jpg", "nested/deeper/a.jpg"]
    assert items[0].size == lfw("Tony_Blair", 1).stat().st_size
    assert items[0].read() == lfw("Tony_Blair", 1).read_bytes()


def test_single_photo_with_its_sidecar(tmp_path, make_finder):
    photo = tmp_path / "one.jpg"
    shutil.copy(lfw("Hugo_Chavez", 2), photo)
    (tmp_path / "one.jpg.json").write_text(json.dumps({"case_id": "SINGLE", "notes": 42}))
    [item] = iter_sources(photo)
    assert item.source == str(photo) and item.provenance == {"case_id": "SINGLE", "notes": "42"}
    ff = make_finder()
    assert ff.ingest(photo, collection="c", **POLICY).ingested == 1
    [record] = ff.search(photo, top_k=1)
    assert record.candidates[0].provenance["case_id"] == "SINGLE"
