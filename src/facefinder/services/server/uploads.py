"""Copies of uploaded photos under ``<data dir>/uploads``: which may stay, and scrubbing the rest.

Each upload through the server gets its own folder. The only files that may stay there are the
sources of stored photos (results show them; erasing the photo's row scrubs its copy, see
``FaceStore.owned_copies``). Everything else an upload brings (a photo already stored, so
a duplicate; one that failed, matched the opt-out list or carries a withdrawn consent; sidecars,
manifests, the archive itself) is a copy facefinder would otherwise keep for ever and that no
erasure could reach, because no row names it. So:

* ``release`` runs when an upload job ends, whatever the outcome (done or failed), and zeroes and
  removes every file of the job's folder that no photo row names;
* ``sweep`` runs after every erasure and does the same for every upload folder not marked as in
  flight, which also reaches copies left by older versions or by a crash in the middle of a job.

A folder is in flight while it holds ``IN_FLIGHT`` (written when the upload arrives, removed by
``release``), so a sweep never takes a file from under a running job. A server killed during a job
leaves the marker; the next upload's job does not clear it, so such a folder keeps its unused files
until the marker is removed by hand (the files are listed by ``orphans``).
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from facefinder.storage.catalog import ImageRecord
from facefinder.storage.index import scrub_file
from facefinder.storage.store import FaceStore

log = logging.getLogger(__name__)

UPLOADS = "uploads"
IN_FLIGHT = ".ingesting"  # a dot file: ingest skips it (services/sources/folders.py)


def uploads_dir(data_dir: Path) -> Path:
    return Path(data_dir) / UPLOADS


def new_folder(data_dir: Path) -> Path:
    """A fresh folder for one upload, marked as in flight until its job releases it."""
    folder = uploads_dir(data_dir) / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / IN_FLIGHT).touch()
    return folder


def scrub_tree(folder: Path) -> int:
    """Zero and remove every file under ``folder``, then the folder; returns how many files."""
    count = 0
    for file in _files(folder, include_marker=True):
        scrub_file(file)
        count += 1
    _remove_empty_dirs(folder)
    return count


def release(store: FaceStore, folder: Path) -> int:
    """An upload job ended: scrub every file of its folder that no photo row names, then drop the
    in-flight marker. Returns how many files were scrubbed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    count = _scrub_unnamed(store, folder)
    (folder / IN_FLIGHT).unlink(missing_ok=True)
    _remove_empty_dirs(folder)
    return count


def sweep(store: FaceStore) -> int:
    """After an erasure: scrub every file under uploads/ that no photo row names, outside folders
    in flight. Returns how many files were scrubbed."""
    root = uploads_dir(store.data_dir)
    if not root.is_dir():
        return 0
    named = _named(store, root)  # one query (images.source has no index: one scan, not one per folder)
    count = 0
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not (entry / IN_FLIGHT).exists():
            count += _scrub_unnamed(store, entry, named)
            _remove_empty_dirs(entry)
        elif entry.is_file() and not entry.is_symlink() and not _is_named(entry, root, named):
            scrub_file(entry)
            count += 1
    return count


def orphans(store: FaceStore) -> list[Path]:
    """Files under uploads/ that no photo row names (those of folders in flight included)."""
    root = uploads_dir(store.data_dir)
    if not root.is_dir():
        return []
    named = _named(store, root)
    return [f for f in _files(root) if not _is_named(f, root, named)]


# ----- helpers ------------------------------------------------------------------------------------
def _scrub_unnamed(store: FaceStore, folder: Path, named: set[str] | None = None) -> int:
    root = uploads_dir(store.data_dir)
    named = _named(store, folder) if named is None else named
    count = 0
    for file in _files(folder):
        if not _is_named(file, root, named):
            try:
                scrub_file(file)
                count += 1
            except OSError as exc:  # one unwritable file must not stop the rest
                log.warning("could not scrub %s: %s", file, exc)
    return count


def _named(store: FaceStore, under: Path) -> set[str]:
    """Paths under uploads/ (relative to it, archive members cut off) that photo rows name as their source.

    Names under uploads/ are sanitised when written (no ``!``), so the first ``!`` after the uploads
    prefix is where an archive member begins."""
    root = str(uploads_dir(store.data_dir))
    prefix = str(under).rstrip(os.sep) + os.sep
    with store.catalog.session() as session:
        sources = session.scalars(
            select(ImageRecord.source).where(ImageRecord.source.startswith(prefix, autoescape=True))
        )
        return {s[len(root) + 1 :].split("!", 1)[0] for s in sources}


def _is_named(file: Path, root: Path, named: set[str]) -> bool:
    return str(file)[len(str(root)) + 1 :] in named


def _files(folder: Path, include_marker: bool = False) -> list[Path]:
    found = []
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(parent) / name
            # Links are never followed (unpacking writes none): scrubbing one would zero its target.
            if (include_marker or name != IN_FLIGHT) and path.is_file() and not path.is_symlink():
                found.append(path)
    return sorted(found)


def _remove_empty_dirs(folder: Path) -> None:
    """Remove ``folder`` and the folders under it that are (now) empty."""
    for parent, _dirs, _names in os.walk(folder, topdown=False):  # children before their parent
        try:
            os.rmdir(parent)
        except OSError:
            pass  # not empty
