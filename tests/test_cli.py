"""The command line: JSON output formats, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import GROUP, GROUP_FACES, LFW, LFW_PEOPLE, POLICY_ARGS, PROBES, cli_command, lfw, save_jpeg
from typer.testing import CliRunner

from facefinder.interfaces.cli import app

PROBE_KEYS = {
    "probe_sha256",
    "probe",
    "face",
    "box",
    "quality",
    "candidates",
    "match",
    "error",
    "video_time",
    "threshold",
}
CANDIDATE_KEYS = {
    "rank",
    "expected_false_candidates",
    "near_miss",
    "face_id",
    "score",
    "false_match_rate",
    "band",
    "collection",
    "image_id",
    "source",
    "box",
    "quality",
    "provenance",
    "video_time",  # a face from a video: when it was seen; None for a photo's face
    "track",
}


@pytest.fixture
def cli(tmp_path):
    """Run the CLI in-process on this test's data dir: cli("search", ...) -> result."""
    runner = CliRunner()
    data = tmp_path / "cli-data"

    def run(*args: str | os.PathLike, expect: int = 0):
        result = runner.invoke(app, ["--data-dir", str(data), *map(str, args)])
        assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr, result.exception)
        return result

    run.data = data
    return run


@pytest.fixture
def lfw_cli(cli):
    result = cli("ingest", LFW, "--collection", "lfw", *POLICY_ARGS, "--workers", "0", "--json")
    report = json.loads(result.stdout)
    assert (report["ingested"], report["faces"], report["failures"]) == (15, 15, [])
    return cli


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_ingest_json_report(cli, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(lfw("Tony_Blair", 1), folder / "a.jpg")
    (folder / "broken.jpg").write_bytes(b"\x00" * 100)
    report = json.loads(cli("ingest", folder, "-c", "people", *POLICY_ARGS, "--workers", "0", "--json").stdout)
    assert report["collection"] == "people"
    assert (report["seen"], report["ingested"], report["faces"], report["duplicates"]) == (2, 1, 1, 0)
    assert report["failures"] == [
        {"source": str(folder / "broken.jpg"), "reason": "not-an-image", "detail": "unrecognised format"}
    ]
    assert report["photos_per_second"] > 0 and "stage_seconds" in report
    # the human summary goes to stderr; stdout stays empty without --json
    human = cli("ingest", folder, "-c", "people", *POLICY_ARGS, "--workers", "0")
    assert human.stdout == ""
    assert "0 photos ingested" in human.stderr and "1 duplicates skipped" in human.stderr
    assert "broken.jpg" in human.stderr and "not-an-image" in human.stderr


def test_collections_json(lfw_cli):
    [row] = json.loads(lfw_cli("collections", "--json").stdout)
    assert row["name"] == "lfw"
    assert (row["images"], row["faces"], row["failures"]) == (15, 15, 0)
    assert row["model_id"] == "blazeface_full_range+mobilefacenet"
    assert set(row) == {
        "id",
        "name",
        "description",
        "model_id",
        "images",
        "faces",
        "failures",
        "purpose",
        "legal_basis",
        "retention_days",
    }


def test_collections_json_when_empty(cli):
    assert json.loads(cli("collections", "--json").stdout) == []


def test_search_json_lines(lfw_cli):
    result = lfw_cli("search", lfw("Colin_Powell", 2), "--json", "--top-k", "5")
    [record] = json_lines(result.stdout)
    assert set(record) == PROBE_KEYS
    assert record["probe"] == str(lfw("Colin_Powell", 2))
    assert record["face"] == 0 and record["error"] is None and record["match"] is True
    assert len(record["box"]) == 4 and 0 < record["quality"] <= 1
    candidates = record["candidates"]
    assert [c["rank"] for c in candidates] == list(range(1, len(candidates) + 1))
    assert 2 <= len(candidates) <= 3
    for c in candidates:
        assert set(c) == CANDIDATE_KEYS
        assert Path(c["source"]).parent.name == "Colin_Powell"
        assert c["collection"] == "lfw" and 0 < c["false_match_rate"] < 1
        assert set(c["provenance"]) == {"source_url", "captured_at", "case_id", "consent_id", "notes"}
    assert candidates[0]["source"].endswith("Colin_Powell_0002.jpg") and candidates[0]["score"] > 0.99


def test_search_a_folder_of_probes(lfw_cli, tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    shutil.copy(GROUP / "sample4.jpg", probes / "1-group.jpg")
    for person in LFW_PEOPLE:
        shutil.copy(lfw(person, 3), probes / f"2-{person}.jpg")
    save_jpeg(np.full((100, 100, 3), 30, np.uint8), probes / "3-dark.jpg")
    (probes / "4-broken.png").write_text("not a png")
    records = json_lines(lfw_cli("search", probes, "--json", "-k", "3").stdout)
    assert all(set(r) == PROBE_KEYS for r in records)
    by_probe: dict[str, list[dict]] = {}
    for r in records:
        by_probe.setdefault(Path(r["probe"]).name, []).append(r)
    assert len(by_probe["1-group.jpg"]) == GROUP_FACES["sample4.jpg"]
    assert [r["face"] for r in by_probe["1-group.jpg"]] == [0, 1, 2, 3]
    assert not any(r["match"] for r in by_probe["1-group.jpg"])  # no one in the group photo is in LFW
    for person in LFW_PEOPLE:
        [r] = by_probe[f"2-{person}.jpg"]
        assert r["match"] and {Path(c["source"]).parent.name for c in r["candidates"]} == {person}
    [dark] = by_probe["3-dark.jpg"]
    assert (dark["error"], dark["face"], dark["box"]) == ("no-face", None, None)
    assert (dark["candidates"], dark["match"]) == ([], False)
    [broken] = by_probe["4-broken.png"]
    assert broken["error"] == "not-an-image" and broken["match"] is False
    assert len(records) == 4 + 5 + 1 + 1


def test_search_human_output(lfw_cli):
    hit = lfw_cli("search", lfw("Hugo_Chavez", 1), "-k", "2")
    assert "Hugo_Chavez_0001.jpg" in hit.stdout and "lfw" in hit.stdout
    miss = lfw_cli("search", PROBES / "amy_amy5.png")
    assert "no match" in miss.stderr and miss.stdout == ""


def test_unknown_collection_exits_2_with_one_line(lfw_cli):
    result = lfw_cli("search", lfw("Tony_Blair", 1), "-c", "nosuch", "--json", expect=2)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == "error: collection 'nosuch' does not exist"
    failures = lfw_cli("failures", "nosuch", expect=2)
    assert failures.stderr.strip() == "error: collection 'nosuch' does not exist"


def test_errors_with_long_paths_stay_on_one_line(cli, tmp_path):
    deep = tmp_path / ("very-long-folder-name-" * 4) / "and-another-long-one" / "missing-recognizer-model.onnx"
    result = cli("--recognizer", deep, "ingest", LFW, "-c", "x", *POLICY_ARGS, expect=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"error: model file not found: {deep}"
    assert json.loads(cli("collections", "--json").stdout) == []  # nothing created, no photo blamed
    missing = cli("search", tmp_path / "no-such-probe.jpg", expect=2)
    assert missing.stderr.strip() == f"error: {tmp_path / 'no-such-probe.jpg'}: no such file or folder"


def test_failures_json(cli, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    jpeg = lfw("Tony_Blair", 1).read_bytes()
    (folder / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "text.png").write_text("hello")
    cli("ingest", folder, "-c", "bad", *POLICY_ARGS, "--workers", "0")
    rows = json.loads(cli("failures", "bad", "--json").stdout)
    assert rows == [
        {"source": str(folder / "half.jpg"), "reason": "truncated", "detail": rows[0]["detail"]},
        {"source": str(folder / "text.png"), "reason": "not-an-image", "detail": "unrecognised format"},
    ]
    assert "truncated" in rows[0]["detail"]


def test_delete_commands(lfw_cli):
    def top(photo):
        [record] = json_lines(lfw_cli("search", photo, "--json", "--threshold", "0.99").stdout)
        return record["candidates"][0] if record["candidates"] else None

    face = top(lfw("Tony_Blair", 1))
    assert lfw_cli("delete", "face", str(face["face_id"])).stderr.strip() == f"deleted face {face['face_id']}"
    assert top(lfw("Tony_Blair", 1)) is None
    assert (
        lfw_cli("delete", "face", str(face["face_id"]), expect=2).stderr.strip()
        == f"error: face {face['face_id']} does not exist"
    )

    other = top(lfw("Colin_Powell", 1))
    result = lfw_cli("delete", "image", str(other["image_id"]))
    assert result.stderr.strip() == f"deleted image {other['image_id']} and its 1 faces"
    assert top(lfw("Colin_Powell", 1)) is None
    lfw_cli("delete", "image", str(other["image_id"]), expect=2)

    [row] = json.loads(lfw_cli("collections", "--json").stdout)
    assert (row["images"], row["faces"]) == (14, 13)
    lfw_cli("delete", "collection", "lfw", "--yes")
    assert json.loads(lfw_cli("collections", "--json").stdout) == []
    lfw_cli("delete", "collection", "lfw", "--yes", expect=2)


def test_delete_collection_asks_first(lfw_cli):
    runner = CliRunner()
    result = runner.invoke(app, ["--data-dir", str(lfw_cli.data), "delete", "collection", "lfw"], input="n\n")
    assert result.exit_code == 1
    assert [c["name"] for c in json.loads(lfw_cli("collections", "--json").stdout)] == ["lfw"]
    result = runner.invoke(app, ["--data-dir", str(lfw_cli.data), "delete", "collection", "lfw"], input="y\n")
    assert result.exit_code == 0
    assert json.loads(lfw_cli("collections", "--json").stdout) == []


def test_models_list_json(cli, models_dir):
    rows = json.loads(cli("models", "list", "--json").stdout)
    assert {r["name"] for r in rows} == {"blazeface_full_range", "facemesh", "mobilefacenet"}
    for r in rows:
        assert r["cached"] is True and Path(r["path"]).parent == models_dir
        assert r["package"].startswith(("pypi:", "npm:"))


def test_subprocess_cli_prints_pure_json_lines(tmp_path, models_dir):
    """The installed command, as a script would run it: stdout holds JSON Lines and nothing else."""
    env = {**os.environ, "FACEFINDER_DATA_DIR": str(tmp_path / "data"), "FACEFINDER_MODELS_DIR": str(models_dir)}

    def run(*args):
        return subprocess.run([*cli_command(), *map(str, args)], env=env, capture_output=True, text=True, timeout=120)

    ingest = run("ingest", GROUP / "sample1.jpg", "-c", "g", *POLICY_ARGS, "--json")
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["faces"] == 3
    search = run("search", GROUP / "sample1.jpg", "--json", "-k", "1")
    assert search.returncode == 0, search.stderr
    records = json_lines(search.stdout)
    assert [r["face"] for r in records] == [0, 1, 2]
    assert all(r["match"] and r["candidates"][0]["source"].endswith("sample1.jpg") for r in records)
    bad = run("search", GROUP / "sample1.jpg", "-c", "missing")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == "error: collection 'missing' does not exist"


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path, models_dir):
    """`facefinder demo`: ingests the bundled gallery (worker processes) and searches every probe."""
    env = {
        **os.environ,
        "FACEFINDER_DATA_DIR": str(tmp_path / "data"),
        "FACEFINDER_MODELS_DIR": str(models_dir),
        "COLUMNS": "200",
    }
    demo = subprocess.run([*cli_command(), "demo"], env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert "38 photos ingested" in demo.stderr and "0 failed" in demo.stderr
    matched = 0
    for probe in sorted(PROBES.iterdir()):
        person = probe.name.split("_")[0]
        title = f"{probe.name} face 0 at"
        if title not in demo.stdout:  # "no match": printed to stderr
            assert f"{probe.name} face 0" in demo.stderr and "no match" in demo.stderr
            continue
        matched += 1
        block = demo.stdout.split(title, 1)[1].split(" face 0 at", 1)[0]  # this probe's table
        first_row = next(line for line in block.splitlines() if line.startswith("│ 1 "))
        assert f"gallery/{person}/{person}" in first_row, first_row  # the best candidate is the right person
    assert matched >= 6
    collections = subprocess.run(
        [*cli_command(), "collections", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    [row] = json.loads(collections.stdout)
    assert (row["name"], row["images"], row["faces"]) == ("demo", 38, 32 + sum(GROUP_FACES.values()))


def test_a_bad_vectors_setting_is_one_clear_error(cli):
    result = cli("--vectors", "redis://somewhere", "collections", expect=2)  # global options go first
    assert result.stderr.strip() == "error: vectors: 'faiss' or milvus://host:port/namespace, not 'redis://somewhere'"
    result = cli("--vectors", "milvus://127.0.0.1:19530/no-dashes", "collections", expect=2)
    assert result.stderr.strip() == "error: vectors: the namespace 'no-dashes' may hold letters, digits and _ only"
