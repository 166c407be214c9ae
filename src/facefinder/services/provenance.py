"""Provenance of a photo, read from a sidecar JSON or a CSV manifest, wherever those files live
(a folder or object storage): one parser for each, so both sources read them the same way."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable

from facefinder.errors import FaceFinderError, ImageError
from facefinder.storage.store import PROVENANCE_FIELDS


class SourceError(FaceFinderError):
    """A source as a whole (folder, archive, bucket, sidecar, manifest) cannot be read."""


def parse_sidecar(text: str | bytes, name: str) -> dict[str, str]:
    """The provenance fields of a sidecar JSON; ``name`` is how errors refer to the file."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SourceError(f"{name}: sidecar is not valid JSON ({exc})") from None
    return {k: str(data[k]) for k in PROVENANCE_FIELDS if data.get(k) is not None}


def parse_manifest(lines: Iterable[str], name: str) -> dict[str, dict[str, str]]:
    """Manifest rows keyed by their ``path`` column (relative to the ingested root)."""
    reader = csv.DictReader(lines)
    if not reader.fieldnames or "path" not in reader.fieldnames:
        raise SourceError(f"{name}: a manifest needs a 'path' column")
    return {row["path"].strip(): {k: row[k] for k in PROVENANCE_FIELDS if row.get(k)} for row in reader}


def failing_read(source: str, reason: str, detail: str):
    """A read() that fails with ImageError: how one bad item becomes one line of an ingest report."""
    def read() -> bytes:
        raise ImageError(source, reason, detail)
    return read
