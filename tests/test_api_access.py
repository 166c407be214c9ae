"""Every role against every endpoint: allowed calls succeed, forbidden ones are 403, anonymous ones 401,
and nothing is ever a 500. Runs on SQLite and on PostgreSQL.

Roles: admin; ivan (investigator granted the collection); olga (investigator without grants);
aud (auditor); None (no credentials).
"""

from __future__ import annotations

import itertools

import pytest
from service_helpers import COLLECTION, assert_error, backend, make_served, probe_bytes, run_search  # noqa: F401

ROLES = [None, "aud", "olga", "ivan", "admin"]  # in this order: the state-changing calls rely on it
ALL = {"admin", "ivan", "olga", "aud"}
_names = itertools.count()


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    data = tmp_path_factory.mktemp(f"access-{backend.name}") / "data"
    # its import root is bound to the collection: investigators granted it may ingest from it (import_roots.py)
    bound = {COLLECTION: [data.parent / f"{data.name}-imports"]}
    app = make_served(data, pipeline, backend.new_url(), collection_import_roots=bound)
    inga = app.client("inga")
    record = run_search(app.client("ivan"), person="Tony_Blair", case_id="ACCESS-1")
    assert len(record["candidates"]) >= 2, record
    app.search_id = record["id"]
    assert inga.post(f"/api/searches/{app.search_id}/candidates/1/propose", json={"note": "n"}).status_code == 200
    response = app.client("ivan").post("/api/probes", files={"photo": ("p.jpg", probe_bytes(), "image/jpeg")})
    app.probe_id = response.json()["probe_id"]
    response = app.client("admin").post("/api/ingests", json={"collection": COLLECTION, "path": "one.jpg"})
    assert response.status_code == 202, response.text
    app.admin_job = response.json()["id"]
    app.service.jobs.wait(app.admin_job)
    yield app
    app.close()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


def upload_photo():
    return {"files": {"photo": ("probe.jpg", probe_bytes(), "image/jpeg")}}


def upload_file():
    return {"data": {"collection": COLLECTION}, "files": {"file": ("one.jpg", probe_bytes(), "image/jpeg")}}


def only(roles: set[str], ok: int, others: int = 403) -> dict:
    """Expected status per role: ``ok`` for ``roles``, ``others`` for the other signed-in roles."""
    return {role: ok if role in roles else others for role in ALL}


# (method, path, request kwargs (a dict or a callable giving one), expected status by role); anonymous: 401.
def endpoints(s) -> list[tuple[str, str, object, dict]]:
    sid, pid, job = s.search_id, s.probe_id, s.admin_job
    return [
        ("GET", "/api/me", {}, only(ALL, 200)),
        ("DELETE", "/api/session", {}, only(ALL, 200)),
        # a wrong current password changes nothing (tests/test_login_security.py changes one)
        (
            "POST",
            "/api/me/password",
            {"json": {"current_password": "not-my-password", "new_password": "a-brand-new-password"}},
            only(ALL, 400),
        ),
        ("GET", "/api/tokens", {}, only(ALL, 200)),
        ("POST", "/api/tokens", {"json": {"name": "matrix"}}, only(ALL, 201)),
        ("DELETE", "/api/tokens/999999", {}, only(ALL, 404)),
        ("GET", "/api/users", {}, only({"admin"}, 200)),
        (
            "POST",
            "/api/users",
            lambda: {"json": {"username": unique("new"), "password": "a-long-password", "role": "investigator"}},
            only({"admin"}, 201),
        ),
        ("PATCH", "/api/users/inga", {"json": {"active": True}}, only({"admin"}, 200)),
        ("POST", "/api/users/nobody/password", {}, only({"admin"}, 404)),
        ("PUT", f"/api/users/inga/grants/{COLLECTION}", {}, only({"admin"}, 200)),
        ("DELETE", f"/api/users/olga/grants/{COLLECTION}", {}, only({"admin"}, 200)),
        ("GET", "/api/settings", {}, only({"admin"}, 200)),
        ("PUT", "/api/settings", {"json": {}}, only({"admin"}, 200)),
        ("GET", "/api/collections", {}, only(ALL, 200)),
        (
            "POST",
            "/api/collections",
            lambda: {"json": {"name": unique("c"), "purpose": "p", "legal_basis": "l", "retention_days": 3}},
            only({"admin"}, 201),
        ),
        ("DELETE", "/api/collections/no-such-collection", {}, only({"admin"}, 404)),
        ("GET", f"/api/collections/{COLLECTION}/failures", {}, only({"admin", "ivan"}, 200)),
        ("GET", f"/api/collections/{COLLECTION}/images", {}, only({"admin"}, 200)),
        ("GET", "/api/faces/999999/thumbnail", {}, only({"admin"}, 404)),
        ("DELETE", "/api/images/999999", {}, only({"admin"}, 404)),
        ("DELETE", "/api/faces/999999", {}, only({"admin"}, 404)),
        ("GET", "/api/ingests", {}, only({"admin", "ivan", "olga"}, 200)),
        ("POST", "/api/ingests", {"json": {"collection": COLLECTION, "path": "one.jpg"}}, only({"admin", "ivan"}, 202)),
        ("POST", "/api/ingests/upload", upload_file, only({"admin", "ivan"}, 202)),
        ("GET", f"/api/ingests/{job}", {}, {"admin": 200, "ivan": 404, "olga": 404, "aud": 403}),
        ("POST", "/api/probes", upload_photo, only({"admin", "ivan"}, 201)),
        ("GET", f"/api/probes/{pid}/faces/0/thumbnail", {}, {"admin": 404, "ivan": 200, "olga": 404, "aud": 403}),
        ("GET", f"/api/probes/{pid}", {}, {"admin": 404, "ivan": 200, "olga": 404, "aud": 403}),
        (
            "POST",
            "/api/searches",
            {"json": {"probe_id": pid, "case_id": "ACCESS-2", "purpose": "matrix test", "category": "missing person"}},
            {"admin": 404, "ivan": 201, "olga": 403, "aud": 403},
        ),
        ("GET", "/api/searches", {}, only(ALL, 200)),
        ("GET", f"/api/searches/{sid}", {}, only({"admin", "ivan", "aud"}, 200)),
        ("GET", f"/api/searches/{sid}/probe/thumbnail", {}, only({"admin", "ivan"}, 200)),
        # not a fused search: no same-person face (tests/test_same_person_api.py shows one)
        ("GET", f"/api/searches/{sid}/same-person/1/thumbnail", {}, only({"admin", "ivan"}, 404)),
        ("GET", f"/api/searches/{sid}/candidates/1", {}, only({"admin", "ivan"}, 200)),
        ("GET", f"/api/searches/{sid}/candidates/1/thumbnail", {}, only({"admin", "ivan"}, 200)),
        ("GET", f"/api/searches/{sid}/candidates/1/photo", {}, only({"admin", "ivan"}, 200)),
        ("GET", f"/api/searches/{sid}/candidates/1/clip", {}, only({"admin", "ivan"}, 404)),  # a photo: no clip
        # aud and olga first (403), then ivan proposes (200) and admin finds it proposed already (409)
        (
            "POST",
            f"/api/searches/{sid}/candidates/2/propose",
            {"json": {"note": "worth a look"}},
            {"admin": 409, "ivan": 200, "olga": 403, "aud": 403},
        ),
        # inga proposed candidate 1: ivan confirms (200), then admin finds it confirmed already (409)
        (
            "POST",
            f"/api/searches/{sid}/candidates/1/confirm",
            {"json": {"note": "checked"}},
            {"admin": 409, "ivan": 200, "olga": 403, "aud": 403},
        ),
        # ivan proposed candidate 2: he withdraws it as not a match (200), then admin finds it closed (409)
        (
            "POST",
            f"/api/searches/{sid}/candidates/2/not-a-match",
            {"json": {"note": "ears differ"}},
            {"admin": 409, "ivan": 200, "olga": 403, "aud": 403},
        ),
        ("GET", "/api/audit", {}, only({"aud"}, 200)),
        ("GET", "/api/audit/export", {"params": {"format": "json"}}, only({"aud"}, 200)),
        ("GET", "/api/audit/verify", {}, only({"aud"}, 200)),
        ("GET", "/api/audit/head", {}, only({"aud"}, 200)),
    ]


def test_every_role_against_every_endpoint(served):
    clients = {role: served.client(role) for role in ROLES}
    failures = []
    for method, path, kwargs, expected in endpoints(served):
        for role in ROLES:
            call = kwargs() if callable(kwargs) else kwargs
            response = clients[role].request(method, path, **call)
            want = 401 if role is None else expected[role]
            if response.status_code != want:
                failures.append(
                    f"{role or 'anonymous'} {method} {path}: {response.status_code} (wanted {want}) "
                    f"{response.text[:200]}"
                )
            elif want >= 400:
                assert_error(response, want, {401: "unauthenticated", 403: "forbidden"}.get(want))
    assert not failures, "\n".join(failures)


def test_the_matrix_covers_every_api_route(served):
    """A new endpoint must be added to the matrix above (the health check and sign-in are public; the
    privacy and people routers have their own tests)."""
    import re

    routes = {(m.upper(), path) for path, ops in served.app.openapi()["paths"].items() for m in ops}
    patterns = {route: re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(route[1])) + "$") for route in routes}
    covered = set()
    for method, path, _, _ in endpoints(served):
        matching = [r for r, pattern in patterns.items() if r[0] == method and pattern.match(path)]
        assert matching, f"{method} {path} matches no documented route"
        covered.update(matching)
    public = {("GET", "/api/health"), ("POST", "/api/session")}
    privacy = {(m, p) for m, p in routes if p.startswith("/api/privacy/")}  # tests/test_api_privacy.py
    people = {(m, p) for m, p in routes if "/people" in p}  # tests/test_people.py: every role, every endpoint
    missing = routes - covered - public - privacy - people
    assert not missing, f"add these to the access matrix: {sorted(missing)}"


def test_pages_need_a_session_and_the_right_role(served):
    """Anonymous visitors are sent to the sign-in page; a role's forbidden page is a 403 page."""
    anonymous = served.client(None)
    pages = [
        "/collections",
        "/search",
        "/searches",
        f"/searches/{served.search_id}",
        f"/searches/{served.search_id}/candidates/1",
        "/audit",
        "/accounts",
        "/account",
    ]
    for page in pages:
        response = anonymous.get(page, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), page
    allowed = {
        "admin": {"/collections", "/search", "/searches", "/searches/", "/candidates/", "/accounts", "/account"},
        "ivan": {"/collections", "/search", "/searches", "/searches/", "/candidates/", "/account"},
        "olga": {"/collections", "/search", "/searches", "/account"},
        "aud": {"/collections", "/searches", "/searches/", "/audit", "/account"},
    }
    for user, ok in allowed.items():
        browser, _ = served.browser(user)
        for page in pages:
            kind = "/candidates/" if "/candidates/" in page else "/searches/" if page.startswith("/searches/") else page
            response = browser.get(page, follow_redirects=False)
            want = 200 if kind in ok else 403
            assert response.status_code == want, (user, page, response.status_code)
            assert "text/html" in response.headers["content-type"]
