"""Several photos of one person, one search (issue 12, services/fusion.py): real models on the LFW test
photos, a real SQLite catalog, the Python API and the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import LFW_PEOPLE, POLICY, lfw, open_finder
from test_people import gallery, identity, run_cli

from facefinder.errors import FaceFinderError


@pytest.fixture
def finder(tmp_path, pipeline):
    """Photo 3 of each of the five people in 'lfw'; photos 1 and 2 are the probes."""
    ff = open_finder(tmp_path / "data", pipeline)
    ff.ingest(gallery(tmp_path, numbers=(3,)), collection="lfw", **POLICY)
    yield ff
    ff.close()


def test_two_photos_of_one_person_are_searched_as_one(finder):
    ff, name = finder, LFW_PEOPLE[0]
    [record] = ff.search(lfw(name, 1), lfw(name, 2), threshold=-1.0, same_person=True, case_id="K-9")
    assert record.probe == f"{lfw(name, 1)} + {lfw(name, 2)}" and record.face is None and record.box is None
    assert identity(record.candidates[0].source) == name
    singles = [ff.search(lfw(name, n), threshold=-1.0)[0].candidates for n in (1, 2)]
    for candidate in record.candidates:  # the fused score is the mean of the two single scores
        alone = [next(c.score for c in found if c.face_id == candidate.face_id) for found in singles]
        assert candidate.score == pytest.approx(sum(alone) / 2, abs=2e-4)
        assert candidate.score <= max(alone) + 1e-4
    entry = [e for e in ff.audit.entries() if e.action == "search" and e.case_id == "K-9"][-1]
    details = json.loads(entry.details)
    assert details["same_person"] is True and len(details["probe_sha256"].split()) == 2


def test_every_photo_must_show_a_face(finder, tmp_path):
    ff = finder
    blank = tmp_path / "blank.jpg"
    shutil.copy(lfw(LFW_PEOPLE[0], 1), blank)
    blank.write_bytes(b"not a photo")
    with pytest.raises(FaceFinderError, match="blank.jpg"):
        ff.search(lfw(LFW_PEOPLE[0], 1), blank, same_person=True)
    with pytest.raises(FaceFinderError, match="at least two"):
        ff.search(lfw(LFW_PEOPLE[0], 1), same_person=True)


def test_an_opted_out_probe_gets_nothing(finder):
    ff, name = finder, LFW_PEOPLE[1]
    ff.privacy.optout_add([lfw(name, 1)], reference="T-2")
    [record] = ff.search(lfw(name, 1), lfw(name, 2), threshold=-1.0, same_person=True)
    assert record.candidates == []


def test_same_person_on_the_command_line(finder):
    ff, name = finder, LFW_PEOPLE[2]
    data = ff.data_dir
    ff.close()
    out = run_cli(data, "search", lfw(name, 1), lfw(name, 2), "--same-person", "--json").stdout
    [line] = [json.loads(x) for x in out.splitlines()]
    assert line["candidates"] and identity(line["candidates"][0]["source"]) == name
    shown = run_cli(data, "search", lfw(name, 1), lfw(name, 2), "--same-person")
    assert "searched together" in shown.stdout + shown.stderr
