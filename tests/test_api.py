"""The service API: sign-in, sessions and CSRF, tokens, case-bound search and its records, the two-person
rule, probe retention, ingest jobs, audit filters and exports, limits and hostile input, error shape.
Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from helpers import POLICY, box_iou, lfw
from PIL import Image
from service_helpers import (  # noqa: F401
    COLLECTION,
    assert_error,
    backend,
    make_served,
    password,
    probe_bytes,
    run_search,
)
from sqlalchemy import select, update

from facefinder.storage.base import utcnow
from facefinder.storage.cases import CaseCandidate, CaseSearch
from facefinder.storage.catalog import ImageRecord


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    """One seeded app per backend for the tests that only add to it."""
    app = make_served(tmp_path_factory.mktemp(f"api-{backend.name}") / "data", pipeline, backend.new_url())
    yield app
    app.close()


@pytest.fixture
def fresh(backend, tmp_path, pipeline):
    """Factory of unseeded apps with their own config, for tests that change global state or limits."""
    made = []

    def make(**config):
        app = make_served(tmp_path / f"data{len(made)}", pipeline, backend.new_url(), seed=False, **config)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


def audit_entries(served, **filters) -> list:
    return served.service.audit.entries(**filters)


# ----- sign-in, sessions, CSRF, tokens ---------------------------------------------------------------
def test_sign_in_session_csrf_and_sign_out(served):
    client = served.client(None)
    assert_error(
        client.post("/api/session", json={"username": "ivan", "password": "wrong-password"}), 401, "unauthenticated"
    )
    response = client.post("/api/session", json={"username": "ivan", "password": password("ivan")})
    assert response.status_code == 200 and response.json()["user"]["role"] == "investigator"
    assert response.json()["user"]["grants"] == [COLLECTION]
    csrf = response.json()["csrf_token"]
    cookie = response.headers["set-cookie"].lower()
    assert "ff_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/me").json()["username"] == "ivan"
    # a state-changing call on a session needs the CSRF token
    assert_error(client.post("/api/tokens", json={"name": "x"}), 403, "csrf_failed")
    assert_error(client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "forged"}), 403, "csrf_failed")
    assert client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert client.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert_error(client.get("/api/me"), 401, "unauthenticated")
    actions = [(e.actor, e.action) for e in audit_entries(served, actor="ivan")]
    assert ("ivan", "login.failed") in actions and ("ivan", "login") in actions and ("ivan", "logout") in actions


def test_tokens_list_revoke_and_bad_tokens(served):
    client, csrf = served.browser("inga")
    headers = {"X-CSRF-Token": csrf}
    token = client.post("/api/tokens", json={"name": "script"}, headers=headers).json()["token"]
    scripted = served.client(None)
    scripted.headers["Authorization"] = f"Bearer {token}"
    assert scripted.get("/api/me").json()["username"] == "inga"
    listed = client.get("/api/tokens").json()
    mine = next(t for t in listed if t["name"] == "script")
    assert "token" not in mine and mine["last_used_at"] is not None
    assert client.delete(f"/api/tokens/{mine['id']}", headers=headers).status_code == 200
    assert_error(scripted.get("/api/me"), 401, "unauthenticated")
    other = served.client(None)
    for header in ("Bearer ff_nonsense", "Basic abc", "Bearer "):
        other.headers["Authorization"] = header
        assert_error(other.get("/api/me"), 401, "unauthenticated")
    # someone else's token id: not found, not revoked
    admin_tokens = served.client("admin").get("/api/tokens").json()
    assert_error(served.client("ivan").delete(f"/api/tokens/{admin_tokens[0]['id']}"), 404, "not_found")


def test_disabled_user_loses_sessions_and_tokens(fresh):
    app = fresh()
    browser, _ = app.browser("inga")
    token_client = app.client("inga")
    assert browser.get("/api/me").status_code == 200 and token_client.get("/api/me").status_code == 200
    admin = app.client("admin")
    assert admin.patch("/api/users/inga", json={"active": False}).json()["active"] is False
    assert_error(browser.get("/api/me"), 401)
    assert_error(token_client.get("/api/me"), 401)
    assert_error(app.client(None).post("/api/session", json={"username": "inga", "password": password("inga")}), 401)
    assert_error(admin.patch("/api/users/admin", json={"active": False}), 409, "conflict", "active")
    assert_error(admin.patch("/api/users/nobody", json={"active": False}), 404, "not_found")
    actions = [e.action for e in app.service.audit.entries(actor="admin")]
    assert "user.disable" in actions


def test_account_and_grant_changes_are_audited(fresh):
    app = fresh()
    admin = app.client("admin")
    created = admin.post("/api/users", json={"username": "newbie", "password": "long-enough-pw", "role": "auditor"})
    assert created.status_code == 201 and created.json()["role"] == "auditor"
    assert_error(
        admin.post("/api/users", json={"username": "newbie", "password": "long-enough-pw", "role": "auditor"}),
        409,
        "conflict",
    )
    assert_error(
        admin.post("/api/users", json={"username": "x", "password": "short", "role": "auditor"}),
        422,
        "invalid",
        "password",
    )
    assert_error(
        admin.post("/api/users", json={"username": "y", "password": "long-enough-pw", "role": "root"}),
        422,
        "invalid",
        "role",
    )
    assert (
        admin.post(
            "/api/collections", json={"name": "c1", "purpose": "p", "legal_basis": "l", "retention_days": 7}
        ).status_code
        == 201
    )
    assert_error(
        admin.post("/api/collections", json={"name": "c1", "purpose": "p", "legal_basis": "l", "retention_days": 7}),
        409,
        "conflict",
        "name",
    )
    assert admin.put("/api/users/ivan/grants/c1").json()["grants"] == ["c1"]
    assert_error(admin.put("/api/users/ivan/grants/nope"), 404, "not_found")
    assert admin.delete("/api/users/ivan/grants/c1").json()["grants"] == []
    actions = [e.action for e in app.service.audit.entries(actor="admin")]
    for action in ("user.create", "collection.create", "grant.add", "grant.remove"):
        assert action in actions, action
    assert app.client("ivan").get("/api/collections").json() == []


# ----- case-bound search -------------------------------------------------------------------------------
def test_case_bound_search_is_recorded_and_audited(served):
    client, csrf = served.browser("ivan")
    record = run_search(client, csrf, person="Colin_Powell", case_id="CASE-REC", top_k=5)
    assert record["username"] == "ivan" and record["case_id"] == "CASE-REC"
    assert record["category"] == "missing person" and record["collections"] == [COLLECTION]
    assert record["probe_sha256"] and record["probe_kept"] is False and record["top_k"] == 5
    candidates = record["candidates"]
    assert candidates and candidates[0]["rank"] == 1 and candidates[0]["band"] in ("strong", "possible")
    assert all(a["score"] >= b["score"] for a, b in zip(candidates, candidates[1:]))
    assert all(c["status"] == "candidate" for c in candidates)
    # the source photo of the top candidate is a Colin Powell photo of the gallery
    result = client.get(f"/api/searches/{record['id']}/candidates/1").json()
    assert "Colin_Powell" in result["source"] and result["available"] and result["provenance"] is not None
    photo = client.get(f"/api/searches/{record['id']}/candidates/1/photo")
    assert photo.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(photo.content)).size == (480, 480)  # 250 px enlarged, box drawn
    thumb = client.get(f"/api/searches/{record['id']}/candidates/1/thumbnail")
    assert Image.open(io.BytesIO(thumb.content)).size == (112, 112)
    probe_thumb = client.get(f"/api/searches/{record['id']}/probe/thumbnail")
    assert Image.open(io.BytesIO(probe_thumb.content)).size == (112, 112)
    # stored in the new tables...
    with served.service.catalog.session() as session:
        row = session.get(CaseSearch, record["id"])
        assert row.purpose == "find the person in the probe photo" and row.probe_photo is None
        assert row.probe_thumbnail[:2] == b"\xff\xd8"
        ranks = list(session.scalars(select(CaseCandidate.rank).where(CaseCandidate.search_id == row.id)))
        assert sorted(ranks) == list(range(1, len(candidates) + 1))
    # ...and in the audit log: who, case, purpose, probe hash, parameters, candidates; and each result view
    entry = audit_entries(served, action="search", case_id="CASE-REC")[-1]
    details = json.loads(entry.details)
    assert entry.actor == "ivan"
    assert details["purpose"] == "find the person in the probe photo" and details["category"] == "missing person"
    assert details["probe_sha256"] == record["probe_sha256"] and details["top_k"] == 5
    assert details["collections"] == [COLLECTION] and details["search_id"] == record["id"]
    assert details["candidates"] == [[c["face_id"], c["score"]] for c in candidates]
    views = audit_entries(served, action="result.view", case_id="CASE-REC")
    assert len(views) == 2 and all(json.loads(v.details)["search_id"] == record["id"] for v in views)
    # listed for the case
    listed = client.get("/api/searches", params={"case_id": "CASE-REC"}).json()
    assert [s["id"] for s in listed] == [record["id"]]


def test_search_needs_case_purpose_and_a_known_category(served):
    client = served.client("ivan")
    probe = client.post("/api/probes", files={"photo": ("p.jpg", probe_bytes(), "image/jpeg")}).json()
    assert len(probe["faces"]) == 1 and probe["width"] == 250
    base = {
        "probe_id": probe["probe_id"],
        "face": 0,
        "case_id": "K-9",
        "purpose": "why not",
        "category": "missing person",
    }
    assert_error(
        client.post("/api/searches", json={k: v for k, v in base.items() if k != "case_id"}), 422, "invalid", "case_id"
    )
    assert_error(client.post("/api/searches", json={**base, "case_id": "   "}), 400, "bad_request", "case_id")
    assert_error(client.post("/api/searches", json={**base, "purpose": "x"}), 400, "bad_request", "purpose")
    assert_error(client.post("/api/searches", json={**base, "category": "curiosity"}), 400, "bad_request", "category")
    assert_error(client.post("/api/searches", json={**base, "face": 3}), 400, "bad_request", "face")
    assert_error(client.post("/api/searches", json={**base, "top_k": 0}), 422, "invalid", "top_k")
    assert_error(client.post("/api/searches", json={**base, "probe_id": "gone"}), 404, "not_found")
    assert_error(
        client.post("/api/searches", json={**base, "collections": ["nope"]}), 400, "bad_request", "collections"
    )
    # a probe belongs to whoever uploaded it
    assert_error(served.client("inga").post("/api/searches", json=base), 404, "not_found")
    assert client.post("/api/searches", json=base).status_code == 201


def test_investigators_search_only_granted_collections(served):
    admin = served.client("admin")
    assert (
        admin.post(
            "/api/collections", json={"name": "secret", "purpose": "p", "legal_basis": "l", "retention_days": 5}
        ).status_code
        == 201
    )
    ivan = served.client("ivan")
    probe = ivan.post("/api/probes", files={"photo": ("p.jpg", probe_bytes(), "image/jpeg")}).json()
    body = {"probe_id": probe["probe_id"], "case_id": "K-G", "purpose": "grant test", "category": "missing person"}
    assert_error(ivan.post("/api/searches", json={**body, "collections": ["secret"]}), 403, "forbidden")
    record = ivan.post("/api/searches", json=body).json()
    assert record["collections"] == [COLLECTION]
    # a search over a collection the reader is not granted cannot be read by them
    admin_probe = admin.post("/api/probes", files={"photo": ("p.jpg", probe_bytes(), "image/jpeg")}).json()
    both = admin.post("/api/searches", json={**body, "probe_id": admin_probe["probe_id"]}).json()
    assert set(both["collections"]) == {COLLECTION, "secret"}
    assert_error(ivan.get(f"/api/searches/{both['id']}"), 403, "forbidden")
    assert both["id"] not in [s["id"] for s in ivan.get("/api/searches").json()]
    assert served.client("aud").get(f"/api/searches/{both['id']}").status_code == 200
    assert_error(served.client("aud").get(f"/api/searches/{both['id']}/candidates/1/photo"), 403, "forbidden")


def test_two_person_rule(served):
    ivan, inga = served.client("ivan"), served.client("inga")
    record = run_search(ivan, person="Hugo_Chavez", case_id="CASE-2P")
    sid = record["id"]
    assert_error(ivan.post(f"/api/searches/{sid}/candidates/1/confirm", json={"note": "sure"}), 409, "conflict")
    proposed = ivan.post(f"/api/searches/{sid}/candidates/1/propose", json={"note": "same person?"}).json()
    assert proposed["status"] == "proposed" and proposed["proposed_by"] == "ivan"
    assert_error(ivan.post(f"/api/searches/{sid}/candidates/1/confirm", json={"note": "yes"}), 403, "forbidden")
    assert_error(
        inga.post(f"/api/searches/{sid}/candidates/1/confirm", json={"note": "  "}), 400, "bad_request", "note"
    )
    confirmed = inga.post(f"/api/searches/{sid}/candidates/1/confirm", json={"note": "compared ears, scar"}).json()
    assert (confirmed["status"], confirmed["confirmed_by"], confirmed["confirmed_note"]) == (
        "confirmed",
        "inga",
        "compared ears, scar",
    )
    assert_error(
        served.client("admin").post(f"/api/searches/{sid}/candidates/1/confirm", json={"note": "again"}),
        409,
        "conflict",
    )
    assert_error(ivan.post(f"/api/searches/{sid}/candidates/99/propose", json={}), 404, "not_found")
    actions = [(e.actor, e.action) for e in audit_entries(served, case_id="CASE-2P")]
    assert ("ivan", "lead.propose") in actions and ("inga", "lead.confirm") in actions
    assert ("ivan", "lead.confirm") not in actions


def test_probe_photo_kept_only_while_retention_allows(fresh, pipeline):
    app = fresh()
    admin = app.client("admin")
    assert (
        admin.post(
            "/api/collections", json={"name": "c", "purpose": "p", "legal_basis": "l", "retention_days": 5}
        ).status_code
        == 201
    )
    first = run_search(admin, person="Tony_Blair", case_id="R-0")
    assert first["probe_kept"] is False
    assert admin.put("/api/settings", json={"probe_retention_days": 3}).json()["probe_retention_days"] == 3
    kept = run_search(admin, person="Tony_Blair", case_id="R-3")
    assert kept["probe_kept"] is True
    with app.service.catalog.session() as session, session.begin():
        assert session.get(CaseSearch, kept["id"]).probe_photo == probe_bytes("Tony_Blair")
        session.execute(
            update(CaseSearch)
            .where(CaseSearch.id == kept["id"])
            .values(probe_keep_until=utcnow() - timedelta(seconds=1))
        )
    assert app.service.cases.purge_expired_probes() == 1
    assert admin.get(f"/api/searches/{kept['id']}").json()["probe_kept"] is False
    assert app.service.audit.entries(action="probe.purge")
    assert_error(admin.put("/api/settings", json={"probe_retention_days": -1}), 422, "invalid", "probe_retention_days")
    assert_error(admin.put("/api/settings", json={"categories": []}), 400, "bad_request", "categories")
    assert admin.put("/api/settings", json={"categories": ["a", "b"]}).json()["categories"] == ["a", "b"]
    assert app.client("admin").get("/api/me").json()["categories"] == ["a", "b"]


# ----- ingest ----------------------------------------------------------------------------------------
def test_ingest_from_import_root_and_upload_with_progress(fresh, tmp_path):
    app = fresh()
    admin = app.client("admin")
    assert (
        admin.post(
            "/api/collections", json={"name": "imp", "purpose": "p", "legal_basis": "l", "retention_days": 9}
        ).status_code
        == 201
    )
    folder = app.import_root / "batch"
    folder.mkdir()
    for n in (1, 2):
        (folder / f"blair{n}.jpg").write_bytes(lfw("Tony_Blair", n).read_bytes())
    job = admin.post("/api/ingests", json={"collection": "imp", "path": "batch"}).json()
    assert job["state"] in ("queued", "running", "done") and job["source"] == str(folder.resolve())
    done = app.service.jobs.wait(job["id"])
    assert done.state == "done" and done.report["ingested"] == 2
    polled = admin.get(f"/api/ingests/{job['id']}").json()
    assert (polled["state"], polled["done"], polled["total"], polled["faces"]) == ("done", 2, 2, 2)
    # an uploaded archive, with hostile member names: unpacked inside the upload folder only
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ok/putin.jpg", lfw("Vladimir_Putin", 1).read_bytes())
        zf.writestr("../../escaped.jpg", lfw("Vladimir_Putin", 2).read_bytes())
        zf.writestr("/abs/olute.jpg", lfw("Vladimir_Putin", 3).read_bytes())
        zf.writestr("notes.txt", "hello")
    job = admin.post(
        "/api/ingests/upload",
        data={"collection": "imp"},
        files={"file": ("../../evil name.zip", buffer.getvalue(), "application/zip")},
    ).json()
    assert job["source"] == "upload:evil_name.zip"
    done = app.service.jobs.wait(job["id"])
    assert done.state == "done" and done.report["ingested"] == 1, done
    uploads = app.data_dir / "uploads"
    assert [p.name for p in uploads.rglob("*.jpg")] == ["putin.jpg"]
    assert not list(app.data_dir.parent.rglob("escaped.jpg")) and not list(uploads.rglob("*.zip"))
    with app.service.catalog.session() as session:
        sources = list(session.scalars(select(ImageRecord.source)))
    uploads_dir = (app.data_dir / "uploads").resolve()
    uploaded = [s for s in sources if Path(s).resolve().is_relative_to(uploads_dir) and Path(s).is_file()]
    assert len(uploaded) == 1 and uploaded[0].endswith("ok/putin.jpg") and len(sources) == 3
    # a tarball works too
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        data = lfw("Colin_Powell", 1).read_bytes()
        info = tarfile.TarInfo("powell.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    job = admin.post(
        "/api/ingests/upload",
        data={"collection": "imp"},
        files={"file": ("p.tar.gz", buffer.getvalue(), "application/gzip")},
    ).json()
    assert app.service.jobs.wait(job["id"]).report["ingested"] == 1
    counts = {c["name"]: c for c in admin.get("/api/collections").json()}["imp"]
    assert (counts["images"], counts["faces"]) == (4, 4)
    ingests = [json.loads(e.details) for e in app.service.audit.entries(action="ingest", actor="admin")]
    assert [d["ingested"] for d in ingests] == [2, 1, 1]
    assert ingests[-1]["path"] == "upload:p.tar.gz"  # the audit log names an upload as its user knows it


def test_ingest_refuses_paths_outside_the_import_roots(served, tmp_path):
    admin = served.client("admin")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(probe_bytes())
    (served.import_root / "link").symlink_to(outside)
    for path in ("../", "../../etc", "/etc", str(outside), "link", "link/x.jpg", "missing"):
        assert_error(
            admin.post("/api/ingests", json={"collection": COLLECTION, "path": path}), 400, "bad_request", "path"
        )
    assert_error(admin.post("/api/ingests", json={"collection": "nope", "path": "one.jpg"}), 404, "not_found")
    assert_error(
        admin.post(
            "/api/ingests/upload",
            data={"collection": COLLECTION},
            files={"file": ("a.exe", b"MZ", "application/octet-stream")},
        ),
        400,
        "bad_request",
        "file",
    )


def test_server_side_imports_are_off_without_an_import_root(fresh):
    app = fresh(import_roots=[])
    admin = app.client("admin")
    admin.post("/api/collections", json={"name": "c", "purpose": "p", "legal_basis": "l", "retention_days": 5})
    assert_error(admin.post("/api/ingests", json={"collection": "c", "path": "/tmp"}), 403, "forbidden", "path")


# ----- audit ---------------------------------------------------------------------------------------------
def test_auditor_filters_and_exports(served):
    run_search(served.client("ivan"), person="George_W_Bush", case_id="CASE-AUD")
    auditor = served.client("aud")
    entries = auditor.get("/api/audit", params={"action": "search", "case_id": "CASE-AUD"}).json()
    assert len(entries) == 1 and entries[0]["actor"] == "ivan" and entries[0]["details"]["probe_sha256"]
    everything = auditor.get("/api/audit", params={"limit": 3}).json()
    assert len(everything) == 3 and everything[0]["id"] > everything[1]["id"]  # newest first
    since = entries[0]["at"]
    assert all(e["at"] >= since for e in auditor.get("/api/audit", params={"since": since}).json())
    csv_export = auditor.get("/api/audit/export", params={"format": "csv", "case_id": "CASE-AUD"})
    assert csv_export.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_export.headers["content-disposition"]
    lines = csv_export.text.strip().splitlines()
    assert lines[0].startswith("id,at,actor,action,case_id") and len(lines) == 2 and "CASE-AUD" in lines[1]
    json_export = auditor.get("/api/audit/export", params={"format": "json", "actor": "ivan"}).json()
    assert json_export and all(e["actor"] == "ivan" for e in json_export)
    assert_error(auditor.get("/api/audit/export", params={"format": "xml"}), 422, "invalid", "format")
    exports = [json.loads(e.details) for e in audit_entries(served, action="audit.export", actor="aud")]
    assert {d["format"] for d in exports} == {"csv", "json"}
    verify = auditor.get("/api/audit/verify").json()
    assert verify["ok"] and verify["problems"] == [] and verify["head"] == auditor.get("/api/audit/head").json()


def test_audit_verify_endpoint_names_a_tampered_entry(fresh):
    from facefinder.storage.catalog import AuditEntry

    app = fresh()
    with app.service.catalog.session() as session, session.begin():
        session.execute(update(AuditEntry).where(AuditEntry.id == 2).values(actor="mallory"))
    verify = app.client("aud").get("/api/audit/verify").json()
    assert verify["ok"] is False and [p["entry_id"] for p in verify["problems"]] == [2]


# ----- limits and hostile input -------------------------------------------------------------------------
def test_login_is_rate_limited(fresh):
    app = fresh(login_rate=(3, 60.0))
    client = app.client(None)
    for _ in range(3):
        assert_error(client.post("/api/session", json={"username": "ivan", "password": "nope-nope"}), 401)
    response = client.post("/api/session", json={"username": "ivan", "password": password("ivan")})
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    page = client.post("/login", data={"username": "ivan", "password": "x", "csrf_token": "x"})
    assert page.status_code in (403, 429)


def test_search_is_rate_limited(fresh):
    app = fresh(search_rate=(2, 60.0))
    admin = app.client("admin")
    admin.post("/api/collections", json={"name": "c", "purpose": "p", "legal_basis": "l", "retention_days": 5})
    for _ in range(2):
        assert admin.post("/api/probes", files={"photo": ("p.jpg", probe_bytes(), "image/jpeg")}).status_code == 201
    assert_error(
        admin.post("/api/probes", files={"photo": ("p.jpg", probe_bytes(), "image/jpeg")}), 429, "rate_limited"
    )
    # per user: another user is not held up
    app.client("admin").post("/api/users/ivan/grants/c")
    assert app.client("admin").put("/api/users/ivan/grants/c").status_code == 200
    assert (
        app.client("ivan").post("/api/probes", files={"photo": ("p.jpg", probe_bytes(), "image/jpeg")}).status_code
        == 201
    )


def test_upload_size_and_pixel_caps(fresh):
    app = fresh(max_probe_bytes=20_000, max_upload_bytes=200_000, max_pixels=250 * 250 - 1)
    admin = app.client("admin")
    admin.post("/api/collections", json={"name": "c", "purpose": "p", "legal_basis": "l", "retention_days": 5})
    big = io.BytesIO()
    Image.new("RGB", (120, 120), (200, 10, 10)).save(big, format="BMP")  # ~43 kB, under the pixel cap
    assert_error(
        admin.post("/api/probes", files={"photo": ("big.bmp", big.getvalue(), "image/bmp")}), 413, "too_large", "photo"
    )
    assert_error(
        admin.post("/api/probes", files={"photo": ("p.jpg", probe_bytes(), "image/jpeg")}), 413, "too_large", "photo"
    )  # 250 x 250 = one pixel over the cap
    assert_error(
        admin.post(
            "/api/ingests/upload",
            data={"collection": "c"},
            files={"file": ("a.zip", b"\0" * 300_000, "application/zip")},
        ),
        413,
        "too_large",
    )
    assert_error(
        admin.post("/api/probes", files={"photo": ("x.jpg", b"not an image", "image/jpeg")}), 400, "bad_image", "photo"
    )
    assert_error(admin.post("/api/probes", files={"photo": ("x.jpg", b"", "image/jpeg")}), 400, "bad_image")


def test_large_probe_and_candidate_photo_in_their_own_pixels(fresh, tmp_path):
    """A probe over the work size is analysed reduced (as at ingest) but answers in its own pixels, and a
    large candidate photo is decoded only as large as it is shown, its box drawn where the face is."""
    app = fresh()
    big = tmp_path / "gallery" / "blair-large.jpg"
    big.parent.mkdir()
    Image.open(lfw("Tony_Blair", 1)).resize((5000, 5000), Image.Resampling.BICUBIC).save(big, quality=90)
    assert app.finder.ingest(big.parent, "c", **POLICY).ingested == 1
    admin = app.client("admin")
    small = admin.post("/api/probes", files={"photo": ("small.jpg", probe_bytes(), "image/jpeg")}).json()
    large = admin.post("/api/probes", files={"photo": ("large.jpg", big.read_bytes(), "image/jpeg")}).json()
    assert (large["width"], large["height"]) == (5000, 5000)
    [face_small], [face_large] = small["faces"], large["faces"]
    assert box_iou(face_large["box"], [v * 20 for v in face_small["box"]]) > 0.85, (face_large, face_small)

    record = run_search(admin)
    details = admin.get(f"/api/searches/{record['id']}/candidates/1").json()
    assert (details["width"], details["height"]) == (5000, 5000)
    shown = np.asarray(Image.open(io.BytesIO(admin.get(f"/api/searches/{record['id']}/candidates/1/photo").content)))
    assert shown.shape == (1600, 1600, 3)
    x1, y1, x2, y2 = (round(v * 1600 / 5000) for v in details["box"])
    edges = np.concatenate([shown[y1 + 2, x1:x2], shown[y2 - 2, x1:x2], shown[y1:y2, x1 + 2], shown[y1:y2, x2 - 2]])
    assert np.abs(np.median(edges, axis=0) - (234, 88, 12)).max() < 30, np.median(edges, axis=0)  # the outline


def test_error_shape_for_unknown_routes_methods_and_bad_json(served):
    client = served.client("admin")
    assert_error(client.get("/api/nope"), 404, "not_found")
    assert_error(client.put("/api/health"), 405, "method_not_allowed")
    assert_error(
        client.post("/api/users", content=b"{not json", headers={"content-type": "application/json"}), 422, "invalid"
    )
    assert_error(client.get("/api/searches/abc"), 422, "invalid", "search_id")
    assert_error(client.get("/api/searches/999999"), 404, "not_found")
    assert_error(client.get("/api/searches/99999999999"), 422, "invalid", "search_id")  # over PostgreSQL's int
    # PostgreSQL refuses NUL characters in text: a clean 400 there, never a 500
    response = client.get("/api/searches", params={"case_id": "a\x00b"})
    assert response.status_code == 200 or assert_error(response, 400, "bad_request")
    response = served.client(None).post("/api/session", json={"username": "x\x00", "password": "y"})
    assert response.status_code == 401 or assert_error(response, 400, "bad_request")
    for path in (
        "/api/searches/1/candidates/1/photo/../../../../etc/passwd",
        "/static/../api.py",
        "/static/%2e%2e/api.py",
        "/api/images/..%2f..%2fetc%2fpasswd",
    ):
        response = client.get(path)
        assert response.status_code in (404, 405, 422), (path, response.status_code)
        assert b"root:" not in response.content and b"def create_app" not in response.content


def test_security_headers(served):
    response = served.client(None).get("/login")
    assert response.status_code == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert served.client("admin").get("/api/me").headers["cache-control"] == "no-store"


def test_web_login_form_and_pages_render(served):
    client = served.client(None)
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post("/login", data={"username": "ivan", "password": "wrong", "csrf_token": token})
    assert response.status_code == 401 and "Wrong username or password" in response.text
    response = client.post("/login", data={"username": "ivan", "password": password("ivan"), "csrf_token": "forged"})
    assert response.status_code == 403
    response = client.post(
        "/login",
        data={"username": "ivan", "password": password("ivan"), "csrf_token": token, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/search"
    search_page = client.get("/search")
    assert "Case-bound search" in search_page.text and "missing person" in search_page.text
    assert client.get("/collections").text.count(COLLECTION) >= 1
