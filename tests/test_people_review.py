"""The review queue and drawn faces (issue 13): real models on the 15 LFW test photos (5 people x 3) and
a group photo of strangers, a real catalog on SQLite and on PostgreSQL (the ``backend`` fixture), the FAISS index, and the real API.

The queue holds unassigned faces (with the nearest person suggested) and clustering's doubtful ones;
assigning takes a face out of it, rejecting keeps clustering from putting it back (incremental and full
runs); a face drawn by hand is aligned on landmarks when the box holds a face (on the box itself
otherwise), embedded like ingest does (the index finds it), marked as drawn and audited; the person
page's facts; and over the API, roles and grants as for the other people endpoints.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import GROUP, POLICY, lfw, open_finder, save_jpeg
from service_helpers import COLLECTION, assert_error, backend, make_served  # noqa: F401
from sqlalchemy import func, select
from test_people import by_identity, gallery

from facefinder.errors import FieldError, NotFound
from facefinder.services.audit import as_dict
from facefinder.storage.catalog import FaceRecord, ImageRecord
from facefinder.storage.people import DrawnFace, FaceRejection, PersonFace


@pytest.fixture
def ff(backend, tmp_path, pipeline):
    """15 LFW photos clustered into five people, then a group photo of three strangers (unassigned), on
    SQLite and on PostgreSQL."""
    finder = open_finder(tmp_path / "data", pipeline, catalog_url=backend.new_url())
    finder.ingest(gallery(tmp_path), collection="lfw", **POLICY)
    assert finder.people.cluster("lfw").people == 5
    group = tmp_path / "group"
    group.mkdir()
    shutil.copy(GROUP / "sample1.jpg", group / "sample1.jpg")
    finder.ingest(group, collection="lfw")
    finder.people.cluster("lfw")
    yield finder
    finder.close()


def face_of(ff, face_id: int) -> FaceRecord:
    return ff.store.faces([face_id])[face_id][0]


def test_queue_assign_and_reject_stick_through_clustering(ff):
    review = ff.people_review
    queue = review.queue("lfw")
    strangers = [i.face_id for i in queue.items if i.kind == "unassigned"]
    assert queue.unassigned == 3 and len(strangers) == 3 and queue.low_confidence == 0
    doubtful = review.queue("lfw", below=1.0)  # every clustering assignment is below 1.0
    assert doubtful.low_confidence == 15 and [i.kind for i in doubtful.items[:15]] == ["low_confidence"] * 15
    assert [i.score for i in doubtful.items[:15]] == sorted(i.score for i in doubtful.items[:15])
    assert len(review.queue("lfw", below=1.0, offset=14, limit=2).items) == 2  # the page spans both parts

    bush = by_identity(ff.people.list("lfw", members=True))["George_W_Bush"]
    kept, taken = bush.members[0].face_id, bush.members[1].face_id
    person = review.assign(kept, bush.person_id, actor="ivan")  # a doubtful assignment confirmed
    assert person.faces == 3 and kept not in {i.face_id for i in review.queue("lfw", below=1.0).items}

    review.reject(taken, bush.person_id, actor="ivan")  # not this person: out of Bush, never back in
    assert ff.people.show(bush.person_id).faces == 2
    item = next(i for i in review.queue("lfw").items if i.face_id == taken)
    assert item.kind == "unassigned" and item.suggested_person_id != bush.person_id
    for full in (False, True):
        ff.people.cluster("lfw", full=full)
        with ff.store.catalog.session() as session:
            assert session.get(PersonFace, taken) is None or session.get(PersonFace, taken).person_id != bush.person_id

    untouched = next(p for p in ff.people.list("lfw", members=True) if p.person_id != bush.person_id)
    review.reject(untouched.members[0].face_id, untouched.person_id, actor="ivan")  # a "no" is a human's touch:
    ff.people.cluster("lfw", full=True)  # a full run keeps the person (and the "no"), so the face stays out
    assert untouched.members[0].face_id not in {m.face_id for m in ff.people.show(untouched.person_id).members}
    other = next(p for p in ff.people.list("lfw") if p.person_id != bush.person_id)
    ff.people.merge(other.person_id, bush.person_id)  # the "no" carries over to the merged person
    with ff.store.catalog.session() as session:
        assert session.scalars(select(FaceRejection.person_id).where(FaceRejection.face_id == taken)).all() == [
            other.person_id
        ]
    bush = other
    review.reject(strangers[0], None, actor="ivan")  # not a person to group: out of the queue for good
    assert strangers[0] not in {i.face_id for i in review.queue("lfw").items}
    assert ff.people.cluster("lfw", full=True).rejected == 1
    new = review.assign(strangers[1], None, actor="inga")  # a new person of one face
    assert new.faces == 1 and new.members[0].assigned_by == "inga"
    moved = review.assign(strangers[2], new.person_id, actor="inga")
    assert moved.faces == 2 and -1.0 <= moved.members[1].score <= 1.0
    with pytest.raises(FieldError):
        review.queue("lfw", below=0)
    with pytest.raises(NotFound):
        review.assign(999_999, None)
    actions = [(e.actor, e.action) for e in ff.audit.entries() if e.action in ("people.assign", "people.reject")]
    assert actions == [
        ("ivan", "people.assign"),
        ("ivan", "people.reject"),
        ("ivan", "people.reject"),
        ("ivan", "people.reject"),
        ("inga", "people.assign"),
        ("inga", "people.assign"),
    ]
    with ff.store.catalog.session() as session:
        assert {r.person_id for r in session.scalars(select(FaceRejection))} >= {bush.person_id, None}


def test_a_drawn_face_is_aligned_embedded_indexed_and_marked(ff):
    review = ff.people_review
    bush = by_identity(ff.people.list("lfw", members=True))["George_W_Bush"]
    member = bush.members[0]
    detected = face_of(ff, member.face_id)
    x1, y1, x2, y2 = detected.box
    pad = 0.1 * (x2 - x1)
    face_id, aligned_by, person = review.draw(
        member.image_id, [x1 - pad, y1 - pad, x2 + pad, y2 + pad], person_id=bush.person_id, actor="ivan"
    )
    assert aligned_by == "landmarks" and person is not None and person.faces == 4
    drawn = face_of(ff, face_id)
    cosine = float(np.frombuffer(drawn.embedding, np.float32) @ np.frombuffer(detected.embedding, np.float32))
    assert cosine > 0.8, cosine  # the same face, aligned on the landmarks found in the box
    hits = ff.store.search([drawn.collection_id], np.frombuffer(drawn.embedding, np.float32)[None], 3)[0]
    assert hits[0][0] == face_id  # in the vector index, through the journal
    with ff.store.catalog.session() as session:
        mark = session.get(DrawnFace, face_id)
        assert (mark.added_by, mark.aligned_by) == ("ivan", "landmarks")

    corner, _, _ = review.draw(member.image_id, [0, 0, 40, 40], actor="ivan")  # background: no face in it
    with ff.store.catalog.session() as session:
        assert session.get(DrawnFace, corner).aligned_by == "box"
    assert next(i for i in review.queue("lfw").items if i.face_id == corner).drawn_by == "ivan"
    with pytest.raises(FieldError):
        review.draw(member.image_id, [10, 10, 15, 15])
    entry = as_dict([e for e in ff.audit.entries() if e.action == "people.face.draw"][0])
    assert entry["actor"] == "ivan" and entry["details"]["face_id"] == face_id
    assert entry["details"]["aligned_by"] == "landmarks" and entry["details"]["image_id"] == member.image_id

    ff.delete_image(member.image_id)  # erasure takes the drawn faces and their marks with the photo
    with ff.store.catalog.session() as session:
        assert session.get(DrawnFace, face_id) is None and session.get(DrawnFace, corner) is None


def test_an_opted_out_face_is_neither_drawn_nor_shown(ff):
    """Drawing adds a face as ingest does, so a face on the opt-out list is refused, not stored; and the
    photo of a person on the list is withheld from the drawing page, as a search result's photo is."""
    review = ff.people_review
    blair = by_identity(ff.people.list("lfw", members=True))["Tony_Blair"]
    member = blair.members[0]
    assert review.photo(member.image_id)[:2] == b"\xff\xd8"  # a JPEG while they are not on the list
    ff.privacy.optout_add([lfw("Tony_Blair", 1)], reference="T-3")
    x1, y1, x2, y2 = face_of(ff, member.face_id).box
    with ff.store.catalog.session() as session:
        before = session.scalar(select(func.count()).select_from(FaceRecord))
    with pytest.raises(FieldError, match="opt-out list"):
        review.draw(member.image_id, [x1, y1, x2, y2], actor="ivan")
    with ff.store.catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(FaceRecord)) == before
    with pytest.raises(NotFound):
        review.photo(member.image_id)


def test_person_details_photos_times_and_company(ff):
    from facefinder.services.people.details import person_details

    group_faces = [i.face_id for i in ff.people_review.queue("lfw").items]
    first = ff.people_review.assign(group_faces[0], None, actor="ivan")
    second = ff.people_review.assign(group_faces[1], None, actor="ivan")
    details = person_details(ff.people, first.person_id)
    assert [s.person_id for s in details.seen_with] == [second.person_id]
    assert details.seen_with[0].photos == [details.photos[0].image_id]
    assert details.undated == 1 and details.first_captured is None
    bush = by_identity(ff.people.list("lfw", members=True))["George_W_Bush"]
    assert (
        len(person_details(ff.people, bush.person_id).photos) == 3
        and not person_details(ff.people, bush.person_id).seen_with
    )


# ----- the API ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    app = make_served(tmp_path_factory.mktemp(f"people-review-{backend.name}") / "data", pipeline, backend.new_url())
    assert app.client("ivan").post(f"/api/collections/{COLLECTION}/people/cluster").status_code == 200
    yield app
    app.close()


def test_review_api_roles_grants_and_audit(served):
    clients = {user: served.client(user) for user in ("admin", "ivan", "olga", "aud")}
    queue = f"/api/collections/{COLLECTION}/people/review"
    read = clients["aud"].get(queue, params={"below": 1.0})
    assert read.status_code == 200 and read.json()["low_confidence"] == 10
    assert_error(clients["olga"].get(queue), 403, "forbidden")
    assert_error(clients["ivan"].get(queue, params={"below": 0}), 422)
    assert clients["ivan"].get(queue).json()["items"] == []  # clustering left nothing open or doubtful
    item = read.json()["items"][0]
    face, person, image = item["face_id"], item["person_id"], item["image_id"]
    for user, status in {"aud": 403, "olga": 403, "ivan": 200}.items():
        response = clients[user].get(f"/api/people/faces/{face}/thumbnail")
        assert response.status_code == status, (user, response.text)
    assert clients["aud"].get(f"/api/people/images/{image}/photo").status_code == 403
    photo = clients["ivan"].get(f"/api/people/images/{image}/photo")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    faces = clients["aud"].get(f"/api/people/images/{image}/faces").json()
    assert [f["face_id"] for f in faces["faces"]] == [face] and faces["width"] > 0

    details = clients["aud"].get(f"/api/people/{person}/details")
    assert details.status_code == 200 and details.json()["person"]["faces"] == 2
    assert_error(clients["olga"].get(f"/api/people/{person}/details"), 403, "forbidden")

    for user in ("aud", "olga"):
        assert_error(clients[user].post(f"/api/people/faces/{face}/assign", json={}), 403, "forbidden")
        assert_error(clients[user].post(f"/api/people/faces/{face}/reject", json={}), 403, "forbidden")
        assert_error(clients[user].post(f"/api/people/images/{image}/faces", json={"box": [0, 0, 50, 50]}), 403)
    ivan = clients["ivan"]
    assert ivan.post(f"/api/people/faces/{face}/reject", json={"person_id": person}).status_code == 204
    moved = ivan.post(f"/api/people/faces/{face}/assign", json={"person_id": None})
    assert moved.status_code == 200 and moved.json()["faces"] == 1
    x1, y1, x2, y2 = faces["faces"][0]["box"]
    drawn = ivan.post(f"/api/people/images/{image}/faces", json={"box": [x1, y1, x2, y2], "person_id": person})
    assert drawn.status_code == 201, drawn.text
    assert drawn.json()["aligned_by"] == "landmarks" and drawn.json()["person"]["person_id"] == person
    assert_error(ivan.post(f"/api/people/images/{image}/faces", json={"box": [0, 0, 1]}), 422)
    assert_error(ivan.post("/api/people/faces/999999/assign", json={}), 404, "not_found")

    entries = served.service.audit.entries(actor="ivan")
    assert [e.action for e in entries if e.action.startswith(("people.assign", "people.reject", "people.face"))] == [
        "people.reject",
        "people.assign",
        "people.face.draw",
        "people.assign",
    ]
    assert {"people.review", "people.review.faces.view", "people.photo.view"} <= {e.action for e in entries}
    seen_by_auditor = {e.action for e in served.service.audit.entries(actor="aud")}
    assert "people.review.faces.view" not in seen_by_auditor and "people.photo.view" not in seen_by_auditor


def test_people_pages_render_by_role(served):
    ivan, _ = served.browser("ivan")
    aud, _ = served.browser("aud")
    olga, _ = served.browser("olga")
    people = served.client("admin").get(f"/api/collections/{COLLECTION}/people", params={"members": True}).json()
    person = people[0]
    image = person["members"][0]["image_id"]
    pages = [
        f"/collections/{COLLECTION}/people",
        f"/people/{person['person_id']}",
        f"/collections/{COLLECTION}/people/review?below=1.0",
    ]
    for page in pages:
        mine, audited = ivan.get(page), aud.get(page)
        assert mine.status_code == 200 and audited.status_code == 200, (page, mine.text[:500], audited.text[:500])
        assert "/thumbnail" in mine.text and "/thumbnail" not in audited.text  # auditors never get a face image
        assert "data-api" in mine.text and "data-api" not in audited.text  # nor a button that changes anything
        assert olga.get(page).status_code == 403
    assert "Seen with" in ivan.get(f"/people/{person['person_id']}").text
    photo = ivan.get(f"/photos/{image}")
    assert photo.status_code == 200 and f'data-face="{person["members"][0]["face_id"]}"' in photo.text
    assert aud.get(f"/photos/{image}").status_code == 403


def test_a_face_drawn_on_a_photo_where_none_was_found(tmp_path, pipeline):
    """A photo in which no face was found (a plain wall) takes a drawn face: aligned by the box, indexed."""
    ff = open_finder(tmp_path / "data", pipeline)
    folder = tmp_path / "plain"
    folder.mkdir()
    save_jpeg(np.full((200, 200, 3), 180, np.uint8), folder / "wall.jpg")
    report = ff.ingest(folder, collection="walls", **POLICY)
    assert report.ingested == 1 and report.faces == 0
    with ff.store.catalog.session() as session:
        image_id = session.scalar(select(ImageRecord.id))
    face_id, aligned_by, person = ff.people_review.draw(image_id, [50, 50, 150, 150], actor="ivan")
    assert aligned_by == "box" and person is None
    assert ff.store.index_size(ff.store.collection("walls").id) == 1
    ff.close()
