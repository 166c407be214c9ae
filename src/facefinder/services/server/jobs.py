"""Background ingest jobs for the service: one worker thread runs them in order, and reports progress
that the web UI polls. Each job ingests through the engine acting as its user, so it is audited
under that user's name like any ingest (a failed one as ``ingest.failed``).

Every job is confined to a folder (``root``): the import root its path lies in, or its upload's own
folder; no file it reads may lead out of it, links followed (services/sources/folders.py). An
uploaded archive unpacks within the room its ``UploadSpace`` leaves (services/server/uploads.py),
and what a job shows of an upload names it as ``upload:<name>``, never by its server path.

Jobs are kept in the catalog (services/server/job_records.py): the list, each job's counts (photos
stored, duplicates, photos without a face, failures) and its report outlive a restart. A job that a
stopped server left queued or running shows as ``interrupted``; re-running the ingest resumes it,
skipping photos already stored, and the upload folders of such jobs are swept when the next server
starts.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facefinder.errors import FaceFinderError, NotFound
from facefinder.services.audit import AuditLog
from facefinder.services.ingest import Progress
from facefinder.services.server import job_records, uploads
from facefinder.services.server.accounts import Accounts, Principal
from facefinder.services.sources import archives
from facefinder.storage.store import FaceStore

log = logging.getLogger(__name__)
LISTED_FAILURES = 1000  # a job's report lists this many failed files at most (the collection's list has all)
SAVE_EVERY = 1.0  # seconds between writes of a running job's progress to the catalog


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class IngestJob:
    """One background ingest the server runs for a user: what, for whom, and how far it got."""

    id: str
    owner_id: int
    owner: str
    collection: str
    label: str  # what the user gave: a server-side path, or "upload:<file name>"
    path: Path
    upload: bool = False  # an uploaded archive or photo, unpacked by the job
    folder: Path | None = None  # an upload's own folder under <data dir>/uploads (services/server/uploads.py)
    root: Path | None = None  # the folder no source of the job may lead out of
    state: str = "queued"  # queued | running | done | failed | interrupted (its server stopped)
    done: int = 0
    total: int = 0
    faces: int = 0
    failures: int = 0
    report: dict | None = None
    error: str | None = None
    created_at: str = field(default_factory=_now)
    finished_at: str | None = None
    collection_id: int = 0
    ingested: int = 0  # photos stored (known once the job is done)
    duplicates: int = 0  # photos the collection held already: skipped, nothing kept
    photos_without_faces: int = 0  # stored, but no face was found in them
    process: str = field(default_factory=uploads.this_process)  # the server process running it

    def as_dict(self) -> dict:
        """What the API shows of the job (no server path of an upload)."""
        return {
            "id": self.id,
            "owner": self.owner,
            "collection": self.collection,
            "source": self.label,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "faces": self.faces,
            "failures": self.failures,
            "report": self.report,
            "error": self.error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "photos_without_faces": self.photos_without_faces,
        }

    def to_record(self) -> dict:
        """Everything the catalog keeps of the job (services/server/job_records.py)."""
        paths = {k: str(v) if v is not None else None for k, v in (("folder", self.folder), ("root", self.root))}
        return {
            **self.as_dict(),
            **paths,
            "owner_id": self.owner_id,
            "collection_id": self.collection_id,
            "path": str(self.path),
            "upload": self.upload,
            "process": self.process,
        }

    @classmethod
    def from_record(cls, record: dict) -> IngestJob:
        """A job as the catalog kept it (one this process does not run)."""
        fields = {k: record[k] for k in cls.__dataclass_fields__ if k in record}
        fields["label"] = record.get("source", "")
        for key in ("path", "folder", "root"):
            fields[key] = Path(record[key]) if record.get(key) else None
        fields["path"] = fields["path"] or Path()
        return cls(**fields)

    @property
    def scope(self) -> Path:
        """Where the job's photos came from: its upload's folder, or the server path it was given."""
        return self.folder if self.folder is not None else self.path


class IngestJobs:
    """The server's ingest queue: one worker thread runs jobs in order, each audited as its user, each
    kept in the catalog (its row outlives a restart; services/server/job_records.py)."""

    def __init__(
        self,
        store: FaceStore,
        accounts: Accounts,
        audit: AuditLog,
        finder_as: Callable[[str], Any],
        keep: int = 200,
        space: uploads.UploadSpace | None = None,
    ) -> None:
        """``finder_as(username)`` gives the engine (FaceFinder) auditing as that user; ``space``
        bounds the uploads (default: ``UploadSpace``'s defaults). Jobs a stopped server left open are
        marked interrupted, and their upload folders swept, now (services/server/uploads.py)."""
        self.store, self.accounts, self.audit, self.finder_as = store, accounts, audit, finder_as
        self.keep, self.space = keep, space or uploads.UploadSpace(store.data_dir)
        try:
            job_records.interrupt_gone(store.catalog)
            uploads.sweep(store)
        except Exception:  # a server that cannot tidy up still serves; the next erasure's sweep retries
            log.exception("could not mark interrupted jobs or sweep the uploads folder")
        self._jobs: dict[str, IngestJob] = {}  # the jobs of this process, live
        self._saved: dict[str, float] = {}  # job id -> when its row was last written
        self._queue: queue.Queue[IngestJob | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(
        self,
        principal: Principal,
        collection: str,
        path: Path,
        label: str,
        upload: bool = False,
        root: Path | None = None,
    ) -> IngestJob:
        """Queue an ingest of ``path`` into an existing ``collection`` the principal may ingest into.
        ``root``: the folder the job may not lead out of (an import root; default: ``path``'s own
        folder); an upload is confined to its own folder."""
        principal.require("admin", "investigator")
        target = self.store.collection(collection)  # raises when it does not exist
        self.accounts.require_collections(principal, [collection])
        path = Path(path)
        folder = path.parent if upload else None
        job = IngestJob(
            secrets.token_hex(8),
            principal.id,
            principal.username,
            collection,
            label,
            path,
            upload,
            folder=folder,
            root=folder or root or (path if path.is_dir() else path.parent),
            collection_id=target.id,
        )
        job_records.save(self.store.catalog, job.to_record())
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state not in job_records.OPEN]
            for old in finished[: max(0, len(self._jobs) - self.keep)]:
                del self._jobs[old.id]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="ingest-jobs", daemon=True)
                self._thread.start()
        self._safely(job_records.prune, self.store.catalog, self.keep)
        self._queue.put(job)
        return job

    def get(self, principal: Principal, job_id: str) -> IngestJob:
        """One job, live if this process runs it (others' jobs: 404 for investigators)."""
        principal.require("admin", "investigator")
        job = self._jobs.get(job_id)
        if job is None:
            record = job_records.load(self.store.catalog, job_id)
            job = IngestJob.from_record(record) if record is not None else None
        if job is None or (principal.role != "admin" and job.owner_id != principal.id):
            raise NotFound(f"ingest job {job_id!r} does not exist")
        return job

    def list(self, principal: Principal) -> list[IngestJob]:
        """The newest jobs, newest first (an investigator's own; admins: all), from the catalog, with
        this process's running jobs as they are now."""
        principal.require("admin", "investigator")
        self._safely(job_records.interrupt_gone, self.store.catalog)
        owner = None if principal.role == "admin" else principal.id
        with self._lock:
            live = dict(self._jobs)
        listed = [
            live.get(r["id"]) or IngestJob.from_record(r)
            for r in job_records.listing(self.store.catalog, owner, self.keep)
        ]
        shown = {j.id for j in listed}
        missing = [j for j in live.values() if j.id not in shown and (owner is None or j.owner_id == owner)]
        return sorted(missing + listed, key=lambda j: j.created_at, reverse=True)[: self.keep]

    def wait(self, job_id: str, timeout: float = 120) -> IngestJob:
        """Block until a job finishes (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self._jobs[job_id]
            if job.state not in job_records.OPEN:
                return job
            time.sleep(0.05)
        raise TimeoutError(job_id)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: IngestJob) -> None:
        """Run a job; it shows as finished only once an upload's unused copies are gone."""
        job.state, state = "running", "failed"
        self._save(job, force=True)
        try:
            state = self._ingest(job)
        finally:
            if job.folder is not None:
                self._release(job)
            job.state, job.finished_at = state, _now()
            self._save(job, force=True)

    def _save(self, job: IngestJob, force: bool = False) -> None:
        """Write the job's row (a running job's progress at most every ``SAVE_EVERY`` seconds)."""
        now = time.monotonic()
        if force or now - self._saved.get(job.id, 0.0) >= SAVE_EVERY:
            self._saved[job.id] = now
            self._safely(job_records.save, self.store.catalog, job.to_record())
        if job.state not in job_records.OPEN:
            self._saved.pop(job.id, None)

    @staticmethod
    def _safely(write: Callable[..., Any], *args: Any) -> None:
        """A write of the job list that must not stop a job (the job goes on; its row catches up later)."""
        try:
            write(*args)
        except Exception:
            log.exception("could not write the ingest job list")

    def _release(self, job: IngestJob) -> None:
        """Whatever the outcome, an upload keeps only the files that became stored photos: duplicates,
        failures, opted-out and consent-withdrawn photos, sidecars and the archive are zeroed and
        removed; its failure rows name it as the user knows it."""
        try:
            uploads.name_failures(self.store, job.folder, lambda text: _shown(text, job))
            uploads.release(self.store, job.folder)
        except Exception:  # never let the worker thread die; the next erasure's sweep retries
            log.exception("could not clean up upload folder %s", job.folder)

    def _ingest(self, job: IngestJob) -> str:
        """Unpack and ingest; returns the job's final state."""

        def progress(p: Progress) -> None:
            job.done, job.total, job.faces, job.failures = p.done, p.total, p.faces, p.failures
            self._save(job)

        try:
            if job.upload:
                job.path = unpack_upload(job.path, *self.space.unpack_limit(job.path))
            report = self.finder_as(job.owner).ingest(
                job.path, job.collection, None, progress, confine_to=job.root, shown_as=job.label
            )
        except Exception as exc:  # never let the worker thread die; the job says what happened
            message = str(exc) if isinstance(exc, FaceFinderError) else f"internal error: {type(exc).__name__}"
            job.error = message = _shown(message, job)
            self.audit.record(job.owner, "ingest.failed", collection=job.collection, path=job.label, error=message)
            return "failed"
        job.report = _report(report, job)
        job.done, job.total, job.faces, job.failures = report.seen, report.seen, report.faces, len(report.failures)
        job.ingested, job.duplicates = report.ingested, report.duplicates
        job.photos_without_faces = report.photos_without_faces
        return "done"


def _report(report: Any, job: IngestJob) -> dict:
    """An ingest's report as the job shows it: counts, and the failed files (at most
    ``LISTED_FAILURES``) named as the user knows them."""
    return {
        "collection": report.collection,
        "seen": report.seen,
        "ingested": report.ingested,
        "duplicates": report.duplicates,
        "faces": report.faces,
        "photos_without_faces": report.photos_without_faces,
        "opted_out": getattr(report, "opted_out", 0),
        "opted_out_photos": getattr(report, "opted_out_photos", 0),
        "consent_withdrawn": getattr(report, "consent_withdrawn", 0),
        "failures": [
            {"source": _shown(f.source, job), "reason": f.reason, "detail": _shown(f.detail, job)}
            for f in report.failures[:LISTED_FAILURES]
        ],
        "failures_listed": min(len(report.failures), LISTED_FAILURES),
        "seconds": round(report.seconds, 2),
    }


def unpack_upload(upload: Path, max_total: int, limit: str = "") -> Path:
    """An uploaded archive, unpacked next to it (then zeroed and removed); returns the folder to ingest.

    Each photo becomes its own file under ``<data dir>/uploads/``, so it can be shown with its face
    boxed and erased on its own: archives inside the archive are unpacked too, to ``max_total``
    bytes in all (``limit`` says what sets it; sources/archives.py says how, and how untrusted names
    and sizes are kept in check). A single uploaded photo is ingested as it is.
    """
    if not archives.is_archive_name(upload.name):
        return upload.parent
    try:
        return archives.unpack(upload, upload.parent / uploads.UNPACKED, max_total, limit)
    except archives.ARCHIVE_ERRORS as exc:
        why = (exc.strerror or type(exc).__name__) if isinstance(exc, OSError) else str(exc)
        raise FaceFinderError(f"file: unreadable archive ({why})") from None


def _shown(text: str, job: IngestJob) -> str:
    """``text`` (a failure's source or detail, an error) as the user may see it: the server paths of
    an upload become ``upload:<name>``, and what was inside it ``upload:<name>!member``."""
    if not job.upload or job.folder is None:
        return text
    folder = str(job.folder)
    text = text.replace(f"{folder}{os.sep}{uploads.UNPACKED}{os.sep}", f"{job.label}!")
    text = text.replace(f"{folder}{os.sep}{job.label.removeprefix('upload:')}", job.label)
    return text.replace(f"{folder}{os.sep}", f"{job.label}!").replace(folder, job.label)
