"""Zip and tar archives, in one place: which files are archives, their members in order, the
``archive!member`` address of a photo inside one, and unpacking an untrusted one safely.

Every read is capped at ``MAX_FILE_BYTES`` per member (a member's declared size is what zipfile and
tarfile stop at), and a damaged archive raises one of ``ARCHIVE_ERRORS``, which callers turn into
one clear line (a failed item of an ingest, a refused upload).
"""

from __future__ import annotations

import lzma
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO
from zlib import error as zlib_error

from facefinder.errors import FaceFinderError, ImageError
from facefinder.storage.index import scrub_file

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_FILE_BYTES = 200 * 1024 * 1024  # an archive member (or uploaded archive) over this is refused
NESTED_DEPTH = 3  # archives inside an uploaded archive are unpacked this many levels deep
# What a damaged archive raises while it is listed or a member is read (bz2 raises OSError).
ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib_error,
    lzma.LZMAError,
    OSError,
    RuntimeError,
    NotImplementedError,
    ValueError,
)


@dataclass
class Member:
    """One regular file inside an archive; ``read`` works only while the archive is being listed."""

    name: str
    size: int
    read: Callable[[], bytes]


def is_archive_name(name: str) -> bool:
    """Whether a file name has one of the archive suffixes facefinder reads."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def address(archive: Path | str, member: str) -> str:
    """Where a photo inside an archive was ingested from: ``archive.zip!inner/path.jpg``."""
    return f"{archive}!{member}"


def iter_members(archive: Path) -> Iterator[Member]:
    """The regular files of ``archive`` in archive order, each readable while the listing goes on (a
    .tar.gz cannot seek cheaply). Raises one of ``ARCHIVE_ERRORS`` when the archive is damaged."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield Member(info.filename, info.file_size, lambda i=info: zf.read(i))
        return
    with tarfile.open(archive) as tf:
        for entry in tf:
            if entry.isfile():
                yield Member(entry.name, entry.size, lambda e=entry: _read_tar_member(tf, e))


def _read_tar_member(tf: tarfile.TarFile, entry: tarfile.TarInfo) -> bytes:
    handle = tf.extractfile(entry)
    if handle is None:
        raise tarfile.TarError(f"{entry.name}: not a regular file")
    return handle.read()


def check_size(source: str, size: int) -> None:
    """Refuse a member over the per-file cap before any of it is read."""
    if size > MAX_FILE_BYTES:
        raise ImageError(source, "too-large", f"{size:,} bytes exceeds the {MAX_FILE_BYTES:,}-byte cap")


def read_member(source: str) -> bytes:
    """The bytes of the photo at ``archive!member`` (the archive's name may itself hold a '!': every
    cut is tried, leftmost first). FileNotFoundError when neither the archive nor the member is there."""
    cut = source.find("!")
    while cut != -1:
        archive, name = Path(source[:cut]), source[cut + 1 :]
        if archive.is_file() and is_archive_name(archive.name):
            for member in iter_members(archive):
                if member.name == name:
                    check_size(source, member.size)
                    return member.read()
            raise FileNotFoundError(source)
        cut = source.find("!", cut + 1)
    raise FileNotFoundError(source)


def unpack(archive: Path, target: Path, max_total: int) -> Path:
    """Unpack an untrusted archive under ``target``, and the archives inside it into ``NAME.d/`` up
    to ``NESTED_DEPTH`` levels, zeroing and removing each archive once unpacked; returns ``target``.

    Member names are sanitised (no absolute paths, no ``..``, no links or devices); a member over
    ``MAX_FILE_BYTES`` is skipped, and more than ``max_total`` bytes in all is a FaceFinderError. The
    outer archive unreadable raises one of ``ARCHIVE_ERRORS``; an unreadable inner one stays in place
    (an ingest then reports it as corrupt).
    """
    target.mkdir(exist_ok=True)
    budget = [max_total]
    _extract(archive, target, budget, max_total)
    scrub_file(archive)
    unreadable: set[Path] = set()
    for _ in range(NESTED_DEPTH):
        for inner in sorted(target.rglob("*")):
            if inner in unreadable or not inner.is_file() or not is_archive_name(inner.name):
                continue
            try:
                _extract(inner, inner.with_name(inner.name + ".d"), budget, max_total)
            except ARCHIVE_ERRORS:
                unreadable.add(inner)
                continue
            scrub_file(inner)
    return target


def _extract(archive: Path, target: Path, budget: list[int], max_total: int) -> None:
    """Write each regular member of ``archive`` under ``target``; ``budget[0]`` is the bytes still allowed."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    with zf.open(info) as stream:
                        _write_member(target, info.filename, info.file_size, stream, budget, max_total)
        return
    with tarfile.open(archive) as tf:
        for entry in tf:
            stream = tf.extractfile(entry) if entry.isfile() else None
            if stream is not None:
                _write_member(target, entry.name, entry.size, stream, budget, max_total)


def _write_member(target: Path, name: str, size: int, stream: IO[bytes], budget: list[int], max_total: int) -> None:
    relative = safe_member_path(name)
    if relative is None or size > MAX_FILE_BYTES:
        return
    path = target / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "wb") as out:
        while chunk := stream.read(1024 * 1024):
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > MAX_FILE_BYTES:
                break
            if budget[0] < 0:
                raise FaceFinderError(f"file: the archive unpacks to more than {max_total:,} bytes")
            out.write(chunk)
    if written > MAX_FILE_BYTES:
        scrub_file(path)  # a part of a photo is still a copy: zeroed, not just unlinked


def safe_member_path(name: str) -> Path | None:
    """A member name as a relative path that stays inside the target folder, or None when it cannot."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or any(p in ("..", "") for p in parts):
        return None
    cleaned = [re.sub(r"[^A-Za-z0-9._ -]+", "_", p).strip() or "_" for p in parts]
    if any(p in (".", "..") for p in cleaned):
        return None
    return Path(*cleaned)
