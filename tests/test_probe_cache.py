"""Analysed probes are held per user: one user's burst of uploads never evicts a colleague's probe, a
user's ninth probe evicts only their own oldest, and a probe that is gone says to upload the photo
again. The caps on users and bytes keep the memory bounded. Through the real app (on SQLite and
PostgreSQL) and on the cache itself."""

from __future__ import annotations

import numpy as np
import pytest
from service_helpers import assert_error, backend, make_served, probe_bytes  # noqa: F401

from facefinder.errors import NotFound
from facefinder.services.server.accounts import Principal
from facefinder.services.server.probes import PROBE_GONE, Probe, ProbeCache, ProbeFaceData


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    app = make_served(tmp_path_factory.mktemp(f"probes-{backend.name}") / "data", pipeline, backend.new_url())
    yield app
    app.close()


def upload(client) -> str:
    response = client.post("/api/probes", files={"photo": ("probe.jpg", probe_bytes(), "image/jpeg")})
    assert response.status_code == 201, response.text
    return response.json()["probe_id"]


def search(client, probe_id: str):
    body = {
        "probe_id": probe_id,
        "face": 0,
        "case_id": "PROBES-1",
        "purpose": "check the probe slots",
        "category": "internal test or audit",
    }
    return client.post("/api/searches", json=body)


def test_a_burst_of_one_user_leaves_the_others_probe(served):
    ivan, inga = served.client("ivan"), served.client("inga")
    mine = upload(ivan)
    for _ in range(70):  # more than the old shared pool of 64
        upload(inga)
    assert search(ivan, mine).status_code == 201
    assert ivan.get(f"/api/probes/{mine}/faces/0/thumbnail").status_code == 200
    inga_id = served.service.accounts.user("inga").id
    assert len(served.service.cases.probes.held(Principal(inga_id, "inga", "investigator"))) == 8


def test_the_ninth_probe_evicts_only_the_owners_oldest(served):
    ivan, inga = served.client("ivan"), served.client("inga")
    theirs = upload(inga)
    mine = [upload(ivan) for _ in range(9)]
    error = assert_error(search(ivan, mine[0]), 404, "not_found")
    assert error["message"].startswith(PROBE_GONE) and "the newest 8 per user" in error["message"]
    error = assert_error(ivan.get(f"/api/probes/{mine[0]}/faces/0/thumbnail"), 404, "not_found")
    assert error["message"].startswith(PROBE_GONE)
    for probe_id in mine[1:]:
        assert ivan.get(f"/api/probes/{probe_id}/faces/0/thumbnail").status_code == 200
    assert search(inga, theirs).status_code == 201
    # someone else's probe is as gone as an expired one: nothing says it exists
    assert_error(search(inga, mine[-1]), 404, "not_found")
    assert search(ivan, mine[-1]).status_code == 201


# ----- the cache itself ----------------------------------------------------------------------------------
def probe(probe_id: str, owner: int, photo_bytes: int = 0) -> Probe:
    face = ProbeFaceData([0, 0, 10, 10], 0.9, np.zeros(192, np.float32), b"\xff\xd8" + b"0" * 1000)
    return Probe(probe_id, owner, "0" * 64, 10, 10, [face], photo=b"x" * photo_bytes or None)


def user(number: int) -> Principal:
    return Principal(number, f"user{number}", "investigator")


def test_per_user_slots_and_the_cap_on_users():
    cache = ProbeCache(per_user=3, max_users=2)
    for i in range(5):
        cache.put(probe(f"a{i}", 1))
    assert cache.held(user(1)) == ["a2", "a3", "a4"]
    cache.put(probe("b0", 2))
    cache.put(probe("a5", 1))  # user 1 is now the most recent; user 2 the one idle longest
    cache.put(probe("c0", 3))  # a third user: user 2 is forgotten, user 1 keeps every slot
    assert cache.held(user(1)) == ["a3", "a4", "a5"] and cache.held(user(2)) == [] and cache.held(user(3)) == ["c0"]
    with pytest.raises(NotFound, match=PROBE_GONE):
        cache.get(user(2), "b0")
    with pytest.raises(NotFound, match=PROBE_GONE):
        cache.get(user(3), "a5")  # not the owner


def test_the_byte_cap_sheds_the_heaviest_users_oldest_first():
    small = probe("s", 1).size
    cache = ProbeCache(per_user=8, max_bytes=small * 2 + 30_000)
    cache.put(probe("s", 1))
    cache.put(probe("big0", 2, photo_bytes=10_000))
    cache.put(probe("big1", 2, photo_bytes=10_000))
    cache.put(probe("big2", 2, photo_bytes=10_000))  # over the cap: user 2 holds the most, their oldest goes
    assert cache.held(user(1)) == ["s"] and cache.held(user(2)) == ["big1", "big2"]
    cache.put(probe("huge", 3, photo_bytes=100_000))  # alone over the cap: everything else goes, it stays
    assert cache.held(user(3)) == ["huge"] and cache.held(user(1)) == [] and cache.held(user(2)) == []


def test_probes_expire():
    cache = ProbeCache(ttl=-1.0)  # older than its ttl as soon as it is put
    cache.put(probe("old", 1))
    with pytest.raises(NotFound, match="upload the photo again"):
        cache.get(user(1), "old")
    assert cache._users == {} and cache._bytes == 0
