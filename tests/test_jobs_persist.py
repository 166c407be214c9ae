"""Ingest feedback and provenance on the server (issue 11, UI findings): the job list is kept in the
catalog and survives a restart (a job the stopped server left open shows as interrupted); a job says
how many photos were duplicates and which photos had no face, and each failed file can be opened with
its reason; uploaded photos are shown as upload:<archive>!<member> wherever a source is shown (the
collection's photos, privacy matches, a result's details, the subject access report), never by their
server path; the collections page offers each user only the server folders they may use; `check`
reports an upload folder whose server is gone. Through the real app on the real models, on SQLite and
on PostgreSQL."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import lfw, open_finder
from PIL import Image
from service_helpers import assert_error, backend, make_served, run_search  # noqa: F401

from facefinder.services import check
from facefinder.services.server import browse, job_records, uploads

POLICY_JSON = {"purpose": "p", "legal_basis": "l", "retention_days": 9}


@pytest.fixture
def app(backend, tmp_path, pipeline):
    """An unseeded app with the collection 'up', granted to ivan."""
    served = make_served(tmp_path / "data", pipeline, backend.new_url(), seed=False)
    response = served.client("admin").post("/api/collections", json={"name": "up", **POLICY_JSON})
    assert response.status_code == 201, response.text
    assert served.client("admin").put("/api/users/ivan/grants/up").status_code in (200, 201, 204)
    yield served
    served.close()


def blank_jpeg() -> bytes:
    """A photo with no one in it: a smooth gradient."""
    ramp = np.linspace(0, 255, 240, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (180, 1))] * 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def photo_set() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("x/blair.jpg", lfw("Tony_Blair", 1).read_bytes())
        zf.writestr("x/putin.jpg", lfw("Vladimir_Putin", 1).read_bytes())
        zf.writestr("empty/blank.jpg", blank_jpeg())
        zf.writestr("bad.jpg", b"this is not a photo at all")
    return buffer.getvalue()


def upload(served, name: str, data: bytes, user: str = "admin") -> dict:
    response = served.client(user).post(
        "/api/ingests/upload", data={"collection": "up"}, files={"file": (name, data, "application/octet-stream")}
    )
    assert response.status_code == 202, response.text
    served.service.jobs.wait(response.json()["id"])
    return served.client(user).get(f"/api/ingests/{response.json()['id']}").json()


def no_server_path(served, text: str) -> None:
    assert str(served.data_dir) not in text and "/uploads/" not in text, text


def test_duplicates_photos_without_a_face_and_failures_are_shown(app):
    first = upload(app, "set.zip", photo_set())
    assert first["state"] == "done", first
    assert (first["ingested"], first["duplicates"], first["photos_without_faces"], first["failures"]) == (3, 0, 1, 1)
    [failure] = first["report"]["failures"]
    assert failure["source"] == "upload:set.zip!bad.jpg" and failure["reason"] and failure["detail"], failure

    again = upload(app, "set.zip", photo_set())  # the finding: "0 faces" instead of "3 duplicates"
    assert (again["ingested"], again["duplicates"], again["faces"], again["failures"]) == (0, 3, 0, 1), again

    client, _ = app.browser("admin")
    listing = client.get("/collections").text
    assert f'href="/ingests/{again["id"]}"' in listing  # a job opens
    page = client.get(f"/ingests/{first['id']}")
    assert page.status_code == 200
    html = page.text
    assert "upload:set.zip!bad.jpg" in html and failure["reason"] in html  # why a file failed
    assert "upload:set.zip!empty/blank.jpg" in html  # the photo without a face, by name
    assert 'id="count-duplicates">0<' in html and 'id="count-no-face">1<' in html
    no_server_path(app, html)
    html = client.get(f"/ingests/{again['id']}").text
    assert 'id="count-duplicates">3<' in html and "upload:set.zip!empty/blank.jpg" not in html
    no_server_path(app, json.dumps([first, again]))

    # an investigator sees their own jobs only
    assert_error(app.client("ivan").get(f"/api/ingests/{first['id']}"), 404, "not_found")
    ivan, _ = app.browser("ivan")
    assert ivan.get(f"/ingests/{first['id']}").status_code == 404


def test_the_job_list_survives_a_restart_and_open_jobs_show_interrupted(app, pipeline):
    from facefinder.interfaces.http.app import ServiceConfig, create_app

    done = upload(app, "set.zip", photo_set())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left_open = {**done, "id": "0123456789abcdef", "state": "running", "report": None, "finished_at": None}
    left_open.update(owner_id=app.service.accounts.user("admin").id, collection_id=1, path="/nowhere", upload=False)
    left_open["process"] = f"{socket.gethostname()} {gone.stdout.strip()} 0123456789abcdef"
    left_open["collection_id"] = app.service.store.collection("up").id
    job_records.save(app.service.catalog, left_open)
    app.service.close()
    app.finder.close()

    finder = open_finder(app.data_dir, pipeline, catalog_url=app.catalog_url)
    restarted = create_app(finder=finder, config=ServiceConfig(import_roots=[app.import_root]))
    try:
        with TestClient(restarted, headers={"Authorization": f"Bearer {app.tokens['admin']}"}) as client:
            jobs = {j["id"]: j for j in client.get("/api/ingests").json()}
            assert jobs[done["id"]] == done  # the finished job, as it was, report and all
            interrupted = client.get("/api/ingests/0123456789abcdef").json()
            assert interrupted["state"] == "interrupted" and "ingest the same files again" in interrupted["error"]
        with TestClient(restarted, headers={"Authorization": f"Bearer {app.tokens['ivan']}"}) as client:
            assert client.get("/api/ingests").json() == []  # not theirs
        # deleting the collection takes its jobs with it
        with TestClient(restarted, headers={"Authorization": f"Bearer {app.tokens['admin']}"}) as client:
            assert client.delete("/api/collections/up").status_code == 200
            assert client.get("/api/ingests").json() == []
    finally:
        restarted.state.service.close()
        finder.close()
        app.finder = open_finder(app.data_dir, pipeline, catalog_url=app.catalog_url)  # for the fixture's close


def test_uploaded_photos_are_shown_by_their_upload_names(app):
    upload(app, "set.zip", photo_set())
    admin = app.client("admin")
    page = admin.get("/api/collections/up/images").json()
    sources = sorted(p["source"] for p in page["photos"])
    assert sources == ["upload:set.zip!empty/blank.jpg", "upload:set.zip!x/blair.jpg", "upload:set.zip!x/putin.jpg"]
    assert page["total"] == 3 and sum(len(p["faces"]) for p in page["photos"]) >= 2
    only = admin.get("/api/collections/up/images?without_faces=true").json()
    assert [p["source"] for p in only["photos"]] == ["upload:set.zip!empty/blank.jpg"]
    face = next(f for p in page["photos"] for f in p["faces"])
    thumbnail = admin.get(f"/api/faces/{face['face_id']}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
    actions = [e.action for e in app.service.audit.entries()]
    assert "collection.browse" in actions and "collection.faces.view" in actions
    assert_error(app.client("ivan").get("/api/collections/up/images"), 403, "forbidden")
    assert_error(app.client("ivan").get(f"/api/faces/{face['face_id']}/thumbnail"), 403, "forbidden")

    blair = lfw("Tony_Blair", 1).read_bytes()
    found = admin.post("/api/privacy/persons/find", content=blair, headers={"Content-Type": "image/jpeg"}).json()
    assert [m["source"] for m in found["matches"]] == ["upload:set.zip!x/blair.jpg"], found
    report = admin.post("/api/privacy/access", content=blair, headers={"Content-Type": "image/jpeg"}).json()
    assert [f["image"]["source"] for f in report["faces"]] == ["upload:set.zip!x/blair.jpg"]
    html = admin.post("/api/privacy/access?format=html", content=blair, headers={"Content-Type": "image/jpeg"}).text
    assert "upload:set.zip!x/blair.jpg" in html
    no_server_path(app, json.dumps([page, found, report]) + html)

    more = io.BytesIO()
    with zipfile.ZipFile(more, "w") as zf:
        for number in (2, 3):
            zf.writestr(f"blair{number}.jpg", lfw("Tony_Blair", number).read_bytes())
    upload(app, "more.zip", more.getvalue())
    assert admin.post("/api/collections/up/people/cluster", json={}).status_code == 200
    people = admin.get("/api/collections/up/people?members=true").json()
    members = {m["source"] for p in people for m in p["members"]}
    assert "upload:set.zip!x/blair.jpg" in members and "upload:more.zip!blair2.jpg" in members, people
    no_server_path(app, json.dumps(people))

    search = run_search(app.client("ivan"), person="Tony_Blair", collections=["up"])
    details = app.client("ivan").get(f"/api/searches/{search['id']}/candidates/1").json()
    assert details["source"] == "upload:set.zip!x/blair.jpg", details


def test_display_names_of_every_kind_of_source(tmp_path):
    root = tmp_path / "data"
    folder = uploads.new_folder(root, "me.jpg")
    assert uploads.display_name(str(folder / "me.jpg"), root) == "upload:me.jpg"
    archive = uploads.new_folder(root, "trip.tar.gz")
    assert uploads.display_name(str(archive / "files" / "a" / "b.jpg"), root) == "upload:trip.tar.gz!a/b.jpg"
    assert archive.name.endswith("-trip%2Etar%2Egz")  # never taken for an archive itself
    old = root / "uploads" / "20240101T000000-0000dead"  # made before folders carried the upload's name
    assert uploads.display_name(str(old / "files" / "hugo.jpg"), root) == "upload:(archive)!hugo.jpg"
    assert uploads.display_name("/srv/photos/x.jpg", root) == "/srv/photos/x.jpg"
    assert uploads.display_name("s3://bucket/x.jpg", root) == "s3://bucket/x.jpg"


def test_check_reports_an_upload_folder_whose_server_is_gone(app):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = app.data_dir / "uploads" / "20240101T000000-deadbeef-old%2Ezip"
    (stale / "files").mkdir(parents=True)
    (stale / uploads.IN_FLIGHT).write_text(f"{socket.gethostname()} {gone.stdout.strip()} 0123456789abcdef\n")
    (stale / "files" / "left.jpg").write_bytes(lfw("Tony_Blair", 1).read_bytes())
    live = uploads.new_folder(app.data_dir, "now.zip")  # this process's: a job may be working in it
    (live / "arriving.jpg").write_bytes(lfw("Tony_Blair", 2).read_bytes())

    problems = [p for p in check.check(app.finder) if p.kind == "orphan-upload"]
    assert [p.message.split(":")[0] for p in problems] == [str(stale / "files" / "left.jpg")]
    check.check(app.finder, repair=True)
    assert not stale.exists() and (live / "arriving.jpg").exists()


def test_the_collections_page_offers_only_the_folders_each_user_may_use(backend, tmp_path, pipeline):
    bound = tmp_path / "bound"
    bound.mkdir()
    served = make_served(tmp_path / "data", pipeline, backend.new_url(), collection_import_roots={"people": [bound]})
    try:
        admin_root = str(served.import_root.resolve())
        admin, _ = served.browser("admin")
        html = admin.get("/collections").text
        assert admin_root in html and str(bound.resolve()) in html
        ivan, _ = served.browser("ivan")  # granted 'people', which has a bound folder
        html = ivan.get("/collections").text
        assert admin_root not in html and str(bound.resolve()) in html
        olga, _ = served.browser("olga")  # no grant, no folder
        assert admin_root not in olga.get("/collections").text
        served.service.imports.bound.clear()
        html = ivan.get("/collections").text
        assert admin_root not in html and "No server folder is open to you" in html
    finally:
        served.close()


def test_failures_of_a_running_upload_are_shown_by_upload_name(app):
    """A job's failure rows keep the server path until the job ends (or forever, if the server stops
    mid-job); the API and the admin page (browse.shown_failures) name them by upload as they are read."""
    store = app.service.store
    folder = uploads.uploads_dir(app.data_dir) / "20260101T000000-ab12cd34-photos%2Ezip" / "files"
    store.record_failure(store.collection("up").id, str(folder / "x" / "bad.jpg"), "corrupt", "not a photo")
    [row] = app.client("ivan").get("/api/collections/up/failures").json()
    assert row["source"].startswith("upload:") and str(app.data_dir) not in row["source"]
    [shown] = browse.shown_failures(store, "up")  # what the admin page lists too
    assert shown.source == row["source"] and shown.source.endswith("bad.jpg")
