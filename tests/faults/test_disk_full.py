"""A full disk, for real: the data directory on a 6 MB tmpfs, filled by a ballast file.

Before: a 156-line traceback, and `search` and `collections` crashed too. Now an ingest stops with one
line (`disk full at DIR: N photos stored, re-run to resume`, exit 2), the store stays consistent, and a
re-run after freeing space resumes without duplicates; a checkpoint or an erasure that meets a full disk
says so (DiskFullError) and serves nothing half-written. Needs root (or CAP_SYS_ADMIN) to mount the
tmpfs: skipped with the reason otherwise.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import GALLERY, LFW, POLICY, POLICY_ARGS, cli_command, lfw
from integrity import assert_sound
from sqlalchemy import func, select

from facefinder.errors import DiskFullError, is_disk_full
from facefinder.storage.catalog import ImageRecord

LINE = re.compile(r"^error: disk full at (?P<dir>\S+): (?P<stored>\d+) photos stored, re-run to resume$")


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs mounted for this test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 6 MB tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Write a ballast file until only ``leave`` bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / f"ballast-{len(list(disk.glob('ballast-*')))}", "wb") as handle:
        try:
            handle.write(b"\0" * max(0, free - leave))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def free_space(disk: Path) -> None:
    for ballast in disk.glob("ballast-*"):
        ballast.unlink()


def photos(folder: Path, people: list[str]) -> Path:
    folder.mkdir(parents=True)
    for person in people:
        for photo in (LFW / person).iterdir():
            shutil.copy(photo, folder / photo.name)
    return folder


def image_count(store) -> tuple[int, int]:
    with store.catalog.session() as session:
        return (
            session.scalar(select(func.count()).select_from(ImageRecord)),
            session.scalar(select(func.count(func.distinct(ImageRecord.sha256)))),
        )


def run_cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cli_command(), "--data-dir", str(data), *args], capture_output=True, text=True, timeout=300)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return [line for line in done.stderr.splitlines() if line.strip()]


@pytest.mark.slow
def test_cli_ingest_stops_with_one_line_and_a_rerun_resumes(small_disk, tmp_path, models_dir):
    source = tmp_path / "photos"
    shutil.copytree(GALLERY, source)
    shutil.copytree(LFW, source / "lfw")
    total = sum(1 for p in source.rglob("*") if p.suffix in (".jpg", ".png"))
    data = small_disk / "data"
    assert run_cli(data, "collections", "create", "full", *POLICY_ARGS).returncode == 0
    fill(small_disk, leave=200 * 1024)

    done = run_cli(data, "ingest", str(source), "-c", "full", "--workers", "0")
    lines = error_lines(done)
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    match = LINE.match(lines[0])
    assert match and match["dir"] == str(data), lines[0]
    stored = int(match["stored"])
    assert stored < total

    # Reads need no space: collections answers; search cannot log, so it says so in one line.
    listed = run_cli(data, "collections", "--json")
    assert listed.returncode == 0 and error_lines(listed) == [], listed.stderr
    assert json.loads(listed.stdout)[0]["images"] == stored
    searched = run_cli(data, "search", str(lfw("Tony_Blair", 1)), "--json")
    assert searched.returncode in (0, 2)
    if searched.returncode == 2:  # the audit log could not record the search: no result is shown
        assert searched.stdout == "" and len(error_lines(searched)) == 1 and "disk full at" in searched.stderr
    else:
        assert error_lines(searched) == [] and json.loads(searched.stdout)["probe"]

    free_space(small_disk)
    assert assert_sound(data) >= stored  # what the stopped run left is whole, before any re-run
    again = run_cli(data, "ingest", str(source), "-c", "full", "--workers", "0", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["ingested"], report["duplicates"], report["failures"]) == (total - stored, stored, [])
    faces = assert_sound(data)
    from facefinder.storage.store import FaceStore

    store = FaceStore(data)
    try:
        assert image_count(store) == (total, total)  # no photo twice
        assert faces == sum(c.faces for c in store.collections())
    finally:
        store.close()


def test_checkpoint_on_a_full_disk(small_disk, tmp_path, make_finder):
    """The catalog took the photos, then the disk filled before the index checkpoint: the ingest says
    how many it stored, closing fails or not, and after freeing space the index matches the catalog
    (the journal is replayed) and a re-run stores nothing twice."""
    data = small_disk / "data"
    ff = make_finder(data)
    first = ff.ingest(photos(tmp_path / "a", ["Tony_Blair", "Colin_Powell"]), collection="c", **POLICY)
    later = photos(tmp_path / "b", ["Hugo_Chavez", "Vladimir_Putin"])
    checkpoint = ff.store.checkpoint

    def fill_then_checkpoint(*args, **kwargs):
        fill(small_disk)
        return checkpoint(*args, **kwargs)

    ff.store.checkpoint = fill_then_checkpoint
    with pytest.raises(DiskFullError, match=r"disk full at .*: 6 photos stored, re-run to resume"):
        ff.ingest(later, collection="c")
    try:
        ff.close()
    except Exception as exc:  # the checkpoint at close meets the same full disk
        assert is_disk_full(exc), exc
    free_space(small_disk)
    assert assert_sound(data) == first.faces + 6
    again = make_finder(data)
    report = again.ingest(later, collection="c")
    assert (report.ingested, report.duplicates) == (0, 6)
    assert image_count(again.store) == (12, 12)
    again.close()
    assert assert_sound(data) == first.faces + 6


def test_erasure_on_a_full_disk(small_disk, tmp_path, make_finder):
    """An erasure the catalog cannot write is refused whole (DiskFullError) and the photo stays; one the
    catalog committed before the disk filled (the index files could not be rewritten) is never served
    again, and after freeing space the store holds exactly the catalog, without the erased face."""
    data = small_disk / "data"
    ff = make_finder(data)
    ff.ingest(photos(tmp_path / "a", ["Tony_Blair", "Colin_Powell", "Hugo_Chavez"]), collection="c", **POLICY)
    [blair] = ff.search(lfw("Tony_Blair", 1), top_k=1)
    image_id, face_id = blair.candidates[0].image_id, blair.candidates[0].face_id
    embedding = ff.store.faces([face_id])[face_id][0].embedding

    fill(small_disk)
    with pytest.raises(DiskFullError, match="disk full at .*: the erasure could not be completed"):
        ff.delete_image(image_id)
    free_space(small_disk)  # (a search on a full disk is refused: its audit record cannot be written)
    [still] = ff.search(lfw("Tony_Blair", 1), top_k=1)
    assert still.candidates[0].face_id == face_id  # refused whole: nothing half-erased

    compact = ff.store.compact

    def fill_then_compact(*args, **kwargs):
        fill(small_disk)
        return compact(*args, **kwargs)

    ff.store.compact = fill_then_compact
    try:
        ff.delete_image(image_id)
    except DiskFullError:
        pass  # the catalog committed the erasure; rewriting the index files met the full disk
    free_space(small_disk)
    [after] = ff.search(lfw("Tony_Blair", 1), top_k=1)
    assert face_id not in {c.face_id for c in after.candidates}
    if any(embedding in path.read_bytes() for path in (data / "index").iterdir()):  # the old checkpoint
        assert "erasure-pending" in [p.kind for p in ff.store.check()]
        assert all(p.repaired for p in ff.store.check(repair=True))
    assert not [path for path in data.rglob("*") if path.is_file() and embedding in path.read_bytes()]
    ff.close()
    assert assert_sound(data, erased={face_id}) > 0
