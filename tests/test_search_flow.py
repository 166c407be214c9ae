"""The investigator's and the auditor's flow through the service (issue 11's UI findings), on the real
app with the real models, on SQLite and on PostgreSQL: an empty collection choice is an error naming
the field; several faces of one group photo searched at once (one record each, linked to one another)
and the probe still held for another pick; near misses on request, marked and never leads; a face
withheld by an opt-out under review said to be withheld (not erased), never offered as a lead, and a
no-match that does not claim absence; "not a match" with a required note, audited and shown; the
audit filters (an action's start, dates checked, a search's entries) and readable details linked both
ways with the search records, lead notes included, for the auditor."""

from __future__ import annotations

import json

import pytest
from helpers import GROUP, lfw
from service_helpers import (  # noqa: F401
    COLLECTION,
    assert_error,
    backend,
    make_served,
    probe_bytes,
    run_search,
    upload_probe,
)
from typer.testing import CliRunner

from facefinder.interfaces.cli import app as cli_app

JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    app = make_served(tmp_path_factory.mktemp(f"flow-{backend.name}") / "data", pipeline, backend.new_url())
    yield app
    app.close()


def terms(probe_id: str, case_id: str, **more) -> dict:
    return {"probe_id": probe_id, "case_id": case_id, "purpose": "flow checks", "category": "missing person", **more}


def entries(served, **filters) -> list[dict]:
    return [json.loads(e.details) | {"actor": e.actor} for e in served.service.audit.entries(**filters)]


# ----- collections: none ticked is an error, none named is every granted one -------------------------------
def test_an_empty_collection_choice_is_an_error_naming_the_field(served):
    ivan = served.client("ivan")
    probe = upload_probe(ivan, probe_bytes("Tony_Blair"))
    error = assert_error(
        ivan.post("/api/searches", json=terms(probe["probe_id"], "COLL-0", collections=[])),
        400,
        "bad_request",
        "collections",
    )
    assert "at least one collection" in error["message"]
    assert entries(served, action="search", case_id="COLL-0") == []  # nothing ran, nothing recorded
    record = ivan.post("/api/searches", json=terms(probe["probe_id"], "COLL-0")).json()
    assert record["collections"] == [COLLECTION]  # omitted: every granted collection, as before


# ----- group photos: several faces in one request, the probe kept for another pick -------------------------
def test_several_faces_of_a_group_photo_in_one_request(served):
    ivan, inga = served.client("ivan"), served.client("inga")
    probe = upload_probe(ivan, (GROUP / "sample1.jpg").read_bytes())
    assert len(probe["faces"]) == 3
    again = ivan.get(f"/api/probes/{probe['probe_id']}")
    assert again.status_code == 200 and again.json() == probe  # held: the page can come back to it
    assert_error(inga.get(f"/api/probes/{probe['probe_id']}"), 404, "not_found")  # the uploader's only
    body = terms(probe["probe_id"], "GROUP-1")
    assert_error(ivan.post("/api/searches", json={**body, "faces": [0, 7]}), 400, "bad_request", "faces")
    assert_error(ivan.post("/api/searches", json={**body, "faces": []}), 400, "bad_request", "faces")
    assert entries(served, action="search", case_id="GROUP-1") == []  # a bad face: no face was searched
    first = ivan.post("/api/searches", json={**body, "faces": [2, 0, 2]}).json()
    assert first["probe_face"] == 2
    siblings = first["probe_searches"]
    assert [s["face"] for s in siblings] == [0, 2] and first["id"] in [s["search_id"] for s in siblings]
    other = next(s["search_id"] for s in siblings if s["face"] == 0)
    second = ivan.get(f"/api/searches/{other}").json()
    assert second["probe_face"] == 0 and second["probe_searches"] == siblings
    assert second["probe_sha256"] == first["probe_sha256"] and second["case_id"] == "GROUP-1"
    logged = entries(served, action="search", case_id="GROUP-1")
    assert sorted((e["search_id"], e["face"]) for e in logged) == sorted((s["search_id"], s["face"]) for s in siblings)
    # the probe is still held after the search: another face, later, joins the same list
    third = ivan.post("/api/searches", json={**body, "face": 1}).json()
    assert [s["face"] for s in third["probe_searches"]] == [0, 1, 2]
    # the single-face shape is unchanged, and the record of another case does not list these
    lone = ivan.post("/api/searches", json={**terms(probe["probe_id"], "GROUP-2"), "face": 1}).json()
    assert lone["probe_searches"] == [{"search_id": lone["id"], "face": 1}]


# ----- near misses: on request, marked, never leads ---------------------------------------------------------
def test_near_misses_are_shown_on_request_and_never_leads(served):
    ivan = served.client("ivan")
    # a threshold above every same-person score: no lead, but near misses down to the weak band
    plain = run_search(ivan, person="Vladimir_Putin", case_id="NEAR-0", threshold=0.95)
    assert plain["candidates"] == []
    record = run_search(ivan, person="Vladimir_Putin", case_id="NEAR-1", threshold=0.95, near_misses=True)
    near = record["candidates"]
    assert near and all(c["status"] == "near_miss" and c["score"] < record["threshold"] for c in near)
    assert [c["rank"] for c in near] == list(range(1, len(near) + 1))
    assert_error(ivan.post(f"/api/searches/{record['id']}/candidates/1/propose", json={}), 409, "conflict")
    message = ivan.post(f"/api/searches/{record['id']}/candidates/1/propose", json={}).json()["error"]["message"]
    assert "near miss" in message and "below the threshold" in message
    assert_error(
        ivan.post(f"/api/searches/{record['id']}/candidates/1/not-a-match", json={"note": "x"}), 409, "conflict"
    )
    [logged] = entries(served, action="search", case_id="NEAR-1")
    assert logged["near_misses"] == len(near) and logged["candidates"] == [[c["face_id"], c["score"]] for c in near]
    # at the default threshold, the leads come first and the near misses after them
    mixed = run_search(ivan, person="Vladimir_Putin", case_id="NEAR-2", near_misses=True)
    statuses = [c["status"] for c in mixed["candidates"]]
    assert statuses[0] == "candidate" and statuses == sorted(statuses)  # candidate... before near_miss...
    pages = served.browser("ivan")[0]
    page = pages.get(f"/searches/{record['id']}").text
    assert 'id="near-misses"' in page and "below the threshold" in page and 'id="no-match"' in page
    candidate_page = pages.get(f"/searches/{record['id']}/candidates/1").text
    assert "Near miss #1" in candidate_page and 'id="propose-form"' not in candidate_page


# ----- withheld: an opt-out under review is not an erasure --------------------------------------------------
def test_a_face_withheld_by_an_opt_out_is_said_so_and_never_a_lead(served):
    ivan, admin = served.client("ivan"), served.client("admin")
    before = run_search(ivan, person="Hugo_Chavez", case_id="HELD-1")
    assert before["candidates"] and not any(c["withheld"] for c in before["candidates"])
    added = admin.post("/api/privacy/optouts?reference=HELD", content=lfw("Hugo_Chavez", 1).read_bytes(), headers=JPEG)
    assert added.status_code == 201, added.text
    try:
        record = ivan.get(f"/api/searches/{before['id']}").json()
        top = record["candidates"][0]
        assert top["withheld"] is True and top["erased_at"] is None and record["probe_withheld"] is True
        refused = assert_error(
            ivan.post(f"/api/searches/{before['id']}/candidates/1/propose", json={"note": "n"}), 409, "conflict"
        )
        assert "withheld (opt-out under review)" in refused["message"]
        pages = served.browser("ivan")[0]
        page = pages.get(f"/searches/{before['id']}/candidates/1").text
        assert "withheld (opt-out under review)" in page and "erased" not in page.split('id="unavailable"')[1][:200]
        assert 'id="propose-form"' not in page
        results = pages.get(f"/searches/{before['id']}").text
        assert "withheld (opt-out under review)" in results
        # a new search of this person: nothing, worded so that it does not claim absence
        after = run_search(ivan, person="Hugo_Chavez", case_id="HELD-2")
        assert after["candidates"] == [] and after["probe_withheld"] is True
        page = pages.get(f"/searches/{after['id']}").text
        assert "This is not evidence that the person is absent from the collections searched." in page
        assert "no match in the searched collections" not in page
    finally:
        assert admin.delete(f"/api/privacy/optouts/{added.json()['id']}").status_code == 200
    record = ivan.get(f"/api/searches/{before['id']}").json()
    assert record["candidates"][0]["withheld"] is False and record["probe_withheld"] is False


# ----- not a match: a required note, audited, shown -----------------------------------------------------------
def test_not_a_match_needs_a_note_is_audited_and_shown(served):
    ivan, inga = served.client("ivan"), served.client("inga")
    record = run_search(ivan, person="George_W_Bush", case_id="NAM-1")
    assert len(record["candidates"]) >= 2, record
    sid = record["id"]
    base = f"/api/searches/{sid}/candidates"
    assert_error(inga.post(f"{base}/1/not-a-match", json={"note": "  "}), 400, "bad_request", "note")
    closed = inga.post(f"{base}/1/not-a-match", json={"note": "different ears"}).json()
    assert (closed["status"], closed["not_a_match_by"], closed["not_a_match_note"]) == (
        "not_a_match",
        "inga",
        "different ears",
    )
    assert closed["not_a_match_at"]
    assert_error(ivan.post(f"{base}/1/propose", json={"note": "n"}), 409, "conflict")
    assert_error(ivan.post(f"{base}/1/not-a-match", json={"note": "again"}), 409, "conflict")
    # the proposer withdraws their own proposal; the two-person rule for confirming is unchanged
    assert ivan.post(f"{base}/2/propose", json={"note": "maybe"}).status_code == 200
    assert_error(ivan.post(f"{base}/2/confirm", json={"note": "sure"}), 403, "forbidden")
    withdrawn = ivan.post(f"{base}/2/not-a-match", json={"note": "checked the date: not him"}).json()
    assert withdrawn["status"] == "not_a_match" and withdrawn["proposed_by"] == "ivan"
    assert_error(inga.post(f"{base}/2/confirm", json={"note": "ok"}), 409, "conflict")
    logged = entries(served, action="lead.not_a_match", case_id="NAM-1")
    assert [(e["actor"], e["rank"], e["previous_status"], e["note"]) for e in logged] == [
        ("inga", 1, "candidate", "different ears"),
        ("ivan", 2, "proposed", "checked the date: not him"),
    ]
    assert all(e["search_id"] == sid for e in logged)
    pages = served.browser("ivan")[0]
    listing = pages.get("/searches", params={"case_id": "NAM-1"}).text
    assert "2 not a match" in listing
    candidate = pages.get(f"/searches/{sid}/candidates/1").text
    assert "different ears" in candidate and 'id="propose-form"' not in candidate


# ----- the auditor: filters, readable details, both ways between searches and entries -------------------------
def test_audit_action_filter_matches_the_start_of_an_action(served):
    ivan, inga, auditor = served.client("ivan"), served.client("inga"), served.client("aud")
    record = run_search(ivan, person="Colin_Powell", case_id="AUD-F")
    ivan.post(f"/api/searches/{record['id']}/candidates/1/propose", json={"note": "same chin"})
    inga.post(f"/api/searches/{record['id']}/candidates/1/confirm", json={"note": "file photo agrees"})
    found = auditor.get("/api/audit", params={"action": "lead", "case_id": "AUD-F"}).json()
    assert [e["action"] for e in found] == ["lead.confirm", "lead.propose"]
    assert auditor.get("/api/audit", params={"action": "LEAD.P", "case_id": "AUD-F"}).json()[0]["action"] == (
        "lead.propose"
    )
    assert [e["action"] for e in auditor.get("/api/audit", params={"action": "search", "case_id": "AUD-F"}).json()] == [
        "search"
    ]
    assert auditor.get("/api/audit", params={"action": "%", "case_id": "AUD-F"}).json() == []  # no wildcard
    export = auditor.get("/api/audit/export", params={"format": "json", "action": "lead", "case_id": "AUD-F"}).json()
    assert {e["action"] for e in export} == {"lead.propose", "lead.confirm"}
    page = served.browser("aud")[0].get("/audit", params={"action": "lead", "case_id": "AUD-F"})
    assert page.status_code == 200 and page.text.count('class="action"') == 2
    assert '<datalist id="audit-actions">' in page.text and '<option value="lead.confirm">' in page.text


def test_a_bad_date_filter_is_an_error_naming_it(served):
    auditor = served.client("aud")
    assert_error(auditor.get("/api/audit", params={"since": "yesterday"}), 400, "bad_request", "since")
    assert_error(auditor.get("/api/audit", params={"until": "31/12/2024"}), 400, "bad_request", "until")
    assert_error(auditor.get("/api/audit/export", params={"since": "2024-13-01"}), 400, "bad_request", "since")
    error = assert_error(
        auditor.get("/api/audit", params={"since": "2024-02-01", "until": "2024-01-01"}), 400, "bad_request", "until"
    )
    assert "before since" in error["message"]
    # a date is a whole day, in UTC; an offset is honoured
    newest = auditor.get("/api/audit", params={"limit": 1}).json()[0]
    day = newest["at"][:10]
    assert newest["id"] in [e["id"] for e in auditor.get("/api/audit", params={"until": day, "since": day}).json()]
    assert auditor.get("/api/audit", params={"since": f"{day}T23:59:59.999999-01:00"}).json() == []
    # the command line says so too, instead of exporting nothing
    db = ["--database-url", served.catalog_url] if served.catalog_url else []
    command = ["--data-dir", str(served.data_dir), "audit", *db, "export", "--since", "yesterday"]
    result = CliRunner().invoke(cli_app, command)
    assert result.exit_code == 2 and "--since: 'yesterday' is not a date or time" in result.stderr, result.stderr
    page = served.browser("aud")[0].get("/audit", params={"since": "yesterday"})
    assert page.status_code == 400 and 'id="filter-error"' in page.text
    assert "<strong>Since:</strong>" in page.text and "is not a date or time" in page.text
    assert 'aria-invalid="true"' in page.text and "No entries match" not in page.text


def test_search_records_and_audit_entries_link_both_ways_with_notes(served):
    ivan, inga = served.client("ivan"), served.client("inga")
    record = run_search(ivan, person="Tony_Blair", case_id="AUD-L")
    other = run_search(ivan, person="Tony_Blair", case_id="AUD-L")
    sid = record["id"]
    ivan.get(f"/api/searches/{sid}/candidates/1")  # a result view
    ivan.post(f"/api/searches/{sid}/candidates/1/propose", json={"note": "same eyebrows"})
    inga.post(f"/api/searches/{sid}/candidates/1/not-a-match", json={"note": "the scar is missing"})
    auditor = served.client("aud")
    about = auditor.get("/api/audit", params={"search_id": sid}).json()
    assert {e["action"] for e in about} == {"search", "result.view", "lead.propose", "lead.not_a_match"}
    assert all(e["details"]["search_id"] == sid for e in about)
    assert other["id"] not in {e["details"]["search_id"] for e in about}
    browser, _ = served.browser("aud")
    page = browser.get(f"/searches/{sid}").text
    trail = page.split('id="audit-trail"')[1]
    assert f'href="/audit?search_id={sid}"' in trail and "lead.not_a_match" in trail and "result.view" in trail
    assert "same eyebrows" in page and "the scar is missing" in page  # lead notes, for the auditor
    assert "/candidates/1/thumbnail" not in page  # and still no face
    log = browser.get("/audit", params={"search_id": sid}).text
    assert f'<a href="/searches/{sid}">#{sid}</a>' in log and log.count('class="action"') == len(about)
    assert "the scar is missing" in log and "candidate" in log  # details in words, not key=value JSON
    table = log.split('id="audit"')[1]
    assert "search_id" not in table and "candidates=" not in table
