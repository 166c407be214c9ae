"""`facefinder evaluate`: the metrics on synthetic scores (exact values), the command on a small labelled
folder of real photos (JSON shape, misses counted, nested photo folders, the report, a saved calibration
that search then uses), and the demographic mode on a handful of UTKFace-named photos."""

from __future__ import annotations

import html.parser
import json
import shutil

import numpy as np
import pytest
from helpers import GALLERY, LFW, TESTS_DIR, save_jpeg
from PIL import Image
from typer.testing import CliRunner

from facefinder.errors import FaceFinderError
from facefinder.interfaces.cli import app
from facefinder.services.calibration import default_calibration, saved_calibration_path
from facefinder.services.evaluation import metrics
from facefinder.services.evaluation.demographics import (
    evaluate_demographics,
    group_rates,
    utkface_group,
    wilson_upper,
)
from facefinder.services.search import Searcher

UTKFACE = TESTS_DIR / "data" / "utkface"
PEOPLE = ["amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart"]


# ----- the metrics, on scores whose answers are known ---------------------------------------------------
def test_fold_accuracy_picks_each_folds_threshold_on_the_others():
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.75])
    same = np.array([True, True, True, False, False, False])
    assert metrics.best_threshold(scores, same, np.array([0.2, 0.3, 0.7, 0.75, 0.8])) == 0.7
    # fold 0 is judged at 0.8 (learnt on fold 1), which rejects its mated 0.7; fold 1 at 0.3 (learnt on
    # fold 0), which accepts its impostors at 0.3 and 0.75
    assert metrics.fold_accuracy(scores, same, np.array([0, 1, 0, 1, 0, 1])) == [2 / 3, 1 / 3]


def test_tar_at_fmr_says_when_there_are_too_few_impostors():
    impostor = np.arange(1000) / 1000 * 0.6  # 0 .. 0.5994
    genuine = np.array([0.9, 0.8, 0.5, metrics.MISS])
    measured = metrics.tar_at_fmr(genuine, impostor, 1e-3)
    assert (measured.tar, measured.threshold, measured.impostor_pairs) == (0.5, 0.5988, 1000)
    assert metrics.tar_at_fmr(genuine, impostor, 1e-4).to_dict() == {
        "fmr": 1e-4,
        "tar": None,
        "threshold": None,
        "impostor_pairs": 1000,
        "needed": 10000,
    }


def test_make_pairs_takes_every_mated_pair_and_as_many_seeded_non_mated():
    people = np.array(["a", "a", "a", "b", "b", "c"])
    pairs, same, fold = metrics.make_pairs(people, seed=3)
    assert pairs[same].tolist() == [[0, 1], [0, 2], [1, 2], [3, 4]]
    non_mated = pairs[~same]
    assert len(non_mated) == 4 and len({tuple(p) for p in non_mated.tolist()}) == 4
    assert all(i < j and people[i] != people[j] for i, j in non_mated)
    assert sorted(np.unique(fold).tolist()) == [0, 1, 2, 3]  # fewer mated pairs than ten: four folds
    again = metrics.make_pairs(people, seed=3)
    assert np.array_equal(again[0], pairs) and np.array_equal(again[2], fold)
    # with fewer non-mated pairs than mated ones, every non-mated pair is taken
    assert (~metrics.make_pairs(np.array(["a", "a", "a", "b"]))[1]).sum() == 3


def test_all_pair_scores_count_misses_in_mated_pairs_only():
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 0.0]])
    found = np.array([True, True, True, False])
    genuine, impostor = metrics.all_pair_scores(emb, found, np.array(["a", "a", "b", "b"]), block=2)
    assert genuine.tolist() == [pytest.approx(0.6), metrics.MISS]
    assert sorted(impostor.tolist()) == [pytest.approx(0.0), pytest.approx(0.8)]


def test_identification_ranks_misses_last_and_distractors_raise_the_threshold():
    people = np.array(["A", "A", "B", "B", "C", "C", "D", "D"])
    emb = np.repeat(np.eye(4), 2, axis=0)  # each person's two photos are one direction
    found = np.ones(8, bool)
    found[3] = False  # B's probe: no face found
    plain = metrics.identification(people, emb, found, fpir=0.01)
    assert plain.closed_set == {"gallery": 4, "distractors": 0, "probes": 4, "rank1": 0.75, "rank10": 0.75}
    assert plain.open_set == {
        "gallery": 2,  # B and D held out
        "distractors": 0,
        "mated_probes": 2,
        "non_mated_probes": 4,
        "fpir": 0.01,
        "threshold": 0.0,
        "fpir_measured": False,  # four non-mated probes cannot measure 1%
        "fnir": 0.0,
    }
    assert len(plain.impostor) == 3 * 3  # 3 probes with a face x 3 other people's gallery faces
    with_b = metrics.identification(people, emb, found, distractors=np.eye(4)[[1]], fpir=0.01)
    assert with_b.closed_set["rank1"] == 0.75 and with_b.closed_set["distractors"] == 1
    assert with_b.open_set["threshold"] == 1.0 and with_b.open_set["fnir"] == 1.0
    assert metrics.fpir_threshold(np.arange(200) / 200, 0.01) == (0.985, True)


def test_demographic_counts_and_intervals():
    assert utkface_group("30_1_2_20170104020413511.jpg.chip.jpg") == 7
    assert utkface_group("30_0_0_x.jpg") == 0 and utkface_group("30_2_0_x.jpg") is None
    assert utkface_group("photo.jpg") is None
    assert wilson_upper(0, 100) == pytest.approx(1.959964**2 / (100 + 1.959964**2))
    assert wilson_upper(0, 0) is None
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    counted = group_rates(emb, np.array([0, 0, 5, 5]), threshold=0.5, block=3)
    pairs, matches = counted["pairs"], counted["false_matches"]
    assert (pairs[0, 0], pairs[5, 5], pairs[0, 5], pairs.sum()) == (1, 1, 4, 6)
    assert (matches[0, 0], matches[5, 5], matches.sum()) == (1, 1, 2)
    assert counted["top"][0][0] == pytest.approx(1.0)


# ----- the command on real photos --------------------------------------------------------------------------
@pytest.fixture
def labelled(tmp_path):
    """8 people x 3 demo photos, one person's photo in a nested folder, and a blank photo (no face)."""
    folder = tmp_path / "people"
    for person in PEOPLE:
        (folder / person).mkdir(parents=True)
        for photo in sorted((GALLERY / person).iterdir())[:3]:
            shutil.copy(photo, folder / person / photo.name)
    (folder / "raj" / "frontal").mkdir()
    shutil.move(folder / "raj" / "raj2.png", folder / "raj" / "frontal" / "raj2.png")
    save_jpeg(np.full((150, 150, 3), 128, np.uint8), folder / "amy" / "blank.jpg")
    return folder


@pytest.fixture
def distractors(tmp_path):
    """Three LFW photos of people not in the labelled folder."""
    folder = tmp_path / "distractors"
    folder.mkdir()
    for person in ("Tony_Blair", "Hugo_Chavez", "Colin_Powell"):
        shutil.copy(LFW / person / f"{person}_0001.jpg", folder)
    return folder


def invoke(*args, expect: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
    return result


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_evaluate_json_report_and_saved_calibration(labelled, distractors, tmp_path, make_finder):
    data, report = tmp_path / "data", tmp_path / "report"
    result = invoke(
        "--data-dir", data, "evaluate", labelled, "--json", "--report", report,
        "--distractors", distractors, "--fpir", "0.25", "--save-calibration",
    )  # fmt: skip
    out = json.loads(result.stdout)
    assert (out["photos"], out["people"], out["no_face"], out["unreadable"]) == (25, 8, 1, 0)
    assert out["no_face_examples"] == ["amy/blank.jpg"] and out["distractor_faces"] == 3
    assert out["by_subfolder"] == {".": {"photos": 24, "no_face": 1}, "frontal": {"photos": 1, "no_face": 0}}
    v = out["verification"]
    assert (v["mated_pairs"], v["all_mated_pairs"], v["folds"]) == (27, 27, 10)  # 7 x 3 + amy's 4 photos: 6
    assert v["pairs_missing_a_face"] >= 3 and 0.5 < v["accuracy_mean"] <= 1
    assert [row["fmr"] for row in v["tar_at_fmr"]] == [1e-3, 1e-4]
    assert v["all_non_mated_pairs"] == 276 - 24  # pairs of the 24 faces found, less the mated ones
    assert all(row["tar"] is None for row in v["tar_at_fmr"])
    closed, open_set = out["identification"]["closed_set"], out["identification"]["open_set"]
    assert (closed["gallery"], closed["distractors"], closed["probes"]) == (8, 3, 17)
    assert closed["rank1"] <= 16 / 17  # the blank probe is a miss
    assert open_set["fpir"] == 0.25 and open_set["fpir_measured"] and open_set["non_mated_probes"] == 12
    assert any("TAR at FMR 0.0001 not measured" in note for note in out["notes"])

    assert json.loads((report / "evaluation.json").read_text()) == out
    for picture in ("roc.png", "scores.png"):
        with Image.open(report / picture) as image:
            assert image.format == "PNG" and image.size[0] > 100
    page = _Images()
    page.feed((report / "report.html").read_text())
    assert sorted(page.sources) == ["roc.png", "scores.png"]

    model_id = out["model_id"]
    saved = default_calibration(model_id, data)
    assert out["calibration_saved"] == str(data / "calibrations" / f"{model_id}.json")
    assert saved.threshold == round(open_set["threshold"], 4) and "facefinder evaluate" in saved.source
    assert default_calibration(model_id, tmp_path / "elsewhere").source.startswith("benchmarks/accuracy.py")
    assert default_calibration().source.startswith("benchmarks/accuracy.py")  # no model named: the shipped one
    ff = make_finder(data)
    assert Searcher(ff.store, ff.pipeline).calibration is saved
    assert [e.action for e in ff.audit.entries()][-1] == "calibration.save"


def test_a_calibration_is_not_saved_from_an_unmeasured_threshold(tmp_path):
    result = invoke("--data-dir", tmp_path / "data", "evaluate", LFW, "--save-calibration", "--json", expect=2)
    assert json.loads(result.stdout)["calibration_saved"] is None  # the figures still come out
    assert "calibration not saved: FPIR 0.01 was not measured" in result.stderr
    assert not (tmp_path / "data" / "calibrations").exists()


def test_a_damaged_saved_calibration_is_an_error_not_a_silent_fallback(tmp_path):
    path = saved_calibration_path("some+model", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"model_id": "some+model"}')
    with pytest.raises(FaceFinderError, match="not a calibration"):
        default_calibration("some+model", tmp_path)
    assert default_calibration("other+model", tmp_path) is default_calibration()


def test_option_errors_are_one_line(tmp_path):
    assert "--threshold is for --demographics" in invoke("evaluate", LFW, "--threshold", "0.5", expect=2).stderr
    assert "--fpir 1.5" in invoke("evaluate", LFW, "--fpir", "1.5", expect=2).stderr
    assert "known schemes" in invoke("evaluate", UTKFACE, "--demographics", "fairface", expect=2).stderr
    assert "not a folder" in invoke("evaluate", tmp_path / "missing", expect=2).stderr


# ----- demographics ----------------------------------------------------------------------------------------
def test_demographics_counts_pairs_within_and_across_groups(tmp_path, pipeline):
    folder = tmp_path / "utk"
    shutil.copytree(UTKFACE, folder)
    shutil.copy(folder / "30_0_0_20170104164938536.jpg.chip.jpg", folder / "40_1_4_20170101000000000.jpg.chip.jpg")
    shutil.copy(LFW / "Tony_Blair" / "Tony_Blair_0001.jpg", folder / "unlabelled.jpg")
    result = evaluate_demographics(folder, pipeline, threshold=0.3, threshold_source="test")
    assert (result["photos"], result["identical_copies"], result["unlabelled"], result["labelled"]) == (10, 1, 1, 8)
    assert result["identical_copies_examples"][0]["of"] == "30_0_0_20170104164938536.jpg.chip.jpg"
    assert result["faces_found"] == 8 and len(result["groups"]) == 10
    cells = {(g["gender"], g["group"]): g for g in result["groups"]}
    for key in [("male", "White"), ("female", "White"), ("male", "Asian"), ("female", "Asian")]:
        assert (cells[key]["faces"], cells[key]["pairs"]) == (2, 1)
    assert cells[("male", "Black")]["pairs"] == 0 and cells[("male", "Black")]["fmr"] is None
    assert (result["within_groups"]["pairs"], result["across_groups"]["pairs"], result["all_pairs"]["pairs"]) == (
        4,
        24,
        28,
    )
    above = sum(1 for p in result["highest_pairs"] if p["score"] >= 0.3)  # the 20 highest of the 28 pairs
    assert above < 20 and result["all_pairs"]["false_matches"] == above
    assert len(result["highest_pairs"]) == 20


def test_demographics_command_uses_the_calibrated_threshold(tmp_path):
    report = tmp_path / "report"
    result = invoke("--data-dir", tmp_path / "data", "evaluate", UTKFACE, "--demographics", "utkface", "--json",
                    "--report", report)  # fmt: skip
    out = json.loads(result.stdout)
    assert out["threshold"] == default_calibration().threshold and out["scheme"] == "utkface"
    assert {"groups", "within_groups", "across_groups", "all_pairs", "highest_pairs", "notes"} <= out.keys()
    assert any("authors' estimates" in note for note in out["notes"])
    with Image.open(report / "demographics.png") as image:
        assert image.format == "PNG"
    assert "False match rate by demographic group" in (report / "report.html").read_text()
    table = invoke("--data-dir", tmp_path / "data", "evaluate", UTKFACE, "--demographics", "utkface").stdout
    assert "female" in table and "across" in table
