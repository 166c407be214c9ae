"""Where photos come from: folders (recursive), zip and tar archives, with their provenance.

Provenance comes from a sidecar JSON next to a photo (``photo.jpg.json`` or ``photo.json``) or from
a CSV manifest (``manifest.csv`` at the root, or one given explicitly) with a ``path`` column
relative to the root. Recognised fields: source_url, captured_at, case_id, consent_id, notes.

facefinder only reads sources the operator holds: no crawling, no bulk import of third-party URLs.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from zlib import error as zlib_error
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from facefinder.services.object_storage import is_object_uri, iter_objects, read_object
from facefinder.services.provenance import SourceError, failing_read, parse_manifest, parse_sidecar

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
SKIPPED_SUFFIXES = (".json", ".csv", ".txt", ".md")  # sidecars, manifests and notes are not photos
MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclass
class SourceItem:
    source: str  # a path, or "archive.zip!inner/path.jpg" for an archive member
    size: int
    read: Callable[[], bytes]
    provenance: dict[str, str] = field(default_factory=dict)
    # Where a worker on another machine reads it from (a file path or s3:// URI), or None when only
    # this process can (archive members, items that stand for a failure): see services/distributed.py.
    location: str | None = None


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def iter_sources(path: str | os.PathLike, manifest: str | os.PathLike | None = None) -> Iterator[SourceItem]:
    """Every candidate photo under ``path`` (a folder, an archive, a single file, or an
    ``s3://bucket/prefix`` of object storage), sorted."""
    if is_object_uri(path):
        yield from iter_objects(str(path), SourceItem, SKIPPED_SUFFIXES, ARCHIVE_SUFFIXES, MAX_FILE_BYTES)
        return
    root = Path(path).expanduser()
    if not root.exists():
        raise SourceError(f"{root}: no such file or folder")
    if root.is_file() and not is_archive(root):
        yield _file_item(root, _sidecar(root))
        return
    manifest_rows = _manifest(Path(manifest) if manifest else (root / "manifest.csv" if root.is_dir() else None))
    if root.is_dir():
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = file.relative_to(root).as_posix()
            if any(part.startswith(".") for part in file.relative_to(root).parts):
                continue
            if is_archive(file):
                yield from _archive_items(file, manifest_rows, inside_folder=True)
            elif not file.name.lower().endswith(SKIPPED_SUFFIXES):
                try:
                    provenance = {**manifest_rows.get(relative, {}), **_sidecar(file)}
                except SourceError as exc:  # this photo waits for a fixed sidecar; the rest go on
                    yield _failing_item(str(file), "bad-sidecar", str(exc))
                    continue
                yield _file_item(file, provenance)
    else:
        yield from _archive_items(root, manifest_rows)


def _file_item(file: Path, provenance: dict[str, str]) -> SourceItem:
    return SourceItem(str(file), file.stat().st_size, file.read_bytes, provenance, location=str(file))


def read_location(location: str, size: int) -> bytes:
    """Read a photo by its ``location`` (see SourceItem), in any process: what remote workers do."""
    if is_object_uri(location):
        return read_object(location, size, MAX_FILE_BYTES)
    _check_size(location, size)
    return Path(location).read_bytes()


def _sidecar(file: Path) -> dict[str, str]:
    for candidate in (file.with_name(file.name + ".json"), file.with_suffix(".json")):
        if candidate.is_file():
            try:
                text = candidate.read_text()
            except OSError as exc:
                raise SourceError(f"{candidate}: sidecar is not readable ({exc})") from None
            return parse_sidecar(text, str(candidate))
    return {}


def _manifest(path: Path | None) -> dict[str, dict[str, str]]:
    if path is None or not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return parse_manifest(handle, str(path))


def _failing_item(source: str, reason: str, detail: str) -> SourceItem:
    """An item whose read fails: how a bad archive or sidecar inside a folder becomes one report line."""
    return SourceItem(source, 0, failing_read(source, reason, detail))


def _archive_items(archive: Path, manifest_rows: dict[str, dict[str, str]],
                   inside_folder: bool = False) -> Iterator[SourceItem]:
    """Members in archive order, read while the archive is open (a .tar.gz cannot seek cheaply).

    An archive given directly that cannot be read is an error; one found inside a folder becomes a
    failed item so that the rest of the folder is still ingested.
    """
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not info.is_dir() and _wanted(info.filename):
                        yield SourceItem(f"{archive}!{info.filename}", info.file_size,
                                         _member_reader(f"{archive}!{info.filename}", info.file_size,
                                                        lambda i=info: zf.read(i)),
                                         manifest_rows.get(info.filename, {}))
        else:
            with tarfile.open(archive) as tf:
                for member in tf:
                    if member.isfile() and _wanted(member.name):
                        yield SourceItem(f"{archive}!{member.name}", member.size,
                                         _member_reader(f"{archive}!{member.name}", member.size,
                                                        lambda m=member: tf.extractfile(m).read()),
                                         manifest_rows.get(member.name, {}))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib_error) as exc:
        if not inside_folder:
            raise SourceError(f"{archive}: unreadable archive ({exc})") from None
        yield _failing_item(str(archive), "corrupt", f"unreadable archive ({exc})")


def _wanted(member: str) -> bool:
    base = member.rsplit("/", 1)[-1]
    return bool(base) and not base.startswith(".") and not base.lower().endswith(SKIPPED_SUFFIXES)


def _member_reader(source: str, size: int, read: Callable[[], bytes]) -> Callable[[], bytes]:
    def checked() -> bytes:
        _check_size(source, size)
        return read()
    return checked


def _check_size(source: str, size: int) -> None:
    from facefinder.errors import ImageError

    if size > MAX_FILE_BYTES:
        raise ImageError(source, "too-large", f"{size:,} bytes exceeds the {MAX_FILE_BYTES:,}-byte cap")
