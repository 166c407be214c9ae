"""A hostile corpus: over a thousand bad files of every kind, mixed with real face photos.

Before, one of them could end a whole run (a sidecar holding ``[1,2]``, a truncated .tar.gz: "Aborted.",
a manifest with non-UTF-8 bytes: a traceback), a 62 KB PNG of 7999x7999 pixels took 17 s and 2 GB, and
the failure report missed unreadable folders, symlink loops, dangling links and every copy of a bad file
after the first. Now: the run finishes, every bad file has its row with the right reason, every real
face is stored and finds itself, and the index holds exactly the catalog's faces.
"""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from helpers import GALLERY, POLICY, lfw
from integrity import assert_sound
from PIL import Image
from sqlalchemy import func, select

from facefinder.storage.catalog import FaceRecord

REAL = [
    lfw("Tony_Blair", 1),
    lfw("Colin_Powell", 1),
    lfw("Hugo_Chavez", 1),
    lfw("Vladimir_Putin", 1),
    GALLERY / "amy" / "amy1.png",
    GALLERY / "bernadette" / "bernadette1.png",
]
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif")
LOCKED = "locked-"  # folders that cannot be listed (see unlistable_folders)


def png_header(width: int, height: int, mode: int = 2) -> bytes:
    """A PNG that claims ``width`` x ``height`` (colour type ``mode``) and holds a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def build_corpus(root: Path, scale: int = 1) -> tuple[dict[str, set[str]], set[str]]:
    """Write the corpus under ``root``: returns (source -> the reasons its failure row may give, sources
    of photos that decode and must be stored: the real faces and, at full scale, two pixel bombs under
    every cap). ``scale`` divides every count (the fast test: 1/25, about 60 bad files)."""
    rng = random.Random(9)
    n = lambda count: max(1, count // scale)  # noqa: E731
    expected: dict[str, set[str]] = {}
    jpeg = lfw("George_W_Bush", 1).read_bytes()
    png = io.BytesIO()
    Image.open(lfw("George_W_Bush", 1)).save(png, format="PNG")

    def bad(name: str, data: bytes, *reasons: str) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[str(path)] = set(reasons)
        return path

    for i in range(n(100)):  # empty files: all byte-identical, and every one gets its own row
        bad(f"empty/{i:03d}{EXTENSIONS[i % 7]}", b"", "not-an-image")
    for i in range(n(200)):
        bad(f"random/{i:03d}{EXTENSIONS[i % 7]}", rng.randbytes(rng.randint(16, 600)), "not-an-image")
    for i in range(n(75)):
        cut = len(jpeg) // 3 + 37 * i
        bad(f"truncated/{i:03d}.jpg", jpeg[:cut], "truncated", "corrupt")
        cut = len(png.getvalue()) // 3 + 101 * i
        bad(f"truncated/{i:03d}.png", png.getvalue()[:cut], "truncated", "corrupt")
    for i in range(n(100)):  # headers claiming huge sizes: over the pixel cap, or over the decode budget
        width, height = (9000 + i, 9000) if i % 2 else (6000 + i, 6000)
        bad(f"huge-header/{i:03d}.png", png_header(width, height), "too-large")
    for i in range(n(100)):
        data = [
            b"%PDF-1.4\n" + rng.randbytes(200),
            b"PK\x03\x04" + rng.randbytes(100),
            f"Dear operator, note {i}\n".encode() * 5,
            b"<html><body>%d</body></html>" % i,
        ][i % 4]
        bad(f"renamed/{i:03d}{EXTENSIONS[i % 7]}", data, "not-an-image")
    garbled = bytearray(jpeg)
    garbled[1000:3000] = rng.randbytes(2000)
    for i in range(max(2, n(100))):  # byte-identical corrupt copies
        bad(f"copies/corrupt-{i:03d}.jpg", bytes(garbled), "corrupt")
    sidecars = [
        b"[1,2]",
        b'"x"',
        b"42",
        b"null",
        b"true",
        b"{not json",
        b'{"notes": "\xff\xfe"}',
        b"\xff\xfe\x00\x00",
        b'{"case_id": "%s"}' % (b"k" * 300),
        b'{"captured_at": "%s"}' % (b"9" * 100),
    ]
    for i in range(max(len(sidecars), n(100))):
        photo = bad(f"sidecars/{i:03d}.jpg", rng.randbytes(64), "bad-sidecar")
        photo.with_name(photo.name + ".json").write_bytes(sidecars[i % len(sidecars)])
    archives(root, rng, bad, n)
    links(root, expected, n)
    for i in range(n(5)):  # over the 100 MB photo cap: sparse, so they cost no disk and are never read
        path = root / "sparse" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as handle:
            handle.truncate(101 * 1024 * 1024 + i)
        expected[str(path)] = {"too-large"}
    for i in range(n(10)):
        (root / f"{LOCKED}{i}").mkdir()
        (root / f"{LOCKED}{i}" / "hidden.jpg").write_bytes(jpeg)
        expected[str(root / f"{LOCKED}{i}")] = {"unreadable"}
    stored = {str(shutil.copy(photo, root / f"real-{i}{photo.suffix}")) for i, photo in enumerate(REAL)}
    for i in range(2 if scale == 1 else 0):  # pixel bombs under every cap: 7999 x 7999 grey PNGs of ~62 KB
        path = root / f"bomb-{i}.png"
        Image.new("L", (7999, 7999), i).save(path)
        stored.add(str(path))
    manifest(root, rng, expected, stored, n)
    return expected, stored


def archives(root: Path, rng: random.Random, bad, n) -> None:
    """150 damaged archives: truncated .tar.gz/.tar.bz2/.tar.xz, garbage .zip, zips whose member is damaged."""
    member = rng.randbytes(4000)
    for i, (suffix, mode) in enumerate([(".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz")] * n(30)):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode=mode) as tf:
            info = tarfile.TarInfo(f"photo-{i}.jpg")
            data = member + bytes([i])
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        whole = buffer.getvalue()
        bad(f"archives/{i:03d}{suffix}", whole[: len(whole) // 2], "corrupt")
    for i in range(n(30)):
        bad(f"archives/garbage-{i:03d}.zip", b"PK\x03\x04" + rng.randbytes(300), "corrupt")
    for i in range(n(30)):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"photo-{i}.jpg", member * 3 + bytes([i]))
        data = bytearray(buffer.getvalue())
        data[60:90] = rng.randbytes(30)  # the deflated member data: a CRC or zlib error when read
        bad(f"archives/damaged-member-{i:03d}.zip", bytes(data), "corrupt")


def links(root: Path, expected: dict[str, set[str]], n) -> None:
    """Folder loops, file link cycles and dangling links (60 + 20 + 50 rows)."""
    for i in range(n(30)):
        loop = root / "loops" / f"dir-{i:02d}"
        loop.mkdir(parents=True)
        (loop / "up").symlink_to("..")  # loops/dir-NN/up -> loops/dir-NN/.. : back to an ancestor
        (loop / "self").symlink_to(".")
        expected[str(loop / "up")] = expected[str(loop / "self")] = {"symlink-loop"}
    for i in range(n(10)):
        a, b = root / "loops" / f"a-{i}.jpg", root / "loops" / f"b-{i}.jpg"
        a.symlink_to(b.name)
        b.symlink_to(a.name)
        expected[str(a)] = expected[str(b)] = {"symlink-loop"}
    for i in range(n(50)):
        link = root / "dangling" / f"{i:02d}.jpg"
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(root / "nowhere" / f"{i}.jpg")
        expected[str(link)] = {"unreadable"}


def manifest(root: Path, rng: random.Random, expected: dict[str, set[str]], stored: set[str], n) -> None:
    """A manifest with good rows for the real faces and bad rows (not UTF-8, a 128 KiB field, an
    over-long case id) for 30 photos, which fail as bad-manifest, plus rows that name no photo."""
    lines = [b"path,case_id,notes"]
    for path in sorted(stored):
        lines.append(f"{Path(path).name},CASE-{Path(path).stem},real".encode())
    for i in range(max(3, n(30))):
        photo = root / "manifested" / f"{i:02d}.jpg"
        photo.parent.mkdir(exist_ok=True)
        photo.write_bytes(rng.randbytes(64))
        expected[str(photo)] = {"bad-manifest"}
        row = [
            b"manifested/%02d.jpg,C,\xff\xfe notes" % i,
            b"manifested/%02d.jpg,C,%s" % (i, b"n" * 131072),
            b"manifested/%02d.jpg,%s," % (i, b"c" * 250),
        ][i % 3]
        lines.append(row)
    lines.append(b",no path here,")
    lines.append(b"\xff\xfe.jpg,undecodable path,")
    (root / "manifest.csv").write_bytes(b"\n".join(lines) + b"\n")
    for line in (len(lines) - 1, len(lines)):
        expected[f"{root / 'manifest.csv'} line {line}"] = {"bad-manifest"}


@pytest.fixture
def unlistable_folders(monkeypatch):
    """Folders named locked-* cannot be listed. chmod 000 does that for a normal user; root ignores
    permissions, so as root os.scandir refuses them the way the OS would (EACCES)."""
    if os.geteuid() != 0:
        locked: list[Path] = []

        def lock(root: Path) -> None:
            locked.extend(root.glob(f"{LOCKED}*"))
            for folder in locked:
                folder.chmod(0)

        yield lock
        for folder in locked:
            folder.chmod(0o755)  # so that pytest can remove tmp_path
        return
    scandir = os.scandir

    def refusing(path="."):
        if Path(path).name.startswith(LOCKED):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    yield lambda root: None


def ingest_and_check(tmp_path: Path, make_finder, lock, scale: int) -> None:
    """Ingest the corpus and assert what the module docstring promises."""
    root = tmp_path / "hostile"
    root.mkdir()
    expected, stored = build_corpus(root, scale)
    lock(root)
    assert len(expected) >= 1000 // scale
    ff = make_finder()
    started = time.perf_counter()
    report = ff.ingest(root, collection="hostile", **POLICY)
    seconds = time.perf_counter() - started

    failures = {f.source: f for f in report.failures}
    rows = {f.source: f for f in ff.failures("hostile")}
    assert len(rows) == len(failures)  # the catalog's report is the run's report
    for source, reasons in expected.items():
        matching = [f for s, f in failures.items() if s == source or s.startswith(source + "!")]
        assert matching, f"{source}: no failure row"
        assert {f.reason for f in matching} <= reasons, (source, [(f.reason, f.detail) for f in matching])
    unexplained = [s for s in failures if s not in expected and s.split("!")[0] not in expected]
    assert not unexplained, unexplained
    assert report.ingested == len(stored), (report.ingested, sorted(stored))

    cid = ff.store.collection("hostile").id
    with ff.store.catalog.session() as session:
        faces = session.scalar(select(func.count()).select_from(FaceRecord).where(FaceRecord.collection_id == cid))
    assert ff.store.index_size(cid) == faces == len(REAL)
    for i, photo in enumerate(REAL):
        [record] = ff.search(photo, collections=["hostile"], top_k=1)
        top = record.candidates[0]
        assert top.rank == 1 and top.score >= 0.99 and top.source == str(root / f"real-{i}{photo.suffix}")
        assert top.provenance["case_id"] == f"CASE-real-{i}"  # good manifest rows still apply
    print(f"hostile corpus: {len(expected)} bad files + {len(stored)} photos in {seconds:.1f} s")
    ff.close()
    assert assert_sound(tmp_path / "data") == len(REAL)


def test_one_of_each_kind_of_bad_input(tmp_path, make_finder, unlistable_folders):
    ingest_and_check(tmp_path, make_finder, unlistable_folders, scale=25)


@pytest.mark.slow
def test_hostile_corpus(tmp_path, make_finder, unlistable_folders):
    """Over a thousand bad files and two 7999x7999 pixel bombs, with six real faces (~10 s)."""
    ingest_and_check(tmp_path, make_finder, unlistable_folders, scale=1)


def test_search_reports_each_bad_probe_and_goes_on(lfw_finder, tmp_path, unlistable_folders):
    """search DIR: a dangling link, a folder it cannot list, a damaged archive, a bomb header: each is a
    record with its error, and the good probe after them is still searched."""
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "a-dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (probes / f"{LOCKED}b").mkdir()
    (probes / "c-huge.png").write_bytes(png_header(7000, 7000))
    (probes / "d-truncated.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))
    shutil.copy(lfw("Tony_Blair", 1), probes / "e-good.jpg")
    unlistable_folders(probes)
    records = lfw_finder.search(probes, top_k=1)
    errors = {Path(r.probe).name: r.error for r in records}
    assert errors == {
        "a-dangling.jpg": "unreadable",
        f"{LOCKED}b": "unreadable",
        "c-huge.png": "too-large",
        "d-truncated.tar.gz": "corrupt",
        "e-good.jpg": None,
    }
    [good] = [r for r in records if r.probe.endswith("e-good.jpg")]
    assert good.candidates[0].score >= 0.99
