"""sources/archives.py: the one place zip and tar archives are read, addressed and unpacked."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from facefinder.errors import FaceFinderError, ImageError
from facefinder.services.sources import archives
from facefinder.services.sources.folders import iter_sources, read_source


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("make, name", [(make_zip, "a!b.zip"), (make_tar, "a!b.tar.gz")])
def test_a_member_is_read_back_by_the_address_ingest_gave_it(tmp_path, make, name):
    """The address iter_sources writes is the one read_source reads, even with a '!' in the archive's name."""
    archive = make(tmp_path / name, {"in/one.jpg": b"one", "two.jpg": b"two"})
    sources = {item.source: item.read() for item in iter_sources(archive)}
    assert sources == {archives.address(archive, "in/one.jpg"): b"one", archives.address(archive, "two.jpg"): b"two"}
    for source, data in sources.items():
        assert read_source(source) == data
    with pytest.raises(FileNotFoundError):
        read_source(archives.address(archive, "three.jpg"))


def test_a_member_over_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "big.zip", {"big.jpg": b"x" * 100})
    monkeypatch.setattr(archives, "MAX_FILE_BYTES", 10)
    with pytest.raises(ImageError, match="too-large|exceeds"):
        archives.read_member(archives.address(archive, "big.jpg"))


def test_unpacking_keeps_every_name_inside_the_target(tmp_path):
    inner = make_zip(tmp_path / "inner.zip", {"deep.jpg": b"deep"})
    outer = make_tar(
        tmp_path / "up.tar.gz",
        {"../escape.jpg": b"no", "/abs.jpg": b"no", "ok/p.jpg": b"yes", "nested.zip": inner.read_bytes()},
    )
    target = archives.unpack(outer, tmp_path / "files", max_total=10_000)
    found = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert found == ["nested.zip.d/deep.jpg", "ok/p.jpg"]
    assert not outer.exists() and not (tmp_path / "escape.jpg").exists()


def test_unpacking_stops_at_the_total_budget(tmp_path):
    outer = make_zip(tmp_path / "up.zip", {f"{i}.jpg": b"x" * 1000 for i in range(5)})
    with pytest.raises(FaceFinderError, match="more than 2,500 bytes"):
        archives.unpack(outer, tmp_path / "files", max_total=2500)


def test_members_sharing_a_name_cost_one_look_each(tmp_path, monkeypatch):
    """2,000 members named alike all unpack, each under its own name, with a constant number of name
    tries each: a clash is named by the member's number, not found by walking the names taken."""
    outer = make_zip(tmp_path / "same.zip", {})
    with zipfile.ZipFile(outer, "w") as zf:
        for _ in range(2000):
            zf.writestr("a.jpg", b"")
    tries = []
    hashed = archives._hashed
    monkeypatch.setattr(archives, "_hashed", lambda part, whole: tries.append(whole) or hashed(part, whole))
    target = archives.unpack(outer, tmp_path / "files", max_total=10_000)
    assert len([p for p in target.rglob("*") if p.is_file()]) == 2000
    assert len(tries) < 2 * 2000


def test_unpacking_stops_at_the_member_cap(tmp_path, monkeypatch):
    """Empty members cost no bytes but each is a file: past MAX_MEMBERS the upload is refused."""
    monkeypatch.setattr(archives, "MAX_MEMBERS", 10)
    outer = make_zip(tmp_path / "many.zip", {f"{i}.jpg": b"" for i in range(11)})
    with pytest.raises(FaceFinderError, match="more than 10 files"):
        archives.unpack(outer, tmp_path / "files", max_total=10_000)


def test_a_source_under_a_fenced_folder_is_read_only_while_it_stays_inside(tmp_path):
    """Result photos are read back where they were ingested: one under an import root or the uploads
    folder (users can write there) is refused once it became a link out, as ingest would refuse it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    photo = root / "photo.jpg"
    photo.write_bytes(b"mine")
    assert read_source(str(photo), [root]) == b"mine"
    photo.unlink()
    photo.symlink_to(outside / "secret.jpg")  # swapped in after the ingest
    with pytest.raises(ImageError, match="symlink-escape"):
        read_source(str(photo), [root])
    assert read_source(str(photo)) == b"secret"  # the operator's own folders (CLI ingests) are not fenced
    archive = make_zip(outside / "a.zip", {"x.jpg": b"x"})
    (root / "a.zip").symlink_to(archive)
    with pytest.raises(ImageError, match="symlink-escape"):
        read_source(archives.address(root / "a.zip", "x.jpg"), [root])
    assert read_source(archives.address(archive, "x.jpg"), [root]) == b"x"  # not under the fenced folder
