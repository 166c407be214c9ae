"""Where photos come from: folders (recursive), zip and tar archives, with their provenance.

Provenance comes from a sidecar JSON next to a photo (``photo.jpg.json`` or ``photo.json``) or from
a CSV manifest (``manifest.csv`` at the root, or one given explicitly) with a ``path`` column
relative to the root. Recognised fields: source_url, captured_at, case_id, consent_id, notes.

Nothing found here stops a run: a folder that cannot be listed, a link that loops or leads nowhere,
a damaged archive or member, a bad sidecar or manifest row each become an item whose read fails
with a reason, and so one line of the ingest report.

Symbolic links are followed: on the command line the operator owns the disk. A server job lists a
folder that users named, inside an import root, and must not reach past it, so it passes
``confine_to`` (a ``Fence``): every file, sidecar, manifest and archive must then resolve, after
every link, inside that folder; one that does not is a ``symlink-escape`` item and is never read.

facefinder only reads sources the operator holds: no crawling, no bulk import of third-party URLs.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from facefinder.errors import ImageError
from facefinder.services.sources import archives
from facefinder.services.sources.object_storage import is_object_uri, iter_objects, read_object
from facefinder.services.sources.provenance import (
    MAX_MANIFEST_BYTES,
    MAX_SIDECAR_BYTES,
    Manifest,
    SourceError,
    failing_read,
    parse_sidecar,
    read_manifest,
)
from facefinder.vision.image import MAX_PHOTO_BYTES, read_photo_bytes

SKIPPED_SUFFIXES = (".json", ".csv", ".txt", ".md")  # sidecars, manifests and notes are not photos


@dataclass
class SourceItem:
    """One candidate photo: where it came from, how to read it (capped), and its provenance."""

    source: str  # a path, or "archive.zip!inner/path.jpg" for an archive member
    size: int
    read: Callable[[], bytes]
    provenance: dict[str, str] = field(default_factory=dict)
    # Where a worker on another machine reads it from (a file path or s3:// URI), or None when only
    # this process can (archive members, items that stand for a failure): see services/distributed.py.
    location: str | None = None


class Fence:
    """The folder a server job's sources must stay inside (its import root, or the upload's folder).

    Users name what a server job reads, so a symbolic link inside the folder must not carry a read
    past it: every path is checked on its real path (every link followed to its final target), and
    a photo is checked again on the file actually opened (on Linux, through /proc/self/fd), so a link
    swapped in after the listing is refused too."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.root = Path(os.path.realpath(folder))

    def holds(self, path: str | os.PathLike) -> bool:
        """Whether ``path``, every link followed, lies inside the folder."""
        real = Path(os.path.realpath(path))
        return real == self.root or real.is_relative_to(self.root)

    def escape(self, path: str | os.PathLike) -> ImageError:
        """The error for a path that leads out (its target is not named: it is outside what users may see)."""
        return ImageError(str(path), "symlink-escape", "a symbolic link leads outside the import root; not read")

    def open(self, path: Path) -> IO[bytes]:
        """``path`` opened for reading, refused (ImageError "symlink-escape") unless the file opened
        lies inside the folder; never blocks on a FIFO swapped in after the listing."""
        if not self.holds(path):
            raise self.escape(path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        handle = os.fdopen(fd, "rb")
        try:
            opened = f"/proc/self/fd/{fd}"
            if os.path.exists(opened) and not self.holds(os.readlink(opened)):
                raise self.escape(path)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ImageError(str(path), "unreadable", "not a regular file")
        except BaseException:
            handle.close()
            raise
        return handle

    def read_photo(self, path: Path, max_bytes: int = MAX_PHOTO_BYTES) -> bytes:
        """A photo's bytes through ``open``, under the same byte cap as ``read_photo_bytes``."""
        try:
            with self.open(path) as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > max_bytes:
                    raise ImageError(str(path), "too-large", f"{size:,} bytes exceeds the {max_bytes:,}-byte cap")
                data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError(str(path), "unreadable", exc.strerror or str(exc)) from None
        if len(data) > max_bytes:
            raise ImageError(str(path), "too-large", f"over the {max_bytes:,}-byte cap (the file grew while read)")
        return data


def iter_sources(
    path: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    provenance: bool = True,
    confine_to: str | os.PathLike | None = None,
) -> Iterator[SourceItem]:
    """Every candidate photo under ``path`` (a folder, an archive, a single file, or an
    ``s3://bucket/prefix`` of object storage), sorted. ``provenance=False`` (search probes) reads
    no sidecar or manifest. ``confine_to`` (server jobs): a folder that every file must resolve
    inside, links followed (see ``Fence``); what leads out is a ``symlink-escape`` item, unread."""
    if is_object_uri(path):
        if confine_to is not None:
            raise SourceError(f"{path}: object storage cannot be confined to a folder")
        yield from iter_objects(str(path), SourceItem, SKIPPED_SUFFIXES, archives.ARCHIVE_SUFFIXES, MAX_PHOTO_BYTES)
        return
    root = Path(path).expanduser()
    fence = Fence(confine_to) if confine_to is not None else None
    if not root.exists():
        raise SourceError(f"{root}: no such file or folder")
    if fence is not None and not fence.holds(root):
        yield _escaped(fence, root)
        return
    if root.is_file() and not archives.is_archive_name(root.name):
        yield _photo_item(root, root.stat().st_size, {}, provenance, fence)
        return
    rows = Manifest()
    if provenance:
        rows, problems = _manifest_for(root, manifest, fence)
        yield from problems
    if not root.is_dir():
        yield from _archive_items(root, rows, fence=fence)
        return
    for found in _walk(root, fence):
        if isinstance(found, SourceItem):
            yield found
            continue
        file, size = found
        relative = file.relative_to(root).as_posix()
        if archives.is_archive_name(file.name):
            yield from _archive_items(file, rows, inside_folder=True, fence=fence)
        elif not file.name.lower().endswith(SKIPPED_SUFFIXES):
            if relative in rows.bad:  # this photo waits for a fixed manifest row; the rest go on
                yield _failing_item(str(file), "bad-manifest", rows.bad[relative])
                continue
            yield _photo_item(file, size, rows.rows.get(relative, {}), provenance, fence)


def _manifest_for(
    root: Path, manifest: str | os.PathLike | None, fence: Fence | None
) -> tuple[Manifest, list[SourceItem]]:
    """The manifest's rows and the failing items its problems make; one that leads out of the
    fence is one ``symlink-escape`` item and is not read."""
    path = Path(manifest) if manifest else (root / "manifest.csv" if root.is_dir() else None)
    if fence is not None and path is not None and path.exists() and not fence.holds(path):
        return Manifest(), [_escaped(fence, path)]
    try:
        rows = _manifest(path, fence)
    except ImageError as exc:  # a link swapped in after the check above
        return Manifest(), [_failing_item(str(path), exc.reason, exc.detail)]
    return rows, [_failing_item(what, "bad-manifest", why) for what, why in rows.problems]


def _photo_item(
    file: Path, size: int, manifest_row: dict[str, str], provenance: bool, fence: Fence | None = None
) -> SourceItem:
    """A photo file; read through the byte cap (and the fence). A bad sidecar makes it a failing item."""
    try:
        values = {**manifest_row, **_sidecar(file, fence)} if provenance else {}
    except SourceError as exc:  # this photo waits for a fixed sidecar; the rest go on
        return _failing_item(str(file), "bad-sidecar", str(exc))
    except ImageError as exc:  # its sidecar leads out of the fence
        return _failing_item(str(file), exc.reason, exc.detail)
    if fence is not None:  # read only here, through the fence (no location: not for remote workers)
        return SourceItem(str(file), size, lambda: fence.read_photo(file), values)
    return SourceItem(str(file), size, lambda: read_photo_bytes(file), values, location=str(file))


def _escaped(fence: Fence, path: Path) -> SourceItem:
    error = fence.escape(path)
    return _failing_item(error.source, error.reason, error.detail)


def _walk(root: Path, fence: Fence | None = None) -> Iterator[tuple[Path, int] | SourceItem]:
    """(file, size) of every regular file under ``root``, depth first in name order, hidden ones left
    out; symbolic links are followed (with a ``fence``, only to targets inside it). A folder that
    cannot be listed, a link that leads nowhere or out of the fence and a link back to a folder
    above it become failing items. Iterative: no recursion limit on depth."""
    top = root.stat()
    stack = [(_listing(root), ((top.st_dev, top.st_ino),))]
    while stack:
        entries, ancestors = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
        elif isinstance(entry, SourceItem):
            yield entry
        else:
            path = Path(entry.path)
            if fence is not None and not fence.holds(path):
                if not entry.name.lower().endswith(SKIPPED_SUFFIXES):  # a sidecar is reported by its photo
                    yield _escaped(fence, path)
                continue
            try:
                info = path.stat()
            except OSError as exc:
                yield _unfollowable(path, exc)
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    yield _failing_item(str(path), "symlink-loop", f"leads back to {os.path.realpath(path)}")
                else:
                    stack.append((_listing(path), ancestors + (key,)))
            elif stat.S_ISREG(info.st_mode):  # FIFOs, sockets, devices: not photos (a FIFO would block)
                yield path, info.st_size


def _listing(folder: Path) -> Iterator[os.DirEntry | SourceItem]:
    """A folder's visible entries in name order, or one failing item when it cannot be listed."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        return iter([_failing_item(str(folder), "unreadable", f"folder cannot be listed: {exc.strerror or exc}")])
    return iter(entries)


def _unfollowable(path: Path, exc: OSError) -> SourceItem:
    """The failing item for an entry that stat() cannot follow: a loop of links, or a dangling one."""
    if exc.errno == errno.ELOOP:
        return _failing_item(str(path), "symlink-loop", "symbolic links that lead to each other")
    if path.is_symlink() and exc.errno == errno.ENOENT:
        return _failing_item(str(path), "unreadable", f"dangling symbolic link to {os.readlink(path)}")
    return _failing_item(str(path), "unreadable", exc.strerror or str(exc))


def read_location(location: str, size: int) -> bytes:
    """Read a photo by its ``location`` (see SourceItem), in any process: what remote workers do."""
    if is_object_uri(location):
        return read_object(location, size, MAX_PHOTO_BYTES)
    return read_photo_bytes(location)


def read_source(source: str, fenced: Sequence[str | os.PathLike] = ()) -> bytes:
    """The bytes of an ingested photo from where it was ingested: a path, or ``archive!member``.
    A file is read under the same byte cap as at ingest (it may have been replaced since).

    A source that lies under one of ``fenced`` (the server's import roots and uploads folder, which
    users can write to) is read only while it still resolves inside that folder: a symbolic link
    swapped in after the ingest is refused ("symlink-escape"), as the ingest itself would have."""
    fence = next((Fence(folder) for folder in fenced if _lexically_under(source, folder)), None)
    path = Path(source)
    if fence is not None:
        if path.is_file() or path.is_symlink():
            return fence.read_photo(path)
        archive = source.split("!", 1)[0]
        if not fence.holds(archive):
            raise fence.escape(archive)
    elif path.is_file():
        return read_photo_bytes(path)
    return archives.read_member(source)


def _lexically_under(source: str, folder: str | os.PathLike) -> bool:
    """Whether the path ``source`` names (links not followed) lies under ``folder``."""
    named = os.path.abspath(source.split("!", 1)[0])
    root = os.path.abspath(folder)
    return named == root or named.startswith(root.rstrip(os.sep) + os.sep)


def _sidecar(file: Path, fence: Fence | None = None) -> dict[str, str]:
    """The photo's sidecar JSON, if any; one that leads out of the fence is an ImageError
    ("symlink-escape", naming the photo: it waits, unread, for its sidecar to be fixed)."""
    for candidate in (file.with_name(file.name + ".json"), file.with_suffix(".json")):
        if candidate.is_file():
            if fence is not None and not fence.holds(candidate):
                raise ImageError(
                    str(file), "symlink-escape", f"its sidecar {candidate.name} leads outside the import root"
                )
            try:
                with fence.open(candidate) if fence is not None else open(candidate, "rb") as handle:
                    data = handle.read(MAX_SIDECAR_BYTES + 1)
            except OSError as exc:
                raise SourceError(f"{candidate}: sidecar is not readable ({exc.strerror or exc})") from None
            return parse_sidecar(data, str(candidate))
    return {}


def _manifest(path: Path | None, fence: Fence | None = None) -> Manifest:
    """The manifest's rows; one that cannot be read at all is one bad-manifest problem, and the
    photos go on without it (a manifest without a 'path' column is refused: SourceError). With a
    ``fence`` it is opened through it (ImageError "symlink-escape" when it leads out, never a FIFO)."""
    if path is None or not path.is_file():
        return Manifest()
    try:
        with fence.open(path) if fence is not None else open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        return Manifest(problems=[(str(path), f"manifest is not readable ({exc.strerror or exc})")])
    if len(data) > MAX_MANIFEST_BYTES:
        return Manifest(problems=[(str(path), f"manifest is over the {MAX_MANIFEST_BYTES:,}-byte cap")])
    return read_manifest(data, str(path))


def _failing_item(source: str, reason: str, detail: str) -> SourceItem:
    """An item whose read fails: how a bad archive or sidecar inside a folder becomes one report line."""
    return SourceItem(source, 0, failing_read(source, reason, detail))


def _archive_items(
    archive: Path, manifest: Manifest, inside_folder: bool = False, fence: Fence | None = None
) -> Iterator[SourceItem]:
    """Members in archive order, read while the archive is open (a .tar.gz cannot seek cheaply).

    An archive given directly that cannot be opened is an error; one found inside a folder becomes a
    failed item so that the rest of the folder is still ingested. A member that cannot be read (a
    truncated or damaged archive) is a failed item either way, and listing stops there. With a
    ``fence``, the archive is opened through it (one that leads out is a ``symlink-escape`` item).
    """
    try:
        handle = fence.open(archive) if fence is not None else None
    except ImageError as exc:
        yield _failing_item(str(archive), exc.reason, exc.detail)
        return
    except OSError as exc:
        yield _failing_item(str(archive), "unreadable", exc.strerror or str(exc))
        return
    try:
        for member in archives.iter_members(archive, handle):
            if _wanted(member.name):
                yield _member(archive, member, manifest)
    except archives.ARCHIVE_ERRORS as exc:
        if not inside_folder:
            raise SourceError(f"{archive}: unreadable archive ({exc})") from None
        yield _failing_item(str(archive), "corrupt", f"unreadable archive ({exc})")
    finally:
        if handle is not None:
            handle.close()


def _member(archive: Path, member: archives.Member, manifest: Manifest) -> SourceItem:
    source = archives.address(archive, member.name)
    if member.name in manifest.bad:
        return _failing_item(source, "bad-manifest", manifest.bad[member.name])
    return SourceItem(source, member.size, _member_reader(source, member), manifest.rows.get(member.name, {}))


def _wanted(member: str) -> bool:
    base = member.rsplit("/", 1)[-1]
    return bool(base) and not base.startswith(".") and not base.lower().endswith(SKIPPED_SUFFIXES)


def _member_reader(source: str, member: archives.Member) -> Callable[[], bytes]:
    def checked() -> bytes:
        archives.check_size(source, member.size)
        try:
            return member.read()
        except archives.ARCHIVE_ERRORS as exc:  # a truncated .tar.gz ends in EOFError: a bad member, not a bad run
            raise ImageError(source, "corrupt", f"damaged archive member ({exc})") from None

    return checked
