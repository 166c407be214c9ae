"""Uploads cannot exhaust the server's disk or show its paths (issue 11, finding 5): an unpacked-size
ratio, a quota for the whole uploads folder, nothing left behind by a failed upload or a deleted
collection, and member names that never fail an archive. Through the real app (FastAPI TestClient)
on the real models; runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import lfw
from service_helpers import assert_error, backend, make_served  # noqa: F401
from sqlalchemy import select

from facefinder.services.server import uploads
from facefinder.services.server.accounts import Principal
from facefinder.services.server.jobs import IngestJobs
from facefinder.storage.catalog import ImageRecord

MiB = 1024 * 1024
POLICY_JSON = {"purpose": "p", "legal_basis": "l", "retention_days": 9}


@pytest.fixture
def fresh(backend, tmp_path, pipeline):
    """Factory of unseeded apps with their own config, each with the collection 'up'."""
    made = []

    def make(**config):
        app = make_served(tmp_path / f"data{len(made)}", pipeline, backend.new_url(), seed=False, **config)
        made.append(app)
        response = app.client("admin").post("/api/collections", json={"name": "up", **POLICY_JSON})
        assert response.status_code == 201, response.text
        return app

    yield make
    for app in made:
        app.close()


def upload(app, name: str, data: bytes, collection: str = "up", user: str = "admin"):
    return app.client(user).post(
        "/api/ingests/upload", data={"collection": collection}, files={"file": (name, data, "application/octet-stream")}
    )


def run(app, name: str, data: bytes, collection: str = "up"):
    """Upload and wait for the job; returns it (as the API shows it)."""
    response = upload(app, name, data, collection)
    assert response.status_code == 202, response.text
    app.service.jobs.wait(response.json()["id"])
    return app.client("admin").get(f"/api/ingests/{response.json()['id']}").json()


def left(app) -> list[Path]:
    """Everything under <data dir>/uploads (files and folders)."""
    root = app.data_dir / "uploads"
    return sorted(root.rglob("*")) if root.is_dir() else []


def zeros_zip(members: int, size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in range(members):
            with zf.open(f"zeros{n}.jpg", "w") as out:
                for _ in range(size // MiB):
                    out.write(bytes(MiB))
    return buffer.getvalue()


def photos_zip(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def assert_no_server_path(app, job: dict) -> None:
    shown = json.dumps(job) + json.dumps(app.client("admin").get("/api/collections/up/failures").json())
    assert str(app.data_dir) not in shown and "/uploads/" not in shown, shown


# ----- the ratio -----------------------------------------------------------------------------------------
def test_a_zip_bomb_is_refused_before_it_is_written_and_leaves_nothing(fresh):
    """The finding: a 1.2 MB zip of 6 x 199 MiB zeros left 1.2 GB in uploads/."""
    app = fresh()
    bomb = zeros_zip(6, 199 * MiB)
    assert len(bomb) < 2 * MiB
    job = run(app, "bomb.zip", bomb)
    assert job["state"] == "failed" and job["report"] is None
    assert job["error"] == (
        f"file: the archive unpacks to more than {100 * len(bomb):,} bytes (an archive may unpack to 100 times its size)"
    )
    assert left(app) == []
    assert_no_server_path(app, job)
    failed = app.service.audit.entries(action="ingest.failed")
    assert json.loads(failed[0].details)["path"] == "upload:bomb.zip"


def test_a_tar_bomb_is_stopped_at_the_limit_while_it_unpacks(fresh):
    """A tar declares no sizes up front: it is stopped while unpacking, before a byte past the limit."""
    app = fresh(max_unpack_ratio=20)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for n in range(3):
            info = tarfile.TarInfo(f"zeros{n}.jpg")
            info.size = 8 * MiB
            tf.addfile(info, io.BytesIO(bytes(info.size)))
    job = run(app, "bomb.tar.gz", buffer.getvalue())
    assert job["state"] == "failed" and "20 times its size" in job["error"], job
    assert left(app) == []


# ----- the quota -----------------------------------------------------------------------------------------
def test_the_uploads_quota_refuses_what_would_pass_it_and_erasure_frees_room(fresh):
    photo = lfw("Tony_Blair", 1).read_bytes()
    app = fresh(upload_quota_bytes=int(1.5 * len(photo)))
    job = run(app, "blair.jpg", photo)
    assert job["state"] == "done" and job["report"]["ingested"] == 1
    kept = [p for p in left(app) if p.is_file()]
    assert len(kept) == 1  # the copy of the stored photo counts against the quota

    error = assert_error(
        upload(app, "powell.jpg", lfw("Colin_Powell", 1).read_bytes()), 507, "insufficient_storage", "file"
    )
    assert error["message"].startswith("file: the uploads folder is full: ") and "--upload-quota-gb" in error["message"]
    assert str(app.data_dir) not in error["message"]
    assert [p for p in left(app) if p.is_file()] == kept  # nothing of the refused upload was written

    # an archive is accepted while it fits, but unpacks only into the room left
    archive = photos_zip(**{"a.jpg": lfw("Colin_Powell", 1).read_bytes(), "b.jpg": lfw("Colin_Powell", 2).read_bytes()})
    app.service.jobs.space.quota = len(photo) + len(archive) + 1000
    job = run(app, "two.zip", archive)
    assert job["state"] == "failed" and "uploads quota" in job["error"], job
    assert [p for p in left(app) if p.is_file()] == kept

    assert app.client("admin").delete("/api/collections/up").status_code == 200
    assert left(app) == []
    app.client("admin").post("/api/collections", json={"name": "up", **POLICY_JSON})
    assert run(app, "powell.jpg", lfw("Colin_Powell", 1).read_bytes())["state"] == "done"


# ----- cleanup -------------------------------------------------------------------------------------------
def test_a_failed_unpack_leaves_nothing_and_shows_no_path(fresh):
    app = fresh()
    job = run(app, "broken.zip", b"PK\x03\x04 this is not a zip archive at all" * 10)
    assert job["state"] == "failed" and job["error"].startswith("file: unreadable archive ("), job
    assert left(app) == []
    assert_no_server_path(app, job)


def test_deleting_a_collection_scrubs_its_upload_copies(fresh):
    app = fresh()
    archive = photos_zip(
        **{"x/blair.jpg": lfw("Tony_Blair", 1).read_bytes(), "x/putin.jpg": lfw("Vladimir_Putin", 1).read_bytes()}
    )
    job = run(app, "two.zip", archive)
    assert job["state"] == "done" and job["report"]["ingested"] == 2, job
    assert len([p for p in left(app) if p.is_file()]) == 2
    assert app.client("admin").delete("/api/collections/up").status_code == 200
    assert left(app) == []


def test_an_upload_folder_left_by_a_stopped_server_is_swept(fresh):
    """A server killed during a job leaves its folder marked in flight; once that process is gone, the
    next sweep (a server's start, any erasure) takes its unused files. A live job's folder is kept."""
    app = fresh()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = app.data_dir / "uploads" / "20240101T000000-deadbeef"
    (stale / "files").mkdir(parents=True)
    (stale / uploads.IN_FLIGHT).write_text(f"{socket.gethostname()} {gone.stdout.strip()} 0123456789abcdef\n")
    (stale / "files" / "left.jpg").write_bytes(lfw("Tony_Blair", 1).read_bytes())
    live = uploads.new_folder(app.data_dir)  # this process's: a job could be working in it
    (live / "arrived.jpg").write_bytes(lfw("Tony_Blair", 2).read_bytes())
    assert not uploads.in_flight(stale) and uploads.in_flight(live)

    run(app, "blair.jpg", lfw("Colin_Powell", 1).read_bytes())  # a job ends: its own folder only
    assert (stale / "files" / "left.jpg").exists()
    photo = app.client("admin").get("/api/collections").json()[0]
    assert photo["images"] == 1
    with app.service.catalog.session() as session:
        image_id = session.scalars(select(ImageRecord.id)).one()
    assert app.client("admin").delete(f"/api/images/{image_id}").status_code == 200  # an erasure sweeps
    assert not stale.exists() and (live / "arrived.jpg").exists()

    (stale / "files").mkdir(parents=True)  # and again, found when a server starts
    (stale / uploads.IN_FLIGHT).write_text(f"{socket.gethostname()} {gone.stdout.strip()} 0123456789abcdef\n")
    (stale / "files" / "left.jpg").write_bytes(lfw("Tony_Blair", 1).read_bytes())
    service = app.service
    IngestJobs(service.store, service.accounts, service.audit, service.acting_as).close()
    assert not stale.exists() and (live / "arrived.jpg").exists()


# ----- names ---------------------------------------------------------------------------------------------
def test_long_and_clashing_member_names_never_fail_the_archive(fresh):
    """The finding: a 300-character member name failed the whole zip and showed the server path."""
    app = fresh()
    long = "x" * 300
    archive = photos_zip(
        **{
            f"{long}.jpg": lfw("Tony_Blair", 1).read_bytes(),
            f"{long}.jpg.json": json.dumps({"case_id": "CASE-LONG"}).encode(),
            f"{'d' * 200}/{'e' * 200}/{'f' * 200}/{'g' * 200}/{'h' * 200}/deep.jpg": lfw(
                "Colin_Powell", 1
            ).read_bytes(),
            "a?b.jpg": lfw("Vladimir_Putin", 1).read_bytes(),
            "a_b.jpg": lfw("Vladimir_Putin", 2).read_bytes(),
            "clash": b"a file where a folder must go",
            "clash/inner.jpg": lfw("Hugo_Chavez", 1).read_bytes(),
            f"{'y' * 300}.jpg": b"not a photo",
        }
    )
    job = run(app, "names.zip", archive)
    assert job["state"] == "done", job
    assert job["report"]["ingested"] == 5, job["report"]
    failures = {(f["source"], f["reason"]) for f in job["report"]["failures"]}
    assert len(failures) == 2 and all(source.startswith("upload:names.zip!") for source, _ in failures), failures
    assert ("upload:names.zip!clash", "not-an-image") in failures
    assert_no_server_path(app, job)
    listed = app.client("admin").get("/api/collections/up/failures").json()
    assert {(f["source"], f["reason"]) for f in listed} == failures
    with app.service.catalog.session() as session:
        rows = session.execute(select(ImageRecord.source, ImageRecord.case_id)).all()
    assert "CASE-LONG" in {case for _, case in rows}, rows  # the shortened photo kept its sidecar
    assert all(len(part) <= 100 for source, _ in rows for part in Path(source).parts)
    ran = app.service.jobs.list(Principal(0, "test", "admin"))[0]
    assert ran.root == ran.folder  # an upload's job reads nothing outside its own folder
