"""The privacy endpoints (/api/privacy): admins only, the public opt-out form off until switched on,
photos taken as the request body and never kept, and every call in the audit log."""

from __future__ import annotations

import io
import json
import time

import pytest
from helpers import GROUP, lfw
from PIL import Image
from service_helpers import assert_error, backend, make_served, probe_bytes, run_search  # noqa: F401

from facefinder.services.calibration import default_calibration
from facefinder.services.server.pictures import placeholder_jpeg

JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    app = make_served(tmp_path_factory.mktemp(f"privacy-{backend.name}") / "data", pipeline, backend.new_url())
    yield app
    app.close()


def actions(served) -> list[str]:
    return [e.action for e in served.finder.audit.entries()]


@pytest.mark.parametrize("user, status", [(None, 401), ("aud", 403), ("ivan", 403)])
def test_only_admins(served, user, status):
    client = served.client(user)
    for method, path, kwargs in [
        ("GET", "/api/privacy/status", {}),
        ("GET", "/api/privacy/optouts", {}),
        ("POST", "/api/privacy/optouts", {"content": probe_bytes(), "headers": JPEG}),
        ("POST", "/api/privacy/persons/find", {"content": probe_bytes(), "headers": JPEG}),
        ("POST", "/api/privacy/access", {"content": probe_bytes(), "headers": JPEG}),
        ("GET", "/api/privacy/consents", {}),
        ("POST", "/api/privacy/purge", {"json": {"dry_run": True}}),
        ("PUT", "/api/privacy/public-optout", {"json": {"enabled": True}}),
    ]:
        assert_error(client.request(method, path, **kwargs), status)


def test_status(served):
    body = served.client("admin").get("/api/privacy/status").json()
    assert body["threshold"] == default_calibration().privacy_threshold
    assert body["collections_without_retention"] == [] and body["public_optout_form"] is False


def test_optout_through_the_api(served):
    admin = served.client("admin")
    assert_error(admin.post("/api/privacy/optouts", headers=JPEG), 400, "bad_request", "photo")
    assert_error(
        admin.post("/api/privacy/optouts", content=(GROUP / "sample1.jpg").read_bytes(), headers=JPEG),
        400,
        "bad_request",
    )  # three faces: say which
    before = run_search(served.client("ivan"), person="Colin_Powell", case_id="P-1")
    assert before["candidates"], before
    face = served.client("ivan").get(f"/api/searches/{before['id']}/candidates/1/thumbnail").content
    response = admin.post(
        "/api/privacy/optouts?reference=REQ-9", content=lfw("Colin_Powell", 1).read_bytes(), headers=JPEG
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["templates"] == 1 and created["matches"]
    assert all("Colin_Powell" in m["source"] for m in created["matches"])
    # Hidden from search at once: the probe is on the list, so nothing comes back.
    assert run_search(served.client("ivan"), person="Colin_Powell", case_id="P-2")["candidates"] == []
    # ... and a past search's record no longer shows the face, even before the erasure: a placeholder.
    ivan, past = served.client("ivan"), f"/api/searches/{before['id']}/candidates/1"
    withheld = ivan.get(past + "/thumbnail")
    assert withheld.status_code == 200 and withheld.content == placeholder_jpeg("withheld", "(opted out)") != face
    probe = ivan.get(f"/api/searches/{before['id']}/probe/thumbnail")  # the probe was this person too
    assert probe.content == placeholder_jpeg("withheld", "(opted out)")
    assert_error(ivan.get(past + "/photo"), 404)
    assert ivan.get(past).json()["available"] is False
    listed = admin.get(f"/api/privacy/optouts/{created['id']}/matches").json()
    assert [m["face_id"] for m in listed] == [m["face_id"] for m in created["matches"]]
    assert_error(admin.post(f"/api/privacy/optouts/{created['id']}/erase", json={"face_ids": [999999]}), 400)
    erased = admin.post(f"/api/privacy/optouts/{created['id']}/erase", json={"face_ids": None}).json()
    assert erased["faces"] == len(listed)
    # The record now says when the face was erased; and its probe, this same person, is erased too.
    record = ivan.get(f"/api/searches/{before['id']}").json()
    day = record["candidates"][0]["erased_at"][:10]
    assert record["probe_erased_at"][:10] == day and not record["probe_kept"]
    assert ivan.get(past + "/thumbnail").content == placeholder_jpeg("erased on", day)
    assert ivan.get(f"/api/searches/{before['id']}/probe/thumbnail").content == placeholder_jpeg("erased on", day)
    assert admin.get(f"/api/privacy/optouts/{created['id']}/matches").json() == []
    [row] = [o for o in admin.get("/api/privacy/optouts").json() if o["id"] == created["id"]]
    assert row["reference"] == "REQ-9" and row["channel"] == "admin" and row["erased_at"]
    assert admin.delete(f"/api/privacy/optouts/{created['id']}?note=test").json() == {"removed": created["id"]}
    assert_error(admin.get(f"/api/privacy/optouts/{created['id']}/matches"), 404)
    for action in ("optout.add", "optout.review", "optout.erase", "optout.remove"):
        assert action in actions(served)
    assert all(e.actor == "admin" for e in served.finder.audit.entries() if e.action.startswith("optout."))


def test_public_optout_form_is_off_until_switched_on(served):
    public = served.client(None)
    assert_error(public.get("/api/privacy/public/optout"), 404)
    assert_error(public.post("/api/privacy/public/optout", content=probe_bytes(), headers=JPEG), 404)
    admin = served.client("admin")
    assert admin.put("/api/privacy/public-optout", json={"enabled": True}).json() == {"enabled": True}
    try:
        page = public.get("/api/privacy/public/optout")
        assert page.status_code == 200 and "Opt out of face search" in page.text
        assert '<script src="/api/privacy/public/optout.js"' in page.text  # no inline script (CSP)
        assert public.get("/api/privacy/public/optout.js").status_code == 200
        response = public.post("/api/privacy/public/optout", content=lfw("Hugo_Chavez", 1).read_bytes(), headers=JPEG)
        assert response.status_code == 202, response.text
        body = response.json()
        assert set(body) == {"received", "reference", "message"}  # says nothing about what is held
        assert body["reference"].startswith("public-")
        error = assert_error(
            public.post("/api/privacy/public/optout", content=(GROUP / "sample1.jpg").read_bytes(), headers=JPEG),
            400,
            "bad_image",
            "photo",
        )
        assert "only you" in error["message"]
        [row] = [o for o in admin.get("/api/privacy/optouts").json() if o["reference"] == body["reference"]]
        assert row["channel"] == "public" and row["created_by"] == "public-form"
        for _ in range(5):  # 5 per hour per address: two used above
            last = public.post("/api/privacy/public/optout", content=b"x", headers=JPEG)
        assert_error(last, 429, "rate_limited")
        admin.delete(f"/api/privacy/optouts/{row['id']}")
    finally:
        admin.put("/api/privacy/public-optout", json={"enabled": False})
    assert json.loads(served.finder.audit.entries(action="optout.public_form")[-1].details) == {"enabled": False}


def test_privacy_photos_are_decoded_within_the_budget(served, tmp_path):
    """Erasure by person, opt-out and subject access read a photo as a probe is read: a 7999x7999 JPEG
    is decoded reduced (no face: a 400 in well under 3 s), a colour PNG over the decode budget is a 413
    from its header, in the API's error shape."""
    admin = served.client("admin")
    bomb = io.BytesIO()
    Image.new("RGB", (7999, 7999), 40).save(bomb, format="JPEG", quality=50)
    started = time.perf_counter()
    error = assert_error(admin.post("/api/privacy/persons/find", content=bomb.getvalue(), headers=JPEG), 400)
    assert time.perf_counter() - started < 3 and "no face found" in error["message"], error
    flat = io.BytesIO()
    Image.new("RGB", (6000, 6000)).save(flat, format="PNG")  # 36 MP: 137 MB to decode, over the 128 MB budget
    for path in ("/api/privacy/persons/find", "/api/privacy/optouts", "/api/privacy/access"):
        error = assert_error(
            admin.post(path, content=flat.getvalue(), headers={"Content-Type": "image/png"}), 413, "too_large", "photo"
        )
        assert "budget" in error["message"], error


def test_erase_person_needs_the_confirmed_face_ids(served):
    admin = served.client("admin")
    photo = lfw("George_W_Bush", 1).read_bytes()
    found = admin.post("/api/privacy/persons/find", content=photo, headers=JPEG).json()
    assert len(found["matches"]) == 2 and all("George_W_Bush" in m["source"] for m in found["matches"])
    assert_error(admin.post("/api/privacy/persons/erase", content=photo, headers=JPEG), 422)  # no face_id
    keep = found["matches"][-1]["face_id"]
    [chosen] = [m["face_id"] for m in found["matches"] if m["face_id"] != keep]
    erased = admin.post(f"/api/privacy/persons/erase?face_id={chosen}", content=photo, headers=JPEG).json()
    assert erased["face_ids"] == [chosen] and erased["images"] == 1
    left = admin.post("/api/privacy/persons/find", content=photo, headers=JPEG).json()
    assert [m["face_id"] for m in left["matches"]] == [keep]


def test_consent_and_purge_through_the_api(served):
    admin = served.client("admin")
    response = admin.post(
        "/api/privacy/consents",
        json={"consent_id": "API-1", "subject": "volunteer", "scope": "search", "given_at": "2024-02-03"},
    )
    assert response.status_code == 201 and response.json()["images"] == 0
    assert_error(
        admin.post(
            "/api/privacy/consents",
            json={"consent_id": "API-1", "subject": "x", "scope": "y", "given_at": "2024-02-03"},
        ),
        400,
    )
    assert any(c["consent_id"] == "API-1" for c in admin.get("/api/privacy/consents").json())
    assert admin.post("/api/privacy/consents/API-1/withdraw", json={"note": "by letter"}).json()["images"] == 0
    report = admin.post("/api/privacy/purge", json={"dry_run": True}).json()
    assert report["dry_run"] is True and report["images"] == 0 and report["unmanaged"] == []


def test_subject_access_json_and_html(served):
    admin = served.client("admin")
    photo = lfw("Vladimir_Putin", 1).read_bytes()
    report = admin.post("/api/privacy/access", content=photo, headers=JPEG).json()
    assert report["approved_by"] == "admin" and report["faces"]
    assert all("Vladimir_Putin" in f["image"]["source"] for f in report["faces"])
    html = admin.post("/api/privacy/access?format=html", content=photo, headers=JPEG)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "Subject access report" in html.text
    assert actions(served).count("access.export") >= 2
