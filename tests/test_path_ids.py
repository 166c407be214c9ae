"""Ids in paths are checked before the database sees them: a number no catalog id can be (past 32 bits,
or past 64, which SQLite cannot even take) is a 422 ``invalid`` on the API and a 404 on the pages,
never a 500. The opt-out endpoints by name, then every route of the app with an integer path parameter,
found by walking the app's routes. On SQLite and on PostgreSQL, through the real app."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from service_helpers import assert_error, backend, make_served, probe_bytes, run_search  # noqa: F401

HUGE = (2**31, 10**20)
LARGEST = 2_147_483_647  # the largest catalog id: in range, and names nothing here
PHOTO = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    app = make_served(tmp_path_factory.mktemp(f"ids-{backend.name}") / "data", pipeline, backend.new_url())
    app.search_id = run_search(app.client("ivan"), case_id="IDS-1")["id"]
    yield app
    app.close()


def optout_calls(optout_id: int) -> list[tuple[str, str, dict]]:
    base = f"/api/privacy/optouts/{optout_id}"
    return [("GET", f"{base}/matches", {}), ("POST", f"{base}/erase", {"json": {}}), ("DELETE", base, {})]


@pytest.mark.parametrize("huge", HUGE)
def test_optout_ids_out_of_range_are_invalid(served, huge):
    admin = served.client("admin")
    for method, path, extra in optout_calls(huge):
        assert_error(admin.request(method, path, **extra), 422, "invalid", "optout_id")


def test_optout_ids_in_range_that_name_nothing_are_not_found(served):
    admin = served.client("admin")
    for method, path, extra in optout_calls(LARGEST):
        assert_error(admin.request(method, path, **extra), 404, "not_found")


def test_huge_face_ids_in_a_body_or_a_query_are_no_server_error(served):
    admin = served.client("admin")
    added = admin.post("/api/privacy/optouts", content=probe_bytes("Colin_Powell", 1), headers=PHOTO)
    assert added.status_code == 201, added.text
    for face_id in HUGE:
        response = admin.post(f"/api/privacy/optouts/{added.json()['id']}/erase", json={"face_ids": [face_id]})
        assert response.status_code in (400, 404, 422), response.text
        assert_error(response, response.status_code)
        response = admin.post(
            "/api/privacy/persons/erase", params={"face_id": face_id}, content=probe_bytes(), headers=PHOTO
        )
        assert response.status_code in (400, 404, 422), response.text
        assert_error(response, response.status_code)
    assert admin.delete(f"/api/privacy/optouts/{added.json()['id']}").status_code == 200


# ----- every route with an integer path parameter ------------------------------------------------------
def walk(routes, prefix: str = ""):
    """(path, route) for every API route and page of the app, through included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI keeps included routers whole
        if included is not None:
            yield from walk(included.routes, prefix + (route.include_context.prefix or ""))
        elif isinstance(route, APIRoute):
            yield prefix + route.path, route


def int_routes(app) -> list[tuple[str, str, list[str]]]:
    """(method, path template, its int parameters) for every route taking an integer in its path."""
    found = []
    for path, route in walk(app.routes):
        ints = [p.name for p in route.dependant.path_params if p.field_info.annotation is int]
        for method in sorted(route.methods or ()):
            if ints and method != "HEAD":
                found.append((method, path, ints))
    return found


def variants(template: str, ints: list[str], huge: int, search_id: int) -> list[str]:
    """The path with every int parameter huge; for a route under a search, also a real search and the
    other ids huge (a rank, reached only past a search that exists). Str parameters (a probe id): "x"."""

    def fill(values: dict[str, int]) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), "x")), template)

    paths = [fill({name: huge for name in ints})]
    if "search_id" in ints and len(ints) > 1:
        paths.append(fill({name: search_id if name == "search_id" else huge for name in ints}))
    return paths


def test_the_walk_finds_the_routes_with_integer_ids(served):
    paths = {path for _, path, _ in int_routes(served.app)}
    assert {
        "/api/privacy/optouts/{optout_id}/matches",
        "/api/searches/{search_id}/candidates/{rank}",
        "/api/images/{image_id}",
        "/searches/{search_id}",
    } <= paths
    assert len(paths) >= 15


@pytest.mark.parametrize("huge", HUGE)
def test_no_route_answers_a_huge_id_with_a_server_error(served, huge):
    api = served.client("admin")
    browser, csrf = served.browser("admin")
    failures = []
    for method, template, ints in int_routes(served.app):
        page = not template.startswith("/api/")
        # every int parameter huge; then (routes with two) a real search and a huge rank
        for path in variants(template, ints, huge, served.search_id):
            client = browser if page else api
            extra = {"json": {"note": "checked", "face_ids": None}} if method in ("POST", "PUT", "PATCH") else {}
            response = client.request(method, path, headers={"X-CSRF-Token": csrf} if page else {}, **extra)
            if response.status_code not in (404, 422):
                failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            elif not page:
                assert_error(response, response.status_code)
    assert failures == []
