"""Provenance of a photo, read from a sidecar JSON or a CSV manifest, wherever those files live
(a folder or object storage): one parser for each, so both sources read them the same way.

Neither may sink an ingest: a sidecar that is not a JSON object, or not UTF-8, or holds a field over
its length, fails its photo (``bad-sidecar``); a manifest row that cannot be read fails the photo it
names (``bad-manifest``), so that the photo waits for a fixed manifest instead of being stored
without its case or consent id (a re-run would skip it as a duplicate and never add them).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from facefinder.errors import FaceFinderError, ImageError
from facefinder.storage.store import PROVENANCE_FIELDS

MAX_SIDECAR_BYTES = 1024 * 1024  # a sidecar over this is refused unread ("bad-sidecar")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a manifest over this is refused unread ("bad-manifest")
# Longest value per field: the catalog's column widths (captured_at, case_id, consent_id), and a
# bound for the free-text ones so that one field cannot bloat every search result that carries it.
FIELD_MAX_CHARS = {"source_url": 8192, "captured_at": 64, "case_id": 200, "consent_id": 200, "notes": 16384}


class SourceError(FaceFinderError):
    """A source as a whole (folder, archive, bucket, sidecar, manifest) cannot be read."""


@dataclass
class Manifest:
    """A manifest's usable rows, its rows that fail their photo, and problems with no photo to name."""

    rows: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> provenance
    bad: dict[str, str] = field(default_factory=dict)  # path -> why its row cannot be used
    problems: list[tuple[str, str]] = field(default_factory=list)  # (what, why): "manifest.csv line 7", ...


def parse_sidecar(text: str | bytes, name: str) -> dict[str, str]:
    """The provenance fields of a sidecar JSON; ``name`` is how errors refer to the file."""
    if isinstance(text, bytes):
        if len(text) > MAX_SIDECAR_BYTES:
            raise SourceError(f"{name}: sidecar is {len(text):,} bytes, over the {MAX_SIDECAR_BYTES:,}-byte cap")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SourceError(f"{name}: sidecar is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SourceError(f"{name}: sidecar is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{name}: sidecar must be a JSON object, not {type(data).__name__}")
    values = {k: str(data[k]) for k in PROVENANCE_FIELDS if data.get(k) is not None}
    too_long = _too_long(values)
    if too_long:
        raise SourceError(f"{name}: sidecar {too_long}")
    return values


def read_manifest(data: bytes, name: str) -> Manifest:
    """Parse a manifest row by row; raises SourceError only when it has no ``path`` column (then
    nothing in it can be matched to a photo, and ingesting without it would lose every row)."""
    text = data.decode("utf-8-sig", errors="surrogateescape")  # bad bytes fail their row, not the file
    reader = csv.reader(io.StringIO(text, newline=""))
    manifest = Manifest()
    header = _next_row(reader, name, manifest)
    if not header or "path" not in header or not _decodes(header):
        raise SourceError(f"{name}: a manifest needs a 'path' column")
    columns = {column: i for i, column in enumerate(header)}
    while True:
        try:
            row = _next_row(reader, name, manifest)
        except StopIteration:
            return manifest
        if row:
            _add_row(manifest, name, reader.line_num, row, columns)


def _next_row(reader, name: str, manifest: Manifest) -> list[str] | None:
    """The next CSV row, or None (with a problem recorded) for one the parser cannot split."""
    limit = csv.field_size_limit()
    csv.field_size_limit(MAX_MANIFEST_BYTES)  # our own per-field limits apply below, with a clear reason
    try:
        return next(reader)
    except csv.Error as exc:
        manifest.problems.append((f"{name} line {reader.line_num}", f"not a CSV row ({exc})"))
        return None
    finally:
        csv.field_size_limit(limit)


def _add_row(manifest: Manifest, name: str, line: int, row: list[str], columns: dict[str, int]) -> None:
    path = row[columns["path"]].strip() if columns["path"] < len(row) else ""
    where = f"{name} line {line}"
    if not path or not _decodes([path]):
        manifest.problems.append((where, "no usable 'path' (empty, or not UTF-8)"))
        return
    values = {
        k: row[columns[k]] for k in PROVENANCE_FIELDS if k in columns and columns[k] < len(row) and row[columns[k]]
    }
    if not _decodes(values.values()):
        manifest.bad[path] = f"{where}: not UTF-8 text"
    elif _too_long(values):
        manifest.bad[path] = f"{where}: {_too_long(values)}"
    else:
        manifest.rows[path] = values


def _decodes(values: Iterable[str]) -> bool:
    """False when a value holds bytes that were not UTF-8 (kept as lone surrogates by the decoder)."""
    try:
        for value in values:
            value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_long(values: dict[str, str]) -> str:
    for key, value in values.items():
        if len(value) > FIELD_MAX_CHARS[key]:
            return f"field {key} is {len(value):,} characters, over the {FIELD_MAX_CHARS[key]:,} allowed"
    return ""


def parse_manifest(data: bytes, name: str) -> dict[str, dict[str, str]]:
    """Manifest rows keyed by their ``path`` column, or SourceError naming the first unusable row
    (object storage, where a manifest is read once for a whole bucket prefix)."""
    manifest = read_manifest(data, name)
    if manifest.bad:
        raise SourceError(next(iter(manifest.bad.values())))
    if manifest.problems:
        raise SourceError(": ".join(manifest.problems[0]))
    return manifest.rows


def failing_read(source: str, reason: str, detail: str):
    """A read() that fails with ImageError: how one bad item becomes one line of an ingest report."""

    def read() -> bytes:
        raise ImageError(source, reason, detail)

    return read
