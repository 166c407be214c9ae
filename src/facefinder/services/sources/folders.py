"""Where photos come from: folders (recursive), zip and tar archives, with their provenance.

Provenance comes from a sidecar JSON next to a photo (``photo.jpg.json`` or ``photo.json``) or from
a CSV manifest (``manifest.csv`` at the root, or one given explicitly) with a ``path`` column
relative to the root. Recognised fields: source_url, captured_at, case_id, consent_id, notes.

Nothing found here stops a run: a folder that cannot be listed, a link that loops or leads nowhere,
a damaged archive or member, a bad sidecar or manifest row each become an item whose read fails
with a reason, and so one line of the ingest report.

facefinder only reads sources the operator holds: no crawling, no bulk import of third-party URLs.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


def iter_sources(
    path: str | os.PathLike, manifest: str | os.PathLike | None = None, provenance: bool = True
) -> Iterator[SourceItem]:
    """Every candidate photo under ``path`` (a folder, an archive, a single file, or an
    ``s3://bucket/prefix`` of object storage), sorted. ``provenance=False`` (search probes) reads
    no sidecar or manifest."""
    if is_object_uri(path):
        yield from iter_objects(str(path), SourceItem, SKIPPED_SUFFIXES, archives.ARCHIVE_SUFFIXES, MAX_PHOTO_BYTES)
        return
    root = Path(path).expanduser()
    if not root.exists():
        raise SourceError(f"{root}: no such file or folder")
    if root.is_file() and not archives.is_archive_name(root.name):
        yield _photo_item(root, root.stat().st_size, {}, provenance)
        return
    rows = Manifest()
    if provenance:
        rows = _manifest(Path(manifest) if manifest else (root / "manifest.csv" if root.is_dir() else None))
        for what, why in rows.problems:
            yield _failing_item(what, "bad-manifest", why)
    if not root.is_dir():
        yield from _archive_items(root, rows)
        return
    for found in _walk(root):
        if isinstance(found, SourceItem):
            yield found
            continue
        file, size = found
        relative = file.relative_to(root).as_posix()
        if archives.is_archive_name(file.name):
            yield from _archive_items(file, rows, inside_folder=True)
        elif not file.name.lower().endswith(SKIPPED_SUFFIXES):
            if relative in rows.bad:  # this photo waits for a fixed manifest row; the rest go on
                yield _failing_item(str(file), "bad-manifest", rows.bad[relative])
                continue
            yield _photo_item(file, size, rows.rows.get(relative, {}), provenance)


def _photo_item(file: Path, size: int, manifest_row: dict[str, str], provenance: bool) -> SourceItem:
    """A photo file; read through the byte cap. A bad sidecar makes it a failing item."""
    try:
        values = {**manifest_row, **_sidecar(file)} if provenance else {}
    except SourceError as exc:  # this photo waits for a fixed sidecar; the rest go on
        return _failing_item(str(file), "bad-sidecar", str(exc))
    return SourceItem(str(file), size, lambda: read_photo_bytes(file), values, location=str(file))


def _walk(root: Path) -> Iterator[tuple[Path, int] | SourceItem]:
    """(file, size) of every regular file under ``root``, depth first in name order, hidden ones left
    out; symbolic links are followed. A folder that cannot be listed, a link that leads nowhere and
    a link back to a folder above it become failing items. Iterative: no recursion limit on depth."""
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


def read_source(source: str) -> bytes:
    """The bytes of an ingested photo from where it was ingested: a path, or ``archive!member``.
    A file is read under the same byte cap as at ingest (it may have been replaced since)."""
    path = Path(source)
    if path.is_file():
        return read_photo_bytes(path)
    return archives.read_member(source)


def _sidecar(file: Path) -> dict[str, str]:
    for candidate in (file.with_name(file.name + ".json"), file.with_suffix(".json")):
        if candidate.is_file():
            try:
                with open(candidate, "rb") as handle:
                    data = handle.read(MAX_SIDECAR_BYTES + 1)
            except OSError as exc:
                raise SourceError(f"{candidate}: sidecar is not readable ({exc.strerror or exc})") from None
            return parse_sidecar(data, str(candidate))
    return {}


def _manifest(path: Path | None) -> Manifest:
    """The manifest's rows; one that cannot be read at all is one bad-manifest problem, and the
    photos go on without it (a manifest without a 'path' column is refused: SourceError)."""
    if path is None or not path.is_file():
        return Manifest()
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        return Manifest(problems=[(str(path), f"manifest is not readable ({exc.strerror or exc})")])
    if len(data) > MAX_MANIFEST_BYTES:
        return Manifest(problems=[(str(path), f"manifest is over the {MAX_MANIFEST_BYTES:,}-byte cap")])
    return read_manifest(data, str(path))


def _failing_item(source: str, reason: str, detail: str) -> SourceItem:
    """An item whose read fails: how a bad archive or sidecar inside a folder becomes one report line."""
    return SourceItem(source, 0, failing_read(source, reason, detail))


def _archive_items(archive: Path, manifest: Manifest, inside_folder: bool = False) -> Iterator[SourceItem]:
    """Members in archive order, read while the archive is open (a .tar.gz cannot seek cheaply).

    An archive given directly that cannot be opened is an error; one found inside a folder becomes a
    failed item so that the rest of the folder is still ingested. A member that cannot be read (a
    truncated or damaged archive) is a failed item either way, and listing stops there.
    """
    try:
        for member in archives.iter_members(archive):
            if _wanted(member.name):
                yield _member(archive, member, manifest)
    except archives.ARCHIVE_ERRORS as exc:
        if not inside_folder:
            raise SourceError(f"{archive}: unreadable archive ({exc})") from None
        yield _failing_item(str(archive), "corrupt", f"unreadable archive ({exc})")


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
