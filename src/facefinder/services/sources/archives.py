"""Zip and tar archives, in one place: which files are archives, their members in order, the
``archive!member`` address of a photo inside one, and unpacking an untrusted one safely.

Every read is capped at ``MAX_FILE_BYTES`` per member (a member's declared size is what zipfile and
tarfile stop at), and a damaged archive raises one of ``ARCHIVE_ERRORS``, which callers turn into
one clear line (a failed item of an ingest, a refused upload).

Unpacking writes only what its caller allows in all (``max_total``: the server gives the smallest of
a ratio to the archive's size, its uploads quota and a fixed cap), and names every file from a
sanitised member name that always fits the filesystem: a part over ``MAX_PART_CHARS`` is shortened
with a hash of it, so a hostile name costs a rename, never the whole archive.
"""

from __future__ import annotations

import hashlib
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
MAX_PART_CHARS = 100  # a longer part of an unpacked name is shortened (filesystems stop at 255 bytes)
MAX_PATH_CHARS = 1000  # a longer unpacked path has its folders folded into one (paths stop at 4,096)
MAX_MEMBERS = 100_000  # files one upload may unpack to, nested archives included (empty members cost no bytes)
_KEPT_STEM = MAX_PART_CHARS - 13 - 33  # what a shortened part keeps of its stem, whatever its suffixes
_SUFFIXES = re.compile(r"^(.+?)((?:\.[A-Za-z0-9]{1,10}){0,3})$")  # "name" + ".tar.gz", ".jpg.json"...
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


def iter_members(archive: Path, handle: IO[bytes] | None = None) -> Iterator[Member]:
    """The regular files of ``archive`` in archive order, each readable while the listing goes on (a
    .tar.gz cannot seek cheaply). ``handle``: the archive already opened (a server job opens it
    through its fence, services/sources/folders.py). Raises one of ``ARCHIVE_ERRORS`` when the
    archive is damaged."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(handle or archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield Member(info.filename, info.file_size, lambda i=info: zf.read(i))
        return
    with tarfile.open(archive, fileobj=handle) if handle is not None else tarfile.open(archive) as tf:
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


def unpack(archive: Path, target: Path, max_total: int, limit: str = "") -> Path:
    """Unpack an untrusted archive under ``target``, and the archives inside it into ``NAME.d/`` up
    to ``NESTED_DEPTH`` levels, zeroing and removing each archive once unpacked; returns ``target``.

    Member names are sanitised (``safe_member_path``: no absolute paths, no ``..``, no links or
    devices, over-long names shortened); a member over ``MAX_FILE_BYTES`` is skipped. More than
    ``max_total`` bytes in all (the archives inside counted again as they unpack) is a
    FaceFinderError naming ``limit`` (what sets the bound), raised before a byte past it is written:
    a zip whose members declare more is refused before any is written. The outer archive unreadable
    raises one of ``ARCHIVE_ERRORS``; an unreadable inner one stays in place (an ingest then reports
    it as corrupt). Whatever was written stays for the caller to scrub (the server's upload folder).
    """
    target.mkdir(exist_ok=True)
    budget = _Budget(max_total, limit)
    _extract(archive, target, budget)
    scrub_file(archive)
    unreadable: set[Path] = set()
    for _ in range(NESTED_DEPTH):
        for inner in sorted(target.rglob("*")):
            if inner in unreadable or not inner.is_file() or not is_archive_name(inner.name):
                continue
            try:
                _extract(inner, _free(inner.with_name(inner.name + ".d"), inner.name), budget)
            except ARCHIVE_ERRORS:
                unreadable.add(inner)
                continue
            scrub_file(inner)
    return target


class _Budget:
    """The bytes an unpack may still write, and the error once it would write past them."""

    def __init__(self, total: int, limit: str) -> None:
        self.total, self.left, self.limit = total, total, limit
        self.members = 0  # files written so far, counted against MAX_MEMBERS

    def count_member(self) -> int:
        """Count one more file; refused past ``MAX_MEMBERS`` (files cost inodes even when empty).
        Returns the file's number, unique within the unpack: what names a member whose name is taken."""
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise FaceFinderError(f"file: the archive unpacks to more than {MAX_MEMBERS:,} files")
        return self.members

    def refuse(self) -> FaceFinderError:
        why = f" ({self.limit})" if self.limit else ""
        return FaceFinderError(f"file: the archive unpacks to more than {self.total:,} bytes{why}")

    def take(self, size: int) -> None:
        """Count ``size`` bytes about to be written; refused, before writing, past the budget."""
        if size > self.left:
            raise self.refuse()
        self.left -= size


def _extract(archive: Path, target: Path, budget: _Budget) -> None:
    """Write each regular member of ``archive`` under ``target``, within ``budget``."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            declared = sum(
                i.file_size for i in members if i.file_size <= MAX_FILE_BYTES and safe_member_path(i.filename)
            )
            if declared > budget.left:  # refused from the directory, before anything is written
                raise budget.refuse()
            if budget.members + len(members) > MAX_MEMBERS:
                raise FaceFinderError(f"file: the archive unpacks to more than {MAX_MEMBERS:,} files")
            target.mkdir(exist_ok=True)
            for info in members:
                with zf.open(info) as stream:
                    _write_member(target, info.filename, info.file_size, stream, budget)
        return
    with tarfile.open(archive) as tf:
        target.mkdir(exist_ok=True)
        for entry in tf:
            stream = tf.extractfile(entry) if entry.isfile() else None
            if stream is not None:
                _write_member(target, entry.name, entry.size, stream, budget)


def _write_member(target: Path, name: str, size: int, stream: IO[bytes], budget: _Budget) -> None:
    """One member to its sanitised path (a fresh one when that is taken); one over the per-file cap
    is skipped, and a part written past it is zeroed, not just unlinked (it is still a copy)."""
    relative = safe_member_path(name)
    if relative is None or size > MAX_FILE_BYTES:
        return
    path = _place(target, relative, name, budget.count_member())
    written = 0
    with open(path, "wb") as out:
        while chunk := stream.read(1024 * 1024):
            written += len(chunk)
            if written > MAX_FILE_BYTES:
                break
            budget.take(len(chunk))
            out.write(chunk)
    if written > MAX_FILE_BYTES:
        scrub_file(path)


def _place(target: Path, relative: Path, name: str, number: int) -> Path:
    """Where a member goes: ``target / relative``, or, when that name is taken (two members that
    sanitise alike, a file where a folder must go), a fresh name at the top named by a hash of the
    member's whole name and its ``number`` in the unpack, so that no member overwrites another or
    fails the archive, and a clash costs one look, however many members share a name."""
    path = target / relative
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            return path
    except (FileExistsError, NotADirectoryError):
        pass
    return _free(target / _hashed(relative.name, f"{name}#{number}"), name)


def _free(path: Path, name: str) -> Path:
    """``path``, or a sibling named by a hash of ``name`` when ``path`` is taken."""
    n = 0
    while path.exists() or path.is_symlink():
        n += 1
        path = path.with_name(_hashed(path.name, f"{name}#{n}"))
    return path


def safe_member_path(name: str) -> Path | None:
    """A member name as a relative path that stays inside the target folder and that the
    filesystem takes (each part at most ``MAX_PART_CHARS``, the whole at most ``MAX_PATH_CHARS``),
    or None when it cannot stay inside (absolute, ``..``)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or any(p in ("..", "") for p in parts):
        return None
    cleaned = [re.sub(r"[^A-Za-z0-9._ -]+", "_", p).strip() or "_" for p in parts]
    if any(p in (".", "..") for p in cleaned):
        return None
    cleaned = [_hashed(p, p) if len(p) > MAX_PART_CHARS else p for p in cleaned]
    if sum(len(p) + 1 for p in cleaned) > MAX_PATH_CHARS:  # folders folded into one, named by their hash
        folders = "/".join(cleaned[:-1])
        cleaned = [_hashed(cleaned[0], folders), cleaned[-1]]
    return Path(*cleaned)


def _hashed(part: str, whole: str) -> str:
    """``part`` cut to fit ``MAX_PART_CHARS`` with ``~`` and a hash of ``whole`` before its suffixes
    (``.jpg``, ``.jpg.json``): a photo and its sidecar keep the same stem, so they still pair up."""
    match = _SUFFIXES.match(part)
    stem, suffixes = (match.group(1), match.group(2)) if match else (part, "")
    if whole == part:  # a long part: the hash is of its stem, which its sidecar shares
        whole = stem
    digest = hashlib.sha256(whole.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{stem[:_KEPT_STEM]}~{digest}{suffixes}"
