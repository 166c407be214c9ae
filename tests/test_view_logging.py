"""Every view of a face is in the audit log, once: the thumbnails of a search (its probe face and its
candidates) write one ``thumbnail.view`` per user and search in the view window, and opening a result
writes one ``result.view`` per user, search, rank and view (``details``, ``photo``), however often the
page is reloaded or its parts fetched, through the API and the web pages alike. On SQLite and
PostgreSQL, through the real app."""

from __future__ import annotations

import json
import time

import pytest
from service_helpers import backend, make_served, run_search  # noqa: F401

from facefinder.services.audit import OncePer


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    app = make_served(tmp_path_factory.mktemp(f"views-{backend.name}") / "data", pipeline, backend.new_url())
    app.search_id = run_search(app.client("ivan"), case_id="VIEWS-1", top_k=5)["id"]
    yield app
    app.close()


def views(served, action: str, actor: str) -> list[dict]:
    entries = served.service.audit.entries(action=action, actor=actor, case_id="VIEWS-1")
    return [json.loads(e.details) for e in entries]


def open_results_page(client, search_id: int, ranks: int) -> None:
    """What the results page fetches: the probe face and every candidate's face."""
    assert client.get(f"/api/searches/{search_id}/probe/thumbnail").status_code == 200
    for rank in range(1, ranks + 1):
        assert client.get(f"/api/searches/{search_id}/candidates/{rank}/thumbnail").status_code == 200


def test_thumbnails_are_logged_once_per_user_and_search(served):
    ivan = served.client("ivan")
    search_id = served.search_id
    ranks = len(ivan.get(f"/api/searches/{search_id}").json()["candidates"])
    assert ranks >= 2
    open_results_page(ivan, search_id, ranks)
    open_results_page(ivan, search_id, ranks)  # a reload
    assert views(served, "thumbnail.view", "ivan") == [{"search_id": search_id, "face": "probe"}]
    # a colleague's view is their own entry; this one started with a candidate's face
    inga = served.client("inga")
    assert inga.get(f"/api/searches/{search_id}/candidates/2/thumbnail").status_code == 200
    [entry] = views(served, "thumbnail.view", "inga")
    assert entry["search_id"] == search_id and entry["face"] == 2 and isinstance(entry["face_id"], int)
    # the web results page shows the same thumbnails: nothing new within the window
    browser, _ = served.browser("inga")
    assert browser.get(f"/searches/{search_id}").status_code == 200
    open_results_page(browser, search_id, ranks)
    assert len(views(served, "thumbnail.view", "inga")) == 1
    # an auditor sees no faces, and seeing none is not a view
    assert served.client("aud").get(f"/api/searches/{search_id}/candidates/1/thumbnail").status_code == 403
    assert views(served, "thumbnail.view", "aud") == []


def test_opening_a_result_is_one_view_of_its_details_and_one_of_its_photo(served):
    admin = served.client("admin")  # admins may open every result
    search_id = served.search_id
    for _ in range(3):  # opened, reloaded, opened again
        assert admin.get(f"/api/searches/{search_id}/candidates/1").status_code == 200
        assert admin.get(f"/api/searches/{search_id}/candidates/1/photo").status_code == 200
    logged = views(served, "result.view", "admin")
    assert sorted(v["view"] for v in logged) == ["details", "photo"]
    assert all(v["search_id"] == search_id and v["rank"] == 1 for v in logged)
    # another rank is another result
    assert admin.get(f"/api/searches/{search_id}/candidates/2").status_code == 200
    assert [v["rank"] for v in views(served, "result.view", "admin")] == [1, 1, 2]


def test_the_web_result_page_and_the_api_share_one_view(served):
    search_id = served.search_id
    browser, _ = served.browser("ivan")
    page = browser.get(f"/searches/{search_id}/candidates/1")
    assert page.status_code == 200 and "source photo" in page.text
    # what the page then loads
    assert browser.get(f"/api/searches/{search_id}/candidates/1/photo").status_code == 200
    assert browser.get(f"/api/searches/{search_id}/candidates/1/thumbnail").status_code == 200
    api = served.client("ivan")
    assert api.get(f"/api/searches/{search_id}/candidates/1").status_code == 200
    logged = [v for v in views(served, "result.view", "ivan") if v["rank"] == 1]
    assert sorted(v["view"] for v in logged) == ["details", "photo"]


def test_once_per_window_then_again():
    once = OncePer(window=0.2)
    assert once.claim(("ivan", 1)) and not once.claim(("ivan", 1)) and once.claim(("inga", 1))
    time.sleep(0.3)
    assert once.claim(("ivan", 1))
    once.release(("ivan", 1))  # its entry could not be written: the next view writes it
    assert once.claim(("ivan", 1))


def test_the_memory_is_bounded_and_forgets_the_oldest():
    once = OncePer(window=600, capacity=3)
    for key in range(4):
        assert once.claim((key,))
    assert once.claim((0,))  # forgotten: logged again, never lost
    assert not once.claim((3,))
