"""Search by person (issue 13): a probe photo ranked against people, and a person used as the probe.

Real models on the LFW test photos (five people), a real SQLite catalog, the real CLI and API: the
right person comes first with a template fused from all their faces, a person as the probe finds
their own photos left out of the person and never themselves, opted-out faces count for nothing, every
search is audited with its case and purpose, and the API keeps the rules of a face search.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import LFW_PEOPLE, POLICY, lfw, open_finder
from service_helpers import COLLECTION, assert_error, make_served, probe_bytes
from test_people import gallery, identity, run_cli


@pytest.fixture
def clustered(tmp_path, pipeline):
    """Photos 2 and 3 of the five people, ingested into 'lfw' and clustered: five people of two faces."""
    ff = open_finder(tmp_path / "data", pipeline)
    ff.ingest(gallery(tmp_path, numbers=(2, 3)), collection="lfw", **POLICY)
    assert ff.people.cluster("lfw").people == 5
    yield ff
    ff.close()


def test_a_probe_photo_finds_its_person_first(clustered):
    ff = clustered
    for name in LFW_PEOPLE:
        [record] = ff.people_search.photos([lfw(name, 1)], case_id="K-1", purpose="find the subject")
        assert record.error is None and record.people, name
        first = record.people[0]
        members = {identity(m.source) for m in ff.people.show(first.person_id).members}
        assert members == {name}, (name, members)
        assert first.faces == 2 and identity(first.nearest_face.source) == name
        assert first.score == pytest.approx((first.nearest_face.score + first.template_score) / 2, abs=1e-3)
        assert [p.rank for p in record.people] == list(range(1, len(record.people) + 1))
    entries = [e for e in ff.audit.entries() if e.action == "people.search"]
    assert len(entries) == 5 and all(e.case_id == "K-1" for e in entries)
    assert json.loads(entries[0].details)["purpose"] == "find the subject"


def test_a_person_as_the_probe_finds_their_other_photos(clustered, tmp_path):
    ff = clustered
    name = LFW_PEOPLE[0]
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(lfw(name, 1), extra / lfw(name, 1).name)
    ff.ingest(extra, collection="lfw", **POLICY)  # not clustered yet: a single face, not the person's
    person = next(p for p in ff.people.list("lfw", members=True) if identity(p.members[0].source) == name)
    own = {m.face_id for m in person.members}
    record = ff.people_search.person(person.person_id, case_id="K-2", purpose="more of the subject")
    assert record.probe == f"person:{person.person_id}"
    assert record.faces and not own & {c.face_id for c in record.faces}
    assert Path(record.faces[0].source).name == lfw(name, 1).name
    assert person.person_id not in {p.person_id for p in record.people}
    assert [e.action for e in ff.audit.entries()][-1] == "people.search"


def test_opted_out_faces_do_not_count(clustered):
    ff = clustered
    name = LFW_PEOPLE[1]
    ff.privacy.optout_add([lfw(name, 1)], reference="T-1")
    [record] = ff.people_search.photos([lfw(name, 1)])
    assert record.people == []  # the probe itself is on the list: nothing is searched for it
    [record] = ff.people_search.photos([lfw(LFW_PEOPLE[2], 1)])
    shown = {identity(ff.people.show(p.person_id).members[0].source) for p in record.people}
    assert name not in shown


def test_people_search_cli(clustered):
    ff = clustered
    data = ff.data_dir
    ff.close()
    line = json.loads(run_cli(data, "people", "search", lfw(LFW_PEOPLE[3], 1), "--json").stdout.splitlines()[0])
    assert line["people"] and identity(line["people"][0]["nearest_face"]["source"]) == LFW_PEOPLE[3]
    person = line["people"][0]["person_id"]
    shown = run_cli(data, "people", "search", "--person", person, "--case", "K-3")
    assert f"person:{person}: no match" in shown.stderr + shown.stdout  # the others are strangers to them
    failed = run_cli(data, "people", "search", lfw(LFW_PEOPLE[3], 1), "--person", person, expect=2)
    assert "not both" in failed.stderr


def test_people_search_api_keeps_the_search_rules(tmp_path, pipeline):
    served = make_served(tmp_path / "data", pipeline, None)
    try:
        ivan, aud, olga = (served.client(u) for u in ("ivan", "aud", "olga"))
        assert ivan.post(f"/api/collections/{COLLECTION}/people/cluster").json()["people"] == 5
        probe = ivan.post("/api/probes", files={"photo": ("p.jpg", probe_bytes(), "image/jpeg")}).json()
        terms = {"case_id": "K-4", "purpose": "find the subject", "category": "missing person"}
        response = ivan.post("/api/people/search", json={"probe_id": probe["probe_id"], **terms})
        assert response.status_code == 200, response.text
        first = response.json()["people"][0]
        assert identity(first["nearest_face"]["source"]) == "Tony_Blair" and first["faces"] == 2
        assert_error(ivan.post("/api/people/search", json={"probe_id": probe["probe_id"]}), 422)
        no_case = {**terms, "case_id": " ", "probe_id": probe["probe_id"]}
        assert_error(ivan.post("/api/people/search", json=no_case), 400, "bad_request", "case_id")
        like = ivan.post(f"/api/people/{first['person_id']}/search", json=terms)
        assert like.status_code == 200, like.text
        assert first["person_id"] not in {p["person_id"] for p in like.json()["people"]}
        assert_error(aud.post(f"/api/people/{first['person_id']}/search", json=terms), 403, "forbidden")
        assert_error(olga.post(f"/api/people/{first['person_id']}/search", json=terms), 403, "forbidden")
        entries = served.service.audit.entries(actor="ivan")
        searches = [e for e in entries if e.action == "people.search"]
        assert len(searches) == 2 and all(e.case_id == "K-4" for e in searches)
        assert json.loads(searches[0].details)["category"] == "missing person"
    finally:
        served.close()
