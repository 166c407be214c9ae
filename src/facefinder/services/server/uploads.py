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
``release``), so a sweep never takes a file from under a running job. The marker names the server
process that wrote it (host, pid and a token of that process): a server stopped during a job leaves
a marker whose process is gone, and the next sweep (every erasure, the server's start, ``check
--repair``) treats that folder as any other. A marker from another host, or from an older version
(empty), cannot be judged and is respected; its files are listed by ``orphans``.

``UploadSpace`` bounds the folder as a whole: a quota per data directory for every upload, and how
much one archive may unpack to (see its docstring). Failures of an upload are named as the user
knows them (``upload:<name>!member``), in the job's report and in the catalog's failure rows
(``name_failures``), and so is every stored photo wherever its source is shown (``display_name``: an
upload's folder ends with the uploaded file's name): the server's own paths are never shown.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote

from sqlalchemy import delete, select

from facefinder.errors import FaceFinderError
from facefinder.storage.catalog import ImageRecord, IngestFailure
from facefinder.storage.index import scrub_file
from facefinder.storage.store import FaceStore

log = logging.getLogger(__name__)

UPLOADS = "uploads"
IN_FLIGHT = ".ingesting"  # a dot file: ingest skips it (services/sources/folders.py)
UNPACKED = "files"  # an uploaded archive unpacks into this folder of its upload's folder (jobs.py)
GiB = 1024**3
_PROCESS = secrets.token_hex(8)  # this process, in its markers: a restarted server with the same pid is another


def uploads_dir(data_dir: Path) -> Path:
    return Path(data_dir) / UPLOADS


def new_folder(data_dir: Path, name: str = "") -> Path:
    """A fresh folder for one upload, marked as in flight (by this process) until its job releases it.
    ``name`` (the uploaded file's safe name) ends the folder's name, so that what stays of the upload
    can be shown as ``upload:<name>!<member>`` (``display_name``) long after the archive is gone; its
    dots are written ``%2E``, so that the folder never looks like an archive or a photo itself."""
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
    folder = uploads_dir(data_dir) / (f"{stamp}-{quote(name, safe='')}".replace(".", "%2E") if name else stamp)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / IN_FLIGHT).write_text(this_process() + "\n")
    return folder


def this_process() -> str:
    """This server process, as markers name it: host, pid and a token (a restart with the same pid differs)."""
    return f"{socket.gethostname()} {os.getpid()} {_PROCESS}"


def process_gone(marker: str) -> bool:
    """Whether ``marker`` (``this_process()`` of some process) names a process of this host known to be
    gone. Another host's, an unreadable or an older (empty) marker cannot be judged: not gone."""
    host, pid, process = (marker.split() + ["", "", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit() or os.name != "posix":
        return False  # another machine's, or an older version's: cannot be judged from here
    if int(pid) == os.getpid():
        return process != _PROCESS
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists, under another user
    return False


def in_flight(folder: Path) -> bool:
    """Whether a job may still be working in ``folder``: it holds the marker, and the marker does
    not name a process of this host known to be gone (its server stopped during the job)."""
    try:
        marker = (folder / IN_FLIGHT).read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return not process_gone(marker)


def display_name(source: str, data_dir: Path | str) -> str:
    """How a stored photo's source is shown to users. A copy under uploads/ is named as its uploader
    knows it, ``upload:<file>`` or ``upload:<archive>!<member>``, never by its path on the server;
    any other source (the operator's own path or URI) is shown as it is. The stored source stays as
    it is: the photo view and erasure need it. (An upload made before folders carried their upload's
    name shows as ``upload:(archive)!<member>``.)"""
    root = str(uploads_dir(data_dir)) + os.sep
    if not source.startswith(root):
        return source
    folder, _, rest = source[len(root) :].partition(os.sep)
    parts = folder.split("-", 2)
    name = unquote(parts[2]) if len(parts) == 3 else ""
    if rest.startswith(UNPACKED + os.sep):
        return f"upload:{name or '(archive)'}!{rest[len(UNPACKED) + 1 :]}"
    return f"upload:{rest or name}"


class QuotaExceeded(FaceFinderError):
    """An upload that would take the uploads folder past its quota (the server answers 507)."""

    field = "file"


class UploadSpace:
    """How much room uploads may take: a quota for the whole uploads folder of one data directory,
    and how much one uploaded archive may unpack to.

    Uploads are copies on the disk that holds the catalog; unbounded, a few small archives that
    unpack to gigabytes (a zip of zeros) fill it. A new upload is admitted (``claim``) only while
    the folder, with what uploads arriving at the same moment have claimed, stays within ``quota``
    bytes; its archive then unpacks to at most the smallest of ``ratio`` times its size, the room
    left under the quota, and ``max_unpacked`` bytes (``unpack_limit``). What stays counts too:
    the copies of stored photos take room until they are erased."""

    def __init__(self, data_dir: Path, quota: int = 20 * GiB, ratio: int = 100, max_unpacked: int = 8 * GiB) -> None:
        self.root, self.quota, self.ratio, self.max_unpacked = uploads_dir(data_dir), quota, ratio, max_unpacked
        self._claimed = 0
        self._lock = threading.Lock()

    def used(self) -> int:
        """Bytes of the files under the uploads folder now (links not followed)."""
        return sum(f.stat(follow_symlinks=False).st_size for f in _files(self.root, include_marker=True))

    @contextmanager
    def claim(self, size: int) -> Iterator[None]:
        """Hold ``size`` bytes of the quota while an upload is written (QuotaExceeded when they do not fit)."""
        with self._lock:
            used = self.used() + self._claimed
            if used + size > self.quota:
                raise QuotaExceeded(
                    f"file: the uploads folder is full: {_size(used)} of its {_size(self.quota)} quota in use, "
                    f"and this upload is {_size(size)}; erase what is no longer needed, or raise --upload-quota-gb"
                )
            self._claimed += size
        try:
            yield
        finally:
            with self._lock:
                self._claimed -= size

    def unpack_limit(self, archive: Path) -> tuple[int, str]:
        """The most bytes ``archive`` (already in the folder) may unpack to, and what sets that bound."""
        with self._lock:
            room = self.quota - self.used() - self._claimed
        return min(
            (self.ratio * archive.stat().st_size, f"an archive may unpack to {self.ratio} times its size"),
            (max(0, room), f"what is left of the {_size(self.quota)} uploads quota"),
            (self.max_unpacked, f"the {_size(self.max_unpacked)} cap on one upload"),
        )


def _size(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB // 10 else f"{n / 1024**2:.1f} MiB"


def name_failures(store: FaceStore, folder: Path, shown: Callable[[str], str]) -> int:
    """Rename the catalog's failure rows of the files under ``folder`` (an upload's) as ``shown``
    gives them (``upload:<name>!member``), detail included, so that the collection's failure list
    never shows a server path. Returns how many rows."""
    prefix = str(folder).rstrip(os.sep) + os.sep
    with store.catalog.session() as session, session.begin():
        rows = list(
            session.scalars(select(IngestFailure).where(IngestFailure.source.startswith(prefix, autoescape=True)))
        )
        for row in rows:
            source = shown(row.source)
            session.execute(
                delete(IngestFailure).where(
                    IngestFailure.collection_id == row.collection_id, IngestFailure.source == source
                )
            )
            row.source, row.detail = source, shown(row.detail)
        return len(rows)


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
    """After an erasure (and when the server starts): scrub every file under uploads/ that no photo
    row names, outside folders in flight (``in_flight``: a stale marker does not count), and remove
    those folders' markers. Returns how many files were scrubbed."""
    root = uploads_dir(store.data_dir)
    if not root.is_dir():
        return 0
    named = _named(store, root)  # one query (images.source has no index: one scan, not one per folder)
    count = 0
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not in_flight(entry):
            count += _scrub_unnamed(store, entry, named)
            (entry / IN_FLIGHT).unlink(missing_ok=True)  # a stale one: its job is gone
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
