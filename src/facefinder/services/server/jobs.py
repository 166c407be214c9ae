"""Background ingest jobs for the service: one worker thread runs them in order, and reports progress
that the web UI polls. Each job ingests through the engine acting as its user, so it is audited
under that user's name like any ingest (a failed one as ``ingest.failed``).

Jobs live in memory: a restart forgets the list (the catalog keeps everything ingested, and
re-running an ingest resumes it, skipping photos already stored).
"""

from __future__ import annotations

import logging
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
from facefinder.services.server import uploads
from facefinder.services.server.accounts import Accounts, Principal
from facefinder.services.sources import archives
from facefinder.storage.store import FaceStore

log = logging.getLogger(__name__)


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
    state: str = "queued"  # queued | running | done | failed
    done: int = 0
    total: int = 0
    faces: int = 0
    failures: int = 0
    report: dict | None = None
    error: str | None = None
    created_at: str = field(default_factory=_now)
    finished_at: str | None = None

    def as_dict(self) -> dict:
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
        }


class IngestJobs:
    """The server's ingest queue: one worker thread runs jobs in order, each audited as its user."""

    def __init__(
        self,
        store: FaceStore,
        accounts: Accounts,
        audit: AuditLog,
        finder_as: Callable[[str], Any],
        keep: int = 200,
        max_unpacked_bytes: int = 8 * 1024**3,
    ) -> None:
        """``finder_as(username)`` gives the engine (FaceFinder) auditing as that user."""
        self.store, self.accounts, self.audit, self.finder_as = store, accounts, audit, finder_as
        self.keep, self.max_unpacked_bytes = keep, max_unpacked_bytes
        self._jobs: dict[str, IngestJob] = {}
        self._queue: queue.Queue[IngestJob | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, principal: Principal, collection: str, path: Path, label: str, upload: bool = False) -> IngestJob:
        """Queue an ingest of ``path`` into an existing ``collection`` the principal may ingest into."""
        principal.require("admin", "investigator")
        self.store.collection(collection)  # raises when it does not exist
        self.accounts.require_collections(principal, [collection])
        job = IngestJob(
            secrets.token_hex(8),
            principal.id,
            principal.username,
            collection,
            label,
            Path(path),
            upload,
            folder=Path(path).parent if upload else None,
        )
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state in ("done", "failed")]
            for old in finished[: max(0, len(self._jobs) - self.keep)]:
                del self._jobs[old.id]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="ingest-jobs", daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job

    def get(self, principal: Principal, job_id: str) -> IngestJob:
        principal.require("admin", "investigator")
        job = self._jobs.get(job_id)
        if job is None or (principal.role != "admin" and job.owner_id != principal.id):
            raise NotFound(f"ingest job {job_id!r} does not exist")
        return job

    def list(self, principal: Principal) -> list[IngestJob]:
        principal.require("admin", "investigator")
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in reversed(jobs) if principal.role == "admin" or j.owner_id == principal.id]

    def wait(self, job_id: str, timeout: float = 120) -> IngestJob:
        """Block until a job finishes (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self._jobs[job_id]
            if job.state in ("done", "failed"):
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
        try:
            state = self._ingest(job)
        finally:
            if job.folder is not None:
                self._release(job)
            job.state, job.finished_at = state, _now()

    def _release(self, job: IngestJob) -> None:
        """Whatever the outcome, an upload keeps only the files that became stored photos: duplicates,
        failures, opted-out and consent-withdrawn photos, sidecars and the archive are zeroed and removed."""
        try:
            uploads.release(self.store, job.folder)
        except Exception:  # never let the worker thread die; the next erasure's sweep retries
            log.exception("could not clean up upload folder %s", job.folder)

    def _ingest(self, job: IngestJob) -> str:
        """Unpack and ingest; returns the job's final state."""

        def progress(p: Progress) -> None:
            job.done, job.total, job.faces, job.failures = p.done, p.total, p.faces, p.failures

        try:
            if job.upload:
                job.path = unpack_upload(job.path, self.max_unpacked_bytes)
            report = self.finder_as(job.owner).ingest(job.path, job.collection, None, progress)
        except Exception as exc:  # never let the worker thread die; the job says what happened
            message = str(exc) if isinstance(exc, FaceFinderError) else f"internal error: {type(exc).__name__}"
            job.error = message
            self.audit.record(job.owner, "ingest.failed", collection=job.collection, path=job.label, error=message)
            return "failed"
        job.report = {
            "collection": report.collection,
            "seen": report.seen,
            "ingested": report.ingested,
            "duplicates": report.duplicates,
            "faces": report.faces,
            "photos_without_faces": report.photos_without_faces,
            "opted_out": getattr(report, "opted_out", 0),
            "failures": [
                {"source": _relative(f.source, job), "reason": f.reason, "detail": f.detail} for f in report.failures
            ],
            "seconds": round(report.seconds, 2),
        }
        job.done, job.total, job.faces, job.failures = report.seen, report.seen, report.faces, len(report.failures)
        return "done"


def unpack_upload(upload: Path, max_total: int) -> Path:
    """An uploaded archive, unpacked next to it (then zeroed and removed); returns the folder to ingest.

    Each photo becomes its own file under ``<data dir>/uploads/``, so it can be shown with its face
    boxed and erased on its own: archives inside the archive are unpacked too (sources/archives.py
    says how, and how untrusted names and sizes are kept in check). A single uploaded photo is
    ingested as it is.
    """
    if not archives.is_archive_name(upload.name):
        return upload.parent
    try:
        return archives.unpack(upload, upload.parent / "files", max_total)
    except archives.ARCHIVE_ERRORS as exc:
        raise FaceFinderError(f"file: unreadable archive ({exc})") from None


def _relative(source: str, job: IngestJob) -> str:
    """Failure sources of an uploaded archive are shown as ``upload:<name>!member``, not server paths."""
    if job.upload and source.startswith(str(job.path)):
        return job.label + "!" + source[len(str(job.path)) :].lstrip("/")
    return source
