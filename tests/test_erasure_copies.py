"""Erasure reaches every copy (issue 9, finding 7): upload copies that never became a stored photo
(duplicates, failures, sidecars, the archive), and the case records that show an erased person's
face (their probe thumbnail and kept probe photo, and the candidates that were their faces).

Each erasure test checks byte for byte that the bytes were there before and that afterwards no file
under the data directory (catalog.db, catalog.db-wal, index files, uploads/, anything) holds them; on
PostgreSQL, where the catalog is not in the data directory, it checks the rows instead.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import lfw
from service_helpers import assert_error, backend, make_served, probe_bytes, run_search  # noqa: F401
from sqlalchemy import select, update

from facefinder.services.server import uploads
from facefinder.services.server.pictures import placeholder_jpeg
from facefinder.storage.cases import CaseSearch
from facefinder.storage.catalog import FaceRecord, ImageRecord

JPEG = {"Content-Type": "image/jpeg"}
UPLOADED = lfw("Hugo_Chavez", 1)  # not in the seeded collection (photos 2 and 3 are)


@pytest.fixture
def served(backend, tmp_path, pipeline):
    app = make_served(tmp_path / "data", pipeline, backend.new_url())
    yield app
    app.close()


# ----- helpers ---------------------------------------------------------------------------------------
def fragments(blob: bytes, size: int = 32) -> list[bytes]:
    """Pieces of a blob to look for (SQLite splits long rows over pages). A JPEG's first half (headers,
    tables) is shared by many JPEGs, so only its second half, the entropy-coded data, counts."""
    start = len(blob) // 2 if blob[:2] == b"\xff\xd8" else 0
    return [blob[i : i + size] for i in range(start, len(blob) - size + 1, size)]


def files_holding(data: Path, blob: bytes) -> list[str]:
    """Every file under the data directory that holds any piece of ``blob``, as paths relative to it."""
    pieces = fragments(blob)
    found = []
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        content = path.read_bytes()
        if any(piece in content for piece in pieces):
            found.append(path.relative_to(data).as_posix())
    return found


def upload(served, name: str, content: bytes, user: str = "admin", collection: str = "people") -> dict:
    """Upload through POST /api/ingests/upload and wait for the job; returns the finished job."""
    response = served.client(user).post(
        "/api/ingests/upload",
        data={"collection": collection},
        files={"file": (name, content, "application/octet-stream")},
    )
    assert response.status_code == 202, response.text
    return served.service.jobs.wait(response.json()["id"]).as_dict()


def upload_files(served) -> list[str]:
    root = uploads.uploads_dir(served.finder.data_dir)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def uploaded_images(served) -> dict[str, tuple[int, list[bytes]]]:
    """source -> (image id, its faces' thumbnails) of every photo stored from uploads/."""
    root = str(uploads.uploads_dir(served.finder.data_dir))
    with served.finder.store.catalog.session() as session:
        images = session.execute(
            select(ImageRecord.id, ImageRecord.source).where(ImageRecord.source.startswith(root))
        ).all()
        return {
            source: (
                image_id,
                list(session.scalars(select(FaceRecord.thumbnail).where(FaceRecord.image_id == image_id))),
            )
            for image_id, source in images
        }


def is_sqlite(served) -> bool:
    return served.catalog_url is None


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


# ----- uploads ---------------------------------------------------------------------------------------
def test_a_duplicate_upload_leaves_no_copy_and_erasure_reaches_every_copy(served):
    photo = UPLOADED.read_bytes()
    first = upload(served, "hugo.jpg", photo)
    assert first["state"] == "done" and first["report"]["ingested"] == 1, first
    [(source, (image_id, thumbnails))] = uploaded_images(served).items()
    assert len(thumbnails) == 1 and len(upload_files(served)) == 1

    # The same photo again, alone and inside an archive with a sidecar, a broken file and a photo
    # the collection already holds from a server folder: nothing of it may stay.
    again = upload(served, "again.jpg", photo)
    assert again["state"] == "done" and again["report"]["duplicates"] == 1, again
    archive = zip_of(
        {
            "a/hugo.jpg": photo,
            "a/hugo.jpg.json": json.dumps({"notes": "x"}).encode(),
            "a/broken.jpg": b"\xff\xd8 not a photo",
            "b/seeded.jpg": lfw("Hugo_Chavez", 2).read_bytes(),
        }
    )
    mixed = upload(served, "mixed.zip", archive)
    assert mixed["state"] == "done", mixed
    assert (mixed["report"]["duplicates"], len(mixed["report"]["failures"])) == (2, 1), mixed
    assert upload_files(served) == [Path(source).relative_to(uploads.uploads_dir(served.finder.data_dir)).as_posix()]
    assert files_holding(served.data_dir, photo) == [Path(source).relative_to(served.data_dir).as_posix()]

    # A copy an older version left behind (no job owns it) is reached by the next erasure too.
    stray = uploads.uploads_dir(served.finder.data_dir) / "20240101T000000-0000dead" / "files" / "hugo.jpg"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(photo)
    if is_sqlite(served):
        assert {"catalog.db", "catalog.db-wal"} & set(files_holding(served.data_dir, thumbnails[0]))

    response = served.client("admin").delete(f"/api/images/{image_id}")
    assert response.status_code == 200, response.text
    assert files_holding(served.data_dir, photo) == []
    assert upload_files(served) == []
    if is_sqlite(served):
        assert files_holding(served.data_dir, thumbnails[0]) == []
    with served.finder.store.catalog.session() as session:
        assert session.scalar(select(ImageRecord.id).where(ImageRecord.id == image_id)) is None


def test_a_folder_in_flight_is_left_to_its_job(served):
    """The sweep after an erasure never takes a file from under a running upload job."""
    running = uploads.new_folder(served.finder.data_dir)
    (running / "next.jpg").write_bytes(UPLOADED.read_bytes())
    some_face = next(iter(served.finder.store.faces(list(range(1, 50)))))
    assert served.client("admin").delete(f"/api/faces/{some_face}").status_code == 200
    assert (running / "next.jpg").read_bytes() == UPLOADED.read_bytes()
    assert uploads.release(served.finder.store, running) == 1  # its job ends: never stored, so scrubbed
    assert not running.exists()


def test_a_failed_upload_job_leaves_nothing(served):
    job = upload(served, "broken.zip", b"PK\x03\x04 this is no archive" + UPLOADED.read_bytes())
    assert job["state"] == "failed" and "unreadable archive" in job["error"], job
    assert upload_files(served) == [] and files_holding(served.data_dir, UPLOADED.read_bytes()) == []
    # A photo with no face and one on the opt-out list are not stored either, so not kept.
    admin = served.client("admin")
    assert (
        admin.post(
            "/api/privacy/optouts?reference=R-1", content=lfw("Colin_Powell", 1).read_bytes(), headers=JPEG
        ).status_code
        == 201
    )
    noface = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (200, 200), (120, 160, 200)).save(noface, format="JPEG")
    job = upload(
        served, "two.zip", zip_of({"sky.jpg": noface.getvalue(), "colin.jpg": lfw("Colin_Powell", 1).read_bytes()})
    )
    assert job["state"] == "done" and job["report"]["opted_out"] == 1, job
    kept = upload_files(served)
    assert len(kept) == 1 and kept[0].endswith("sky.jpg")  # a photo without faces is stored (its row)
    assert files_holding(served.data_dir, lfw("Colin_Powell", 1).read_bytes()) == []


def test_deleting_a_collection_removes_its_uploads(served):
    admin = served.client("admin")
    assert admin.post(
        "/api/collections", json={"name": "up", "purpose": "tests", "legal_basis": "tests", "retention_days": 30}
    ).status_code in (200, 201)
    photos = {"x/tony.jpg": lfw("Tony_Blair", 1).read_bytes(), "x/bush.jpg": lfw("George_W_Bush", 1).read_bytes()}
    job = upload(served, "two.zip", zip_of({**photos, "x/tony-again.jpg": photos["x/tony.jpg"]}), collection="up")
    assert job["state"] == "done" and job["report"]["ingested"] == 2, job
    assert len(upload_files(served)) == 2
    assert admin.delete("/api/collections/up").status_code == 200
    assert upload_files(served) == []
    for content in photos.values():
        assert files_holding(served.data_dir, content) == []


def test_an_archive_inside_an_upload_is_unpacked_so_each_photo_can_be_erased(served):
    """A photo read from inside a nested archive could not be erased without rewriting the archive."""
    inner = zip_of(
        {"putin.jpg": lfw("Vladimir_Putin", 1).read_bytes(), "bush.jpg": lfw("George_W_Bush", 1).read_bytes()}
    )
    job = upload(served, "outer.zip", zip_of({"inner.zip": inner}))
    assert job["state"] == "done" and job["report"]["ingested"] == 2, job
    assert all(
        f.split("/", 1)[1] in ("files/inner.zip.d/bush.jpg", "files/inner.zip.d/putin.jpg")
        for f in upload_files(served)
    )
    stored = uploaded_images(served)
    [putin] = [image_id for source, (image_id, _) in stored.items() if source.endswith("putin.jpg")]
    assert served.client("admin").delete(f"/api/images/{putin}").status_code == 200
    assert files_holding(served.data_dir, lfw("Vladimir_Putin", 1).read_bytes()) == []
    assert len(files_holding(served.data_dir, lfw("George_W_Bush", 1).read_bytes())) == 1


def test_subject_access_reports_are_not_written_into_the_data_directory(tmp_path):
    """The report holds thumbnails; inside the data directory it would be a copy no erasure reaches."""
    from typer.testing import CliRunner

    from facefinder.interfaces.cli import app

    data = tmp_path / "data"
    result = CliRunner().invoke(
        app,
        [
            "--data-dir",
            str(data),
            "privacy",
            "access",
            str(UPLOADED),
            "--approved-by",
            "dpo",
            "--out",
            str(data / "reports"),
        ],
    )
    assert result.exit_code == 2 and "inside the data directory" in result.stderr, result.stderr
    assert not (data / "reports").exists()


# ----- case records ----------------------------------------------------------------------------------
def probe_row(served, search_id: int) -> CaseSearch:
    with served.finder.store.catalog.session() as session:
        return session.get(CaseSearch, search_id)


def test_erasing_a_person_replaces_their_probe_in_case_records(served):
    admin, ivan = served.client("admin"), served.client("ivan")
    # Probe photos are kept a day: the kept photo must go with the face.
    assert admin.put("/api/settings", json={"probe_retention_days": 1}).status_code == 200
    tony = run_search(ivan, person="Tony_Blair", case_id="K-7")
    legacy = run_search(ivan, person="Tony_Blair", case_id="K-8")
    other = run_search(ivan, person="Colin_Powell", case_id="K-9")
    assert tony["probe_kept"] and any(c["collection"] == "people" for c in tony["candidates"])
    # A search recorded before probe templates were kept: found through its thumbnail.
    with served.finder.store.catalog.session() as session, session.begin():
        session.execute(update(CaseSearch).where(CaseSearch.id == legacy["id"]).values(probe_embedding=None))
    thumbnail = ivan.get(f"/api/searches/{tony['id']}/probe/thumbnail").content
    candidate = ivan.get(f"/api/searches/{tony['id']}/candidates/1/thumbnail").content
    other_thumbnail = ivan.get(f"/api/searches/{other['id']}/probe/thumbnail").content
    photo = probe_bytes("Tony_Blair")
    assert thumbnail[:2] == b"\xff\xd8" and probe_row(served, tony["id"]).probe_photo == photo
    if is_sqlite(served):
        for blob in (thumbnail, photo, candidate):
            assert {"catalog.db", "catalog.db-wal"} & set(files_holding(served.data_dir, blob))

    # Erase the person (step 1 lists, step 2 erases the confirmed faces).
    found = admin.post("/api/privacy/persons/find", content=lfw("Tony_Blair", 2).read_bytes(), headers=JPEG).json()
    assert found["matches"] and all("Tony_Blair" in m["source"] for m in found["matches"])
    ids = "&".join(f"face_id={m['face_id']}" for m in found["matches"])
    erased = admin.post(f"/api/privacy/persons/erase?{ids}", content=lfw("Tony_Blair", 2).read_bytes(), headers=JPEG)
    assert erased.status_code == 200, erased.text

    placeholder = placeholder_jpeg("erased on", today())
    for search in (tony, legacy):
        record = ivan.get(f"/api/searches/{search['id']}").json()
        assert record["probe_erased_at"][:10] == today() and record["probe_kept"] is False
        served_thumb = ivan.get(f"/api/searches/{search['id']}/probe/thumbnail")
        assert served_thumb.status_code == 200 and served_thumb.content == placeholder != thumbnail
        row = probe_row(served, search["id"])
        assert (row.probe_thumbnail, row.probe_embedding, row.probe_photo) == (b"", None, None)
        # The candidates that were the erased faces show a placeholder too, dated.
        erased_ranks = [
            c["rank"] for c in record["candidates"] if c["face_id"] in {m["face_id"] for m in found["matches"]}
        ]
        assert erased_ranks
        for c in record["candidates"]:
            if c["rank"] in erased_ranks:
                assert c["erased_at"][:10] == today()
                assert ivan.get(f"/api/searches/{search['id']}/candidates/{c['rank']}/thumbnail").content == placeholder
    # The case, purpose, sha256 and scores stay; another person's probe is untouched.
    record = ivan.get(f"/api/searches/{tony['id']}").json()
    assert record["case_id"] == "K-7" and record["probe_sha256"] == tony["probe_sha256"]
    assert ivan.get(f"/api/searches/{other['id']}/probe/thumbnail").content == other_thumbnail
    assert ivan.get(f"/api/searches/{other['id']}").json()["probe_erased_at"] is None
    # The web page says so too.
    page = served.browser("ivan")[0].get(f"/searches/{tony['id']}")
    assert page.status_code == 200 and f"face erased on {today()}" in page.text
    # Nothing of the face, the probe photo or the candidate's face is left under the data directory.
    if is_sqlite(served):
        for blob in (thumbnail, photo, candidate):
            assert files_holding(served.data_dir, blob) == []
    details = json.loads(served.finder.audit.entries(action="delete.person")[-1].details)
    assert sorted(details["case_searches"]) == sorted([tony["id"], legacy["id"]])


def test_withdrawing_consent_reaches_the_case_records(served, tmp_path):
    folder = tmp_path / "consented"
    folder.mkdir()
    shutil.copy(lfw("Vladimir_Putin", 1), folder / "putin.jpg")
    (folder / "putin.jpg.json").write_text(json.dumps({"consent_id": "C-9"}))
    assert served.finder.ingest(folder, "people").ingested == 1
    ivan = served.client("ivan")
    search = run_search(ivan, person="Vladimir_Putin", case_id="K-10")
    thumbnail = ivan.get(f"/api/searches/{search['id']}/probe/thumbnail").content
    result = served.client("admin").post("/api/privacy/consents/C-9/withdraw", json={"note": "by letter"})
    assert result.status_code == 200 and result.json()["images"] == 1, result.text
    record = ivan.get(f"/api/searches/{search['id']}").json()
    assert record["probe_erased_at"][:10] == today()
    assert ivan.get(f"/api/searches/{search['id']}/probe/thumbnail").content == placeholder_jpeg("erased on", today())
    if is_sqlite(served):
        assert files_holding(served.data_dir, thumbnail) == []


def test_a_photo_erased_as_such_leaves_the_probe_but_dates_the_candidate(served):
    """Deleting a photo is not erasing a person: probes stay; the candidate shows when it went."""
    ivan = served.client("ivan")
    search = run_search(ivan, person="George_W_Bush", case_id="K-11")
    thumbnail = ivan.get(f"/api/searches/{search['id']}/probe/thumbnail").content
    first = search["candidates"][0]
    assert served.client("admin").delete(f"/api/images/{first['image_id']}").status_code == 200
    record = ivan.get(f"/api/searches/{search['id']}").json()
    assert record["probe_erased_at"] is None and record["candidates"][0]["erased_at"][:10] == today()
    assert ivan.get(f"/api/searches/{search['id']}/probe/thumbnail").content == thumbnail
    assert ivan.get(f"/api/searches/{search['id']}/candidates/1/thumbnail").content == placeholder_jpeg(
        "erased on", today()
    )
    assert_error(ivan.get(f"/api/searches/{search['id']}/candidates/1/photo"), 404)
