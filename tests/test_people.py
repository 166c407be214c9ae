"""People (issue 13): clustering a collection's faces into people, the views, and the human corrections.

Real models on the 15 LFW test photos (5 people x 3), a real catalog on SQLite and on PostgreSQL (the
``backend`` fixture), and the real API and CLI: cluster -> list -> merge -> split -> label -> confirm,
new faces joining people on a second ingest, erasure settling people, the opt-out list hiding faces,
grants over the API, an audit entry for every human action, and the CLI's JSON Lines.
"""

from __future__ import annotations

import getpass
import json
import shutil
from pathlib import Path

import pytest
from helpers import LFW_PEOPLE, POLICY, lfw, open_finder
from service_helpers import COLLECTION, assert_error, backend, make_served  # noqa: F401
from sqlalchemy import func, select
from typer.testing import CliRunner

from facefinder.errors import FaceFinderError, NotFound
from facefinder.interfaces.cli import app
from facefinder.storage.people import Person, PersonFace

HUMAN_ACTIONS = ("people.merge", "people.split", "people.label", "people.confirm")


def gallery(root: Path, numbers=(1, 2, 3), name: str = "gallery") -> Path:
    """A folder with photos ``numbers`` of each of the five LFW test people."""
    folder = root / name
    for person in LFW_PEOPLE:
        for number in numbers:
            (folder / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(lfw(person, number), folder / person / lfw(person, number).name)
    return folder


def identity(source: str) -> str:
    return Path(source).parent.name


def by_identity(people) -> dict[str, object]:
    """identity -> person, checking every person shows one identity only."""
    found = {}
    for person in people:
        names = {identity(m.source) for m in person.members}
        assert len(names) == 1, f"person {person.person_id} mixes {names}"
        found[names.pop()] = person
    return found


def person_rows(ff) -> int:
    with ff.store.catalog.session() as session:
        return session.scalar(select(func.count()).select_from(Person))


@pytest.fixture
def finder(backend, tmp_path, pipeline):
    ff = open_finder(tmp_path / "data", pipeline, catalog_url=backend.new_url())
    yield ff
    ff.close()


@pytest.fixture
def clustered(finder, tmp_path):
    """The 15 photos ingested into 'lfw' and clustered: five people of three faces."""
    finder.ingest(gallery(tmp_path), collection="lfw", **POLICY)
    report = finder.people.cluster("lfw")
    assert (report.considered, report.new_people, report.new_people_faces, report.people) == (15, 5, 15, 5)
    return finder


# ----- clustering and the human corrections -----------------------------------------------------------
def test_cluster_list_merge_split_label_confirm(clustered):
    ff = clustered
    people = ff.people.list("lfw")
    assert [p.faces for p in people] == [3] * 5 and all(p.members is None for p in people)
    assert all(p.photos == 3 and not p.confirmed and p.label is None for p in people)
    named = by_identity(ff.people.list("lfw", members=True))
    assert set(named) == set(LFW_PEOPLE)
    for person in named.values():
        assert person.representative_face_id in {m.face_id for m in person.members}
        assert all(m.assigned_by == "cluster" and m.score >= ff.people.settings.threshold for m in person.members)
    bush, blair = named["George_W_Bush"].person_id, named["Tony_Blair"].person_id
    blair_faces = [m.face_id for m in named["Tony_Blair"].members]

    merged = ff.people.merge(bush, blair)  # a human's mistake, put right below
    assert merged.faces == 6 and {identity(m.source) for m in merged.members} == {"George_W_Bush", "Tony_Blair"}
    assert {m.assigned_by for m in merged.members if m.face_id in blair_faces} == {ff.actor}
    with pytest.raises(NotFound):
        ff.people.show(blair)
    with pytest.raises(FaceFinderError, match="itself"):
        ff.people.merge(bush, bush)

    with pytest.raises(FaceFinderError, match="not one of person"):
        ff.people.split(bush, [blair_faces[0], 999_999])
    with pytest.raises(FaceFinderError, match="at least one face"):
        ff.people.split(bush, [m.face_id for m in merged.members])
    split = ff.people.split(bush, blair_faces)
    assert {identity(m.source) for m in split.kept.members} == {"George_W_Bush"} and split.kept.faces == 3
    assert {identity(m.source) for m in split.split.members} == {"Tony_Blair"} and not split.split.confirmed
    assert split.split.representative_face_id in blair_faces

    assert ff.people.label(bush, "  subject A ").label == "subject A"
    with pytest.raises(FaceFinderError, match="label"):
        ff.people.label(bush, "x" * 201)
    assert ff.people.confirm(bush).confirmed is True
    shown = ff.people.show(bush)
    assert (shown.label, shown.confirmed, shown.faces, shown.collection) == ("subject A", True, 3, "lfw")

    actions = [(e.action, e.actor, json.loads(e.details)) for e in ff.audit.entries() if e.action in HUMAN_ACTIONS]
    assert [a for a, _, _ in actions] == ["people.merge", "people.split", "people.label", "people.confirm"]
    assert all(actor == ff.actor and details["person_id"] == bush for _, actor, details in actions)
    assert actions[1][2]["face_ids"] == sorted(blair_faces) and actions[2][2]["label"] == "subject A"
    assert {e.action for e in ff.audit.entries()} >= {"people.cluster", "people.list", "people.show"}

    # A full re-cluster drops the three suggestions no one touched and keeps the two people humans made.
    report = ff.people.cluster("lfw", full=True)
    assert (report.dropped_people, report.people) == (3, 5)
    again = by_identity(ff.people.list("lfw", members=True))
    assert again["George_W_Bush"].person_id == bush and again["George_W_Bush"].label == "subject A"
    assert again["Tony_Blair"].person_id == split.split.person_id
    assert ff.people.cluster("lfw").considered == 0  # nothing new since


def test_new_faces_join_people_on_a_second_ingest(finder, tmp_path):
    finder.ingest(gallery(tmp_path, (1, 2), "first"), collection="lfw", **POLICY)
    first = finder.people.cluster("lfw")
    before = by_identity(finder.people.list("lfw", members=True))
    assert first.considered == 10 and len(before) >= 4
    finder.ingest(gallery(tmp_path, (3,), "second"), collection="lfw", **POLICY)
    second = finder.people.cluster("lfw")
    assert second.considered == 5 and second.joined >= 4 and second.people == 5
    after = by_identity(finder.people.list("lfw", members=True))
    assert all(p.faces == 3 for p in after.values())
    for name, person in before.items():  # the people that existed kept their ids and gained the new face
        assert after[name].person_id == person.person_id


def test_erasure_settles_people(clustered):
    ff = clustered
    named = by_identity(ff.people.list("lfw", members=True))
    bush = named["George_W_Bush"]
    assert ff.delete_face(bush.representative_face_id)
    after = ff.people.show(bush.person_id)
    assert after.faces == 2 and after.representative_face_id not in (None, bush.representative_face_id)
    assert after.representative_face_id in {m.face_id for m in after.members}

    powell = named["Colin_Powell"]
    ff.people.label(powell.person_id, "a name that must go with the faces")
    for image_id in sorted({m.image_id for m in powell.members}):
        ff.delete_image(image_id)
    with pytest.raises(NotFound):
        ff.people.show(powell.person_id)
    assert all(p.label is None for p in ff.people.list("lfw"))
    with ff.store.catalog.session() as session:
        assert session.get(Person, powell.person_id) is None
        assert session.scalar(select(func.count()).select_from(PersonFace)) == 11

    chavez = named["Hugo_Chavez"]  # erasure by person: the privacy service erases faces, people follow
    ff.privacy.erase_faces([m.face_id for m in chavez.members])
    assert len(ff.people.list("lfw")) == 3
    ff.delete_collection("lfw")
    assert person_rows(ff) == 0


def test_opted_out_faces_never_appear_in_people(clustered):
    ff = clustered
    bush = by_identity(ff.people.list("lfw", members=True))["George_W_Bush"]
    optout = ff.privacy.optout_add([lfw("George_W_Bush", 1)], reference="T-13")
    assert len(optout.matches) == 3
    people = ff.people.list("lfw", members=True)
    assert len(people) == 4 and "George_W_Bush" not in by_identity(people)
    with pytest.raises(NotFound):
        ff.people.show(bush.person_id)
    with pytest.raises(NotFound):
        ff.people.thumbnail(bush.person_id, bush.representative_face_id)
    report = ff.people.cluster("lfw", full=True)  # their faces are not grouped again either
    assert report.opted_out == 3 and report.people == 4
    ff.privacy.optout_remove(optout.id)
    assert ff.people.cluster("lfw").considered == 0
    assert ff.people.cluster("lfw", full=True).people == 5


# ----- the API: roles and grants -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    """The service with 'people' (photos 2 and 3 of the five people) granted to ivan and inga."""
    app = make_served(tmp_path_factory.mktemp(f"people-{backend.name}") / "data", pipeline, backend.new_url())
    yield app
    app.close()


def people_endpoints(person: str, face: int, other: int) -> list[tuple[str, str, dict, dict]]:
    """(method, path, request, status by role) of every people endpoint, read-only or refused ones."""
    listing, cluster = f"/api/collections/{COLLECTION}/people", f"/api/collections/{COLLECTION}/people/cluster"
    read, act = (
        {"admin": 200, "ivan": 200, "aud": 200, "olga": 403},
        {"admin": 200, "ivan": 200, "aud": 403, "olga": 403},
    )
    refused = {"aud": 403, "olga": 403}
    return [
        ("GET", listing, {"params": {"members": True}}, read),
        ("POST", cluster, {"json": {"full": False}}, act),
        ("GET", person, {}, read),
        ("GET", f"{person}/faces/{face}/thumbnail", {}, act),  # no face images for auditors
        ("POST", f"{person}/merge", {"json": {"other": other}}, refused),
        ("POST", f"{person}/split", {"json": {"face_ids": [face]}}, refused),
        ("POST", f"{person}/label", {"json": {"label": "x"}}, refused),
        ("POST", f"{person}/confirm", {}, refused),
    ]


def test_people_api_roles_grants_and_audit(served):
    clients = {user: served.client(user) for user in ("admin", "ivan", "olga", "aud")}
    response = clients["ivan"].post(f"/api/collections/{COLLECTION}/people/cluster")
    assert response.status_code == 200, response.text
    assert response.json()["people"] == 5 and response.json()["considered"] == 10
    people = clients["aud"].get(f"/api/collections/{COLLECTION}/people", params={"members": True}).json()
    assert len(people) == 5 and all(p["faces"] == 2 and not p["confirmed"] for p in people)
    assert all({"face_id", "image_id", "source", "score", "assigned_by"} <= set(m) for m in people[0]["members"])
    assert clients["ivan"].get(f"/api/collections/{COLLECTION}/people").json()[0]["members"] is None
    first, second = people[0], people[1]
    person, face = f"/api/people/{first['person_id']}", first["members"][0]["face_id"]

    for method, path, request, expected in people_endpoints(person, face, second["person_id"]):
        assert_error(served.client().request(method, path, **request), 401, "unauthenticated")
        for user, status in expected.items():
            response = clients[user].request(method, path, **request)
            assert response.status_code == status, (user, method, path, response.text)
            if status == 403:
                assert_error(response, 403, "forbidden")
            elif path.endswith("/thumbnail"):
                assert response.headers["content-type"] == "image/jpeg"
    assert_error(clients["admin"].get("/api/people/999999"), 404, "not_found")
    assert_error(clients["admin"].get("/api/collections/nothing-here/people"), 404, "not_found")

    ivan = clients["ivan"]
    assert ivan.post(f"{person}/label", json={"label": "subject B"}).json()["label"] == "subject B"
    assert_error(ivan.post(f"{person}/label", json={"label": "x" * 201}), 422)
    merged = ivan.post(f"{person}/merge", json={"other": second["person_id"]})
    assert merged.status_code == 200 and merged.json()["faces"] == 4
    assert_error(ivan.post(f"{person}/merge", json={"other": first["person_id"]}), 400, "bad_request", "other")
    assert_error(ivan.post(f"{person}/split", json={"face_ids": [999_999]}), 400, "bad_request", "face_ids")
    moved = [m["face_id"] for m in second["members"]]
    split = ivan.post(f"{person}/split", json={"face_ids": moved})
    assert split.status_code == 201 and split.json()["split"]["faces"] == 2 and split.json()["kept"]["faces"] == 2
    confirmed = ivan.post(f"{person}/confirm")
    assert confirmed.status_code == 200 and confirmed.json()["confirmed"] is True

    entries = served.service.audit.entries(actor="ivan")
    assert [e.action for e in entries if e.action in HUMAN_ACTIONS] == [
        "people.label",
        "people.merge",
        "people.split",
        "people.confirm",
    ]
    assert {"people.cluster", "people.list", "people.show", "people.faces.view"} <= {e.action for e in entries}
    assert "people.faces.view" not in {e.action for e in served.service.audit.entries(actor="aud")}


# ----- the CLI ----------------------------------------------------------------------------------------------
def run_cli(data: Path, *args, expect: int = 0):
    result = CliRunner().invoke(app, ["--data-dir", str(data), *map(str, args)])
    assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def test_people_cli_json_lines(tmp_path, pipeline):
    data = tmp_path / "data"
    with open_finder(data, pipeline) as ff:
        ff.ingest(gallery(tmp_path), collection="lfw", **POLICY)
    report = json.loads(run_cli(data, "people", "cluster", "--collection", "lfw", "--json").stdout)
    assert report["new_people"] == 5 and report["full"] is False
    lines = [json.loads(line) for line in run_cli(data, "people", "list", "-c", "lfw", "--json").stdout.splitlines()]
    keys = {"person_id", "label", "confirmed", "faces", "photos", "representative_face_id"}
    assert len(lines) == 5 and all(set(line) == keys for line in lines)
    output = run_cli(data, "people", "list", "--collection", "lfw", "--json", "--members").stdout
    lines = [json.loads(line) for line in output.splitlines()]
    assert all(set(line) == keys | {"members"} and len(line["members"]) == line["faces"] for line in lines)
    assert all(set(m) == {"face_id", "image_id", "source", "score"} for line in lines for m in line["members"])
    first, second = lines[0]["person_id"], lines[1]["person_id"]
    shown = json.loads(run_cli(data, "people", "show", first, "--json").stdout)
    assert shown["person_id"] == first and shown["members"][0]["assigned_by"] == "cluster"
    assert "suggested" in run_cli(data, "people", "show", first).stderr
    run_cli(data, "people", "merge", first, second)
    moved = [m["face_id"] for m in lines[1]["members"]]
    run_cli(data, "people", "split", first, *[arg for face in moved for arg in ("--face", face)])
    run_cli(data, "people", "label", first, "subject C")
    run_cli(data, "people", "confirm", first)
    shown = json.loads(run_cli(data, "people", "show", first, "--json").stdout)
    assert (shown["label"], shown["confirmed"], shown["faces"]) == ("subject C", True, 3)
    assert "error: person 999999 does not exist" in run_cli(data, "people", "show", 999999, expect=2).stderr
    assert "subject C" in run_cli(data, "people", "list", "-c", "lfw", "--members").stdout
    with open_finder(data) as ff:
        actions = [(e.action, e.actor) for e in ff.audit.entries() if e.action in HUMAN_ACTIONS]
    assert actions == [(action, f"local:{getpass.getuser()}") for action in HUMAN_ACTIONS]


def test_subject_access_lists_the_person_a_face_is_grouped_into(clustered):
    """A label a user gave, and being grouped with other faces, is data held about the subject."""
    from facefinder.interfaces.web.documents import access_report_html

    ff = clustered
    powell = by_identity(ff.people.list("lfw", members=True))["Colin_Powell"]
    ff.people.label(powell.person_id, "subject P")
    report = ff.privacy.subject_access(lfw("Colin_Powell", 1), approved_by="dpo")
    assert report["faces"] and all(
        f["person"]
        == {"person_id": powell.person_id, "label": "subject P", "confirmed": False, "assigned_by": "cluster"}
        for f in report["faces"]
    )
    assert 'labelled "subject P"' in access_report_html(report)
    assert all(f["review"] == {"drawn": None, "rejections": []} for f in report["faces"])
    face = report["faces"][0]["face_id"]
    ff.people_review.reject(face, powell.person_id, actor="reviewer")  # "not this person" is held about them too
    report = ff.privacy.subject_access(lfw("Colin_Powell", 1), approved_by="dpo")
    [rejected] = [f for f in report["faces"] if f["face_id"] == face]
    assert [(r["person_id"], r["rejected_by"]) for r in rejected["review"]["rejections"]] == [
        (powell.person_id, "reviewer")
    ]


def test_a_person_id_past_the_catalog_ids_is_a_bad_value(tmp_path):
    """Ids are 32-bit in PostgreSQL: a larger one is refused by the CLI as a bad value, never a traceback."""
    for args in (("people", "show", 10**20), ("people", "search", "--person", 10**20), ("delete", "face", 10**20)):
        result = run_cli(tmp_path / "data", *args, expect=2)
        assert "2147483647" in result.stderr and "Traceback" not in result.stderr
