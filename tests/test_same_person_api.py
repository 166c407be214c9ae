"""Several probe faces of one person, one case search, through the REST API (issue 12 item 3), on the
real app with the real models, on SQLite and on PostgreSQL: ``same_person`` in POST /api/searches runs
one search on the fused template, each candidate scored by the mean of its cosines to the probe faces
(checked against two single searches); bad entries are refused before anything runs, naming the field;
the record, its thumbnails and the audit entry say what was searched; an opted-out probe face finds
nothing and is withheld; an erased one is emptied; an older catalog gains the table."""

from __future__ import annotations

import json

import pytest
from helpers import lfw
from service_helpers import COLLECTION, assert_error, backend, make_served, probe_bytes, upload_probe  # noqa: F401
from sqlalchemy import inspect, text

from facefinder.services.privacy import case_records
from facefinder.services.server.records import CaseRecord
from facefinder.storage.base import utcnow
from facefinder.storage.cases import CaseSearch
from facefinder.storage.catalog import Catalog

JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    app = make_served(tmp_path_factory.mktemp(f"fused-{backend.name}") / "data", pipeline, backend.new_url())
    yield app
    app.close()


def upload(client, photo: bytes) -> str:
    return upload_probe(client, photo)["probe_id"]


def terms(probe_id: str, case_id: str, **more) -> dict:
    body = {"probe_id": probe_id, "face": 0, "case_id": case_id, "purpose": "fused search checks"}
    return {**body, "category": "missing person", **more}


def search(client, body: dict) -> dict:
    response = client.post("/api/searches", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def entries(served, case_id: str) -> list[dict]:
    return [json.loads(e.details) for e in served.service.audit.entries(action="search", case_id=case_id)]


def test_a_fused_search_scores_each_candidate_by_the_mean_of_the_single_scores(served):
    ivan, inga = served.client("ivan"), served.client("inga")
    first, second = upload(ivan, probe_bytes("Tony_Blair", 1)), upload(ivan, probe_bytes("Tony_Blair", 2))
    every = {"threshold": -1.0, "top_k": 10}  # every face of the 10-photo gallery, in all three searches
    alone = [search(ivan, terms(probe, "FUSE-1", **every)) for probe in (first, second)]
    fused = search(ivan, terms(first, "FUSE-1", same_person=[{"probe_id": second, "face": 0}], **every))
    single = [{c["face_id"]: c["score"] for c in record["candidates"]} for record in alone]
    scores = {c["face_id"]: c["score"] for c in fused["candidates"]}
    assert set(scores) == set(single[0]) == set(single[1]) and len(scores) == 10
    for face_id, score in scores.items():  # each shown to 4 decimals: the mean of two is within 1e-4
        assert abs(score - (single[0][face_id] + single[1][face_id]) / 2) <= 1.0001e-4, face_id
    top = fused["candidates"][0]
    assert (
        top["collection"] == COLLECTION
        and "Tony_Blair" in ivan.get(f"/api/searches/{fused['id']}/candidates/1").json()["source"]
    )
    # at the calibrated threshold the person is found first, and the record says what was searched
    plain = search(ivan, terms(first, "FUSE-2", same_person=[{"probe_id": second, "face": 0}]))
    assert (
        plain["candidates"] and "Tony_Blair" in ivan.get(f"/api/searches/{plain['id']}/candidates/1").json()["source"]
    )
    record = inga.get(f"/api/searches/{fused['id']}").json()  # a colleague reads it too
    assert record["probe_sha256"] == alone[0]["probe_sha256"] and record["probe_face"] == 0
    [extra] = record["same_person"]
    assert extra["number"] == 1 and extra["probe_sha256"] == alone[1]["probe_sha256"] and extra["face"] == 0
    assert extra["box"] == alone[1]["probe_box"] and extra["quality"] == alone[1]["probe_quality"]
    assert extra["erased_at"] is None and extra["withheld"] is False
    assert alone[0]["same_person"] == [] and record["candidates"] == fused["candidates"]
    [logged] = [e for e in entries(served, "FUSE-1") if e["search_id"] == fused["id"]]
    assert logged["same_person"] == [[extra["probe_sha256"], 0]] and logged["probe_sha256"] == record["probe_sha256"]
    assert all("same_person" not in e for e in entries(served, "FUSE-1") if e["search_id"] != fused["id"])
    # its thumbnail, for those who see faces of the search; the same JPEG as the probe's face
    shown = inga.get(f"/api/searches/{fused['id']}/same-person/1/thumbnail")
    assert shown.status_code == 200 and shown.content == ivan.get(f"/api/probes/{second}/faces/0/thumbnail").content
    for user in ("olga", "aud"):
        assert_error(served.client(user).get(f"/api/searches/{fused['id']}/same-person/1/thumbnail"), 403, "forbidden")
    assert_error(ivan.get(f"/api/searches/{fused['id']}/same-person/2/thumbnail"), 404, "not_found")


def test_bad_same_person_entries_are_refused_before_anything_runs(served):
    ivan, inga = served.client("ivan"), served.client("inga")
    probe, theirs = upload(ivan, probe_bytes("Colin_Powell", 1)), upload(inga, probe_bytes("Colin_Powell", 2))
    body = terms(probe, "FUSE-BAD")
    bad = {
        "gone": [{"probe_id": "no-such-probe", "face": 0}],
        "another user's": [{"probe_id": theirs, "face": 0}],
        "no such face": [{"probe_id": probe, "face": 5}],
        "itself": [{"probe_id": probe, "face": 0}],
        "too many": [{"probe_id": probe, "face": 0}] * 11,
    }
    for why, same_person in bad.items():
        error = assert_error(ivan.post("/api/searches", json={**body, "same_person": same_person}), 400)
        assert error["field"] == "same_person", (why, error)
    with_faces = {**body, "faces": [0], "same_person": [{"probe_id": theirs, "face": 0}]}
    assert_error(ivan.post("/api/searches", json=with_faces), 400, "bad_request", "same_person")
    malformed = ivan.post("/api/searches", json={**body, "same_person": [{"face": 0}]})
    assert malformed.status_code == 422 and "same_person" in malformed.text
    assert entries(served, "FUSE-BAD") == []  # nothing ran, nothing recorded
    assert search(ivan, {**body, "same_person": []})["same_person"] == []  # empty: a plain search


def test_an_opted_out_probe_face_finds_nothing_and_is_withheld_then_erased(served):
    ivan, admin = served.client("ivan"), served.client("admin")
    probe, other = upload(ivan, probe_bytes("Vladimir_Putin", 1)), upload(ivan, lfw("Hugo_Chavez", 1).read_bytes())
    before = search(ivan, terms(probe, "FUSE-OPT", same_person=[{"probe_id": other, "face": 0}]))
    thumbnail = ivan.get(f"/api/searches/{before['id']}/same-person/1/thumbnail").content
    added = admin.post("/api/privacy/optouts?reference=FUSED", content=lfw("Hugo_Chavez", 1).read_bytes(), headers=JPEG)
    assert added.status_code == 201, added.text
    try:
        after = search(ivan, terms(probe, "FUSE-OPT", same_person=[{"probe_id": other, "face": 0}]))
        assert after["candidates"] == [] and after["same_person"][0]["withheld"] is True
        assert after["probe_withheld"] is False  # the searched face is someone else's
        record = ivan.get(f"/api/searches/{before['id']}").json()
        assert record["same_person"][0]["withheld"] is True
        placeholder = ivan.get(f"/api/searches/{before['id']}/same-person/1/thumbnail")
        assert placeholder.status_code == 200 and placeholder.content != thumbnail
    finally:
        assert admin.delete(f"/api/privacy/optouts/{added.json()['id']}").status_code == 200
    assert ivan.get(f"/api/searches/{before['id']}/same-person/1/thumbnail").content == thumbnail
    # the person is erased: their probe face is emptied in every fused search, the rest kept
    accounts = served.service.accounts
    held = served.service.cases.probes.get(accounts.principal(accounts.user("ivan").id), other)
    person = {served.service.cases.pipeline.model_id: held.faces[0].embedding[None]}
    erased = case_records.erase_probes_of(served.service.catalog, person, 0.5, utcnow())
    assert {before["id"], after["id"]} <= set(erased.searches)
    record = ivan.get(f"/api/searches/{before['id']}").json()
    assert record["same_person"][0]["erased_at"] is not None and record["probe_erased_at"] is None
    assert ivan.get(f"/api/searches/{before['id']}/same-person/1/thumbnail").content != thumbnail


def test_a_catalog_from_before_fused_searches_gains_their_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = Catalog(url)
    with catalog.engine.begin() as connection:
        connection.execute(text("DROP TABLE case_search_same_person"))
    catalog.close()
    catalog = Catalog(url)
    try:
        assert inspect(catalog.engine).has_table("case_search_same_person")
        with catalog.session() as session, session.begin():
            row = CaseSearch(
                user_id=1, username="old", case_id="OLD-1", purpose="older search", category="missing person",
                probe_sha256="0" * 64, probe_face=0, probe_box=[0, 0, 1, 1], probe_quality=0.5,
                probe_thumbnail=b"", collections=["people"], top_k=10, threshold=0.4, model_id="m",
            )  # fmt: skip
            session.add(row)
        with catalog.session() as session:
            assert CaseRecord.of(session.get(CaseSearch, row.id)).same_person == ()
    finally:
        catalog.close()
