"""Erasure and opt-out that reach the whole person (services/privacy/expansion.py).

Bernadette's probe photo (demo/probes) scores 0.60 against one of her four gallery photos, below the
strict privacy threshold (0.692), so the strict list holds three of her faces; that fourth photo
scores 0.71-0.78 against the other three, so the expanded list holds all four, saying why. Erasing
the confirmed faces leaves no byte of them on disk, an opt-out keeps them as templates (a re-ingest of
all four photos is then screened, not three), and the audit log says what was expanded.
"""

from __future__ import annotations

import json
import shutil

from helpers import GALLERY, POLICY, PROBES
from service_helpers import make_served
from test_privacy import assert_erased_on_disk, held_faces, run_cli

from facefinder.services.privacy.expansion import ExpansionRule, grow

PROBE = PROBES / "bernadette_bernadette5.png"
FAR = "bernadette2.png"  # the one of her gallery photos below the strict threshold against PROBE


def gallery(root, people=("bernadette", "amy", "howard", "sheldon")):
    folder = root / "gallery"
    for person in people:
        shutil.copytree(GALLERY / person, folder / person)
    return folder


def entries(ff, action: str) -> list[dict]:
    return [json.loads(e.details) for e in ff.audit.entries(action=action)]


# ----- the rule on plain callables ------------------------------------------------------------------------
def test_grow_needs_support_or_a_strong_link_and_reaches_people():
    # 1, 2 direct; 3 matches both (joins); 4 matches only 3 once, weakly (stays out: no chain on one
    # chance match); 5 matches 1 strongly (joins); 6 and 7 are a person with 1 and 2 (joins via person).
    links = {1: [(3, 0.75), (5, 0.9)], 2: [(3, 0.72)], 3: [(4, 0.71)], 5: [], 6: [], 7: []}
    people = {1: 100, 2: 100, 6: 100, 7: 100, 4: 200}

    def neighbours(faces):
        return {f: links.get(f, []) for f in faces}

    def members(ids):
        return {p: sorted(f for f, q in people.items() if q == p) for p in ids}

    def people_of(faces):
        return {f: people[f] for f in faces if f in people}

    rule = ExpansionRule(support=2, strong=0.85, person_support=2)
    listed = grow({1: 0.8, 2: 0.75}, neighbours, people_of, members, rule, 0.7)
    assert sorted(listed) == [1, 2, 3, 5, 6, 7]
    assert (listed[3].reason, listed[3].support, listed[3].via, listed[3].link) == ("face", 2, 1, 0.75)
    assert (listed[5].reason, listed[5].support) == ("face", 1)
    assert (listed[6].reason, listed[6].via, listed[6].support) == ("person", 100, 2)
    assert listed[1].reason == "direct" and listed[1].step == 0
    # Without people, and with one link enough, 4 chains on through 3.
    assert 6 not in grow({1: 0.8, 2: 0.75}, neighbours, None, None, rule, 0.7)
    loose = grow({1: 0.8, 2: 0.75}, neighbours, None, None, ExpansionRule(support=1, person_support=0), 0.7)
    assert 4 in loose and loose[4].step == 2


# ----- erasure by person -----------------------------------------------------------------------------------
def test_expanded_list_reaches_beyond_the_strict_matches_then_erases_what_is_confirmed(tmp_path, make_finder):
    data = tmp_path / "data"
    ff = make_finder(data)
    ff.ingest(gallery(tmp_path), collection="people", **POLICY)
    ff.people.cluster("people")
    strict = ff.privacy.find_person(PROBE)
    assert len(strict.matches) == 3 and not any(m.source.endswith(FAR) for m in strict.matches)

    found = ff.privacy.find_person(PROBE, expand=True)
    assert found.expanded and len(found.matches) == 4
    assert all("/bernadette/" in m.source for m in found.matches)  # nobody else's face
    far = next(m for m in found.matches if m.source.endswith(FAR))
    assert far.reason in ("face", "person") and far.score < found.threshold <= min(
        m.score for m in found.matches if m.reason == "direct"
    )
    assert far.via is not None and far.support >= 2 and far.step >= 1
    assert {m.face_id for m in strict.matches} == {m.face_id for m in found.matches if m.reason == "direct"}
    assert found.to_dict()["matches"][-1]["reason"] == far.reason
    assert ff.store.faces(found.face_ids).keys() == set(found.face_ids)  # listing erases nothing
    [*_, logged] = entries(ff, "privacy.find")
    assert logged["expanded"] is True and sum(logged["listed_by"].values()) == 4

    doomed = held_faces(data, "/bernadette/")
    erased = ff.privacy.erase_person(found, found.face_ids)
    assert (erased.faces, erased.images) == (4, 4)
    assert_erased_on_disk(data, doomed)
    assert held_faces(data, "/bernadette/") == {}
    [entry] = entries(ff, "delete.person")
    assert entry["expanded"] is True and sorted(entry["face_ids"]) == sorted(doomed)
    assert all(len(person.members) for person in ff.people.list("people", members=True))  # people settled


def test_cli_delete_person_expand_lists_then_erases_only_what_is_confirmed(tmp_path):
    data = tmp_path / "data"
    run_cli(data, "ingest", gallery(tmp_path), "-c", "people", *_policy_args(), "--workers", "0")
    listed = run_cli(data, "delete", "person", PROBE, "--expand", "--json")
    body = json.loads(listed.stdout)
    assert body["expanded"] is True and body["erased"] is None and len(body["matches"]) == 4
    assert "listed for review" in listed.stderr and "via face" in listed.stderr
    far = next(m["face_id"] for m in body["matches"] if m["source"].endswith(FAR))
    one = json.loads(run_cli(data, "delete", "person", PROBE, "--expand", "--face-id", far, "--yes", "--json").stdout)
    assert one["erased"]["face_ids"] == [far]
    rest = json.loads(run_cli(data, "delete", "person", PROBE, "--expand", "--confirm-all", "--yes", "--json").stdout)
    assert rest["erased"]["faces"] == 3
    assert held_faces(data, "/bernadette/") == {}


def _policy_args() -> list[str]:
    return ["--purpose", POLICY["purpose"], "--legal-basis", POLICY["legal_basis"], "--retention-days", "30"]


# ----- opt-out ----------------------------------------------------------------------------------------------
def test_expanded_optout_keeps_the_confirmed_faces_as_templates(tmp_path, make_finder):
    data = tmp_path / "data"
    ff = make_finder(data)
    folder = gallery(tmp_path)
    ff.ingest(folder, collection="people", **POLICY)
    result = ff.privacy.optout_add([PROBE], reference="REQ-9", expand=True)
    assert result.templates == 1 and len(result.matches) == 4
    listed = [m.face_id for m in ff.privacy.optout_matches(result.id, expand=True)]
    assert sorted(listed) == sorted(m.face_id for m in result.matches)
    assert len(ff.privacy.optout_matches(result.id)) == 3  # the strict review, as before

    erased = ff.privacy.optout_erase(result.id, listed, expand=True)
    assert erased.faces == 4 and held_faces(data, "/bernadette/") == {}
    [info] = ff.privacy.optout_list()
    assert info.templates == 5  # the probe's, and the four confirmed faces'
    [entry] = entries(ff, "optout.erase")
    assert entry["expanded"] is True and entry["templates_added"] == 4
    assert [e["listed_by"]["direct"] for e in entries(ff, "optout.review") if e.get("expanded")] == [3]

    # The same four photos come in again: all four are screened (one template alone caught three).
    again = ff.ingest(folder / "bernadette", collection="people")
    assert again.opted_out == 4 and held_faces(data, "/bernadette/") == {}


def test_expansion_through_the_api(tmp_path, pipeline):
    served = make_served(tmp_path / "data", pipeline, None, seed=False)
    try:
        served.finder.ingest(gallery(tmp_path), collection="people", **POLICY)
        admin, png = served.client("admin"), {"Content-Type": "image/png"}
        found = admin.post("/api/privacy/persons/expand", content=PROBE.read_bytes(), headers=png).json()
        assert len(found["matches"]) == 4 and {m["reason"] for m in found["matches"]} >= {"direct"}
        far = next(m for m in found["matches"] if m["source"].endswith(FAR))
        assert far["reason"] != "direct" and far["via"] and far["step"] >= 1
        strict = admin.post(f"/api/privacy/persons/erase?face_id={far['face_id']}", content=PROBE.read_bytes(),
                            headers=png)  # fmt: skip
        assert strict.status_code == 400  # not among the strict matches
        erased = admin.post(
            f"/api/privacy/persons/erase?expand=true&face_id={far['face_id']}", content=PROBE.read_bytes(), headers=png
        ).json()
        assert erased["face_ids"] == [far["face_id"]]
        created = admin.post("/api/privacy/optouts", content=PROBE.read_bytes(), headers=png).json()
        expanded = admin.get(f"/api/privacy/optouts/{created['id']}/expanded").json()
        assert len(expanded) == 3 and all(m["reason"] == "direct" for m in expanded)
        ids = [m["face_id"] for m in expanded]
        assert admin.post(f"/api/privacy/optouts/{created['id']}/erase?expand=true", json={}).status_code == 400
        done = admin.post(f"/api/privacy/optouts/{created['id']}/erase?expand=true", json={"face_ids": ids}).json()
        assert sorted(done["face_ids"]) == sorted(ids)
        [info] = admin.get("/api/privacy/optouts").json()
        assert info["templates"] == 4
    finally:
        served.close()


def test_cli_optout_expand_lists_then_erases_and_keeps_templates(tmp_path):
    data = tmp_path / "data"
    run_cli(data, "ingest", gallery(tmp_path), "-c", "people", *_policy_args(), "--workers", "0")
    added = run_cli(data, "optout", "add", PROBE, "--keep-photo", "--expand", "--json")
    body = json.loads(added.stdout)
    assert len(body["matches"]) == 4 and "via face" in added.stderr
    review = run_cli(data, "optout", "erase", body["id"], "--expand")  # no choice given: only the list
    assert "listed for review" in review.stderr and len(held_faces(data, "/bernadette/")) == 4
    run_cli(data, "optout", "erase", body["id"], "--expand", "--confirm-all", "--yes")
    assert held_faces(data, "/bernadette/") == {}
    [listed] = json.loads(run_cli(data, "optout", "list", "--json").stdout)
    assert listed["templates"] == 5 and listed["erased_at"]
