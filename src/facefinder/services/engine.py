"""FaceFinder: the Python API, a handful of verbs over the services.

    ff = FaceFinder("~/.facefinder")
    ff.ingest("photos/", collection="family")
    results = ff.search("probe.jpg", top_k=5)
    ff.delete_image(results[0].candidates[0].image_id)

A new collection needs a purpose, a legal basis and a retention period (``create_collection``, or the
same keywords on the first ``ingest``); ``ff.privacy`` holds erasure, opt-out, consent, purge and
subject access (services/privacy/service.py), ``ff.people`` the people of a collection
(services/people/service.py).
"""

from __future__ import annotations

import copy
import getpass
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from facefinder.config import data_dir as resolve_data_dir
from facefinder.config import models_dir as resolve_models_dir
from facefinder.errors import CatalogError, DiskFullError, FaceFinderError, is_disk_full
from facefinder.services.audit import AuditLog
from facefinder.services.fusion import search_together
from facefinder.services.ingest import Ingestor, IngestReport, Progress
from facefinder.services.people.review import Review
from facefinder.services.people.search import PersonSearch
from facefinder.services.people.service import People
from facefinder.services.privacy.service import Privacy
from facefinder.services.search import ProbeFace, Searcher
from facefinder.services.server import uploads
from facefinder.storage.store import CollectionInfo, FaceStore, check_policy
from facefinder.vision.image import decode_photo, read_photo_bytes
from facefinder.vision.pipeline import Face, FacePipeline

log = logging.getLogger(__name__)


class FaceFinder:
    """The one object that wires a data directory's store, audit log and models to the services: the
    Python API uses it directly, and the HTTP service builds its accounts, cases and jobs on it."""

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        models_dir: str | os.PathLike | None = None,
        detector: str | None = None,
        recognizer: str | None = None,
        workers: int | None = None,
        catalog_url: str | None = None,
        vectors: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Open (or create) a facefinder data directory.

        ``detector`` / ``recognizer`` point at other ONNX models (SCRFD-style / ArcFace-style);
        ``workers`` is the number of ingest processes (default: one per core, 0 = in-process);
        ``catalog_url`` a PostgreSQL catalog; ``vectors`` ``milvus://host:port/namespace`` for Milvus;
        ``actor`` is who the audit log names for what this object does (default: local:<os user>).
        """
        self.data_dir = resolve_data_dir(data_dir)
        self.models_dir = Path(models_dir) if models_dir else resolve_models_dir(self.data_dir)
        self.detector, self.recognizer, self.workers = detector, recognizer, workers
        self.store = FaceStore(self.data_dir, catalog_url, vectors, owned_copies=uploads.uploads_dir(self.data_dir))
        self.audit = AuditLog(self.store.catalog)
        self.actor = actor or f"local:{getpass.getuser()}"
        self._pipeline: FacePipeline | None = None
        self._privacy: Privacy | None = None
        self._people: People | None = None

    @property
    def pipeline(self) -> FacePipeline:
        """The vision pipeline, loaded on first use and then kept (models load once)."""
        if self._pipeline is None:
            self._pipeline = FacePipeline.default(
                self.models_dir, threads=os.cpu_count() or 1, detector=self.detector, recognizer=self.recognizer
            )
        return self._pipeline

    @property
    def privacy(self) -> Privacy:
        """Erasure, opt-out, consent, purge and subject access (services/privacy/service.py), audited
        under this FaceFinder's actor."""
        if self._privacy is None:
            self._privacy = Privacy(self.store, self.audit, lambda: self.pipeline, self.actor)
        return self._privacy

    @property
    def people(self) -> People:
        """The people of a collection: clustering, the views, and merge / split / label / confirm
        (services/people/service.py), audited under this FaceFinder's actor. Needs no models."""
        if self._people is None:
            self._people = People(self.store, self.audit, self.actor)
        return self._people

    @property
    def people_search(self) -> PersonSearch:
        """People like a probe photo's faces, or like a person (services/people/search.py), audited under
        this FaceFinder's actor like a face search."""
        return PersonSearch(self.store, self.audit, lambda: self.pipeline, self.actor)

    @property
    def people_review(self) -> Review:
        """The review queue (unassigned and doubtful faces: assign, reject) and faces drawn where the
        detector missed one (services/people/review.py), audited under this FaceFinder's actor."""
        return Review(self.people, lambda: self.pipeline)

    def acting_as(self, actor: str) -> FaceFinder:
        """This FaceFinder auditing under another name: the same store, models and audit log (what the
        server hands each request, and each ingest job, for the user behind it)."""
        view = copy.copy(self)
        view.actor, view._privacy, view._people = actor, None, None
        return view

    def ingest(
        self,
        path: str | os.PathLike,
        collection: str,
        manifest: str | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        purpose: str | None = None,
        legal_basis: str | None = None,
        retention_days: int | None = None,
        ray: str | None = None,
        confine_to: str | os.PathLike | None = None,
        shown_as: str | None = None,
    ) -> IngestReport:
        """Ingest into ``collection``; a new one is created with the given purpose, legal basis and
        retention period (all three required then; for an existing one they must match or be left out).
        ``ray`` runs the analysis on a Ray cluster ("local", "auto" or "ray://head:10001"; see
        services/distributed.py) with ``workers`` actors; the result is the same. ``confine_to`` (the
        server's jobs): a folder no source may lead out of, links followed (sources/folders.py);
        ``shown_as``: how the audit log names what was ingested (a server job's upload:<name> or the
        path its user gave), when the path itself is the server's own."""
        policy = self._ensure_collection(collection, purpose, legal_basis, retention_days)
        parts = (self.store, self.models_dir, self.workers, self.detector, self.recognizer)
        if ray:
            from facefinder.services.distributed import RayIngestor

            ingestor = RayIngestor(*parts, address=ray, confine_to=confine_to)
        else:
            ingestor = Ingestor(*parts, pipeline=self._pipeline, confine_to=confine_to)
        try:  # the ingestor creates a new collection once the models have loaded
            report = ingestor.ingest(path, collection, manifest, on_progress, policy)
        except BaseException:
            try:  # best effort: the ingest's own error (a full disk, say) is what the caller must see
                self._record_creation(collection, policy)
            except Exception as audit_error:
                log.warning("could not log the creation of collection %r: %s", collection, audit_error)
            raise
        try:
            self._record_creation(collection, policy)
            self.audit.record(
                self.actor,
                "ingest",
                collection=collection,
                path=shown_as or str(path),
                ingested=report.ingested,
                duplicates=report.duplicates,
                faces=report.faces,
                failed=len(report.failures),
                opted_out=report.opted_out,
                opted_out_photos=report.opted_out_photos,
                consent_withdrawn=report.consent_withdrawn,
            )
        except Exception as exc:
            if is_disk_full(exc):
                raise DiskFullError(self.data_dir, report.ingested) from exc
            raise
        return report

    def _record_creation(self, collection: str, policy: dict | None) -> None:
        """Log a collection this ingest created (the ingestor creates it once the models have loaded)."""
        if policy and any(c.name == collection for c in self.store.collections()):
            self.audit.record(self.actor, "collection.create", collection=collection, **policy)

    def create_collection(
        self, name: str, *, purpose: str, legal_basis: str, retention_days: int, description: str = ""
    ) -> None:
        """A new collection, with why it is held, on what legal basis, and for how many days per photo."""
        row = self.store.create_collection(
            name, purpose=purpose, legal_basis=legal_basis, retention_days=retention_days, description=description
        )
        self.audit.record(
            self.actor,
            "collection.create",
            collection=name,
            purpose=row.purpose,
            legal_basis=row.legal_basis,
            retention_days=row.retention_days,
        )

    def set_collection_policy(
        self,
        name: str,
        *,
        purpose: str | None = None,
        legal_basis: str | None = None,
        retention_days: int | None = None,
    ) -> None:
        """Change a collection's purpose, legal basis or retention period (logged)."""
        row = self.store.set_policy(name, purpose, legal_basis, retention_days)
        self.audit.record(
            self.actor,
            "collection.policy",
            collection=name,
            purpose=row.purpose,
            legal_basis=row.legal_basis,
            retention_days=row.retention_days,
        )

    def _ensure_collection(
        self, name: str, purpose: str | None, legal_basis: str | None, retention_days: int | None
    ) -> dict | None:
        """The checked policy of a collection still to be created, or None when it exists (its policy
        then checked against what was given, or filled in if it predates policies)."""
        given = {"purpose": purpose, "legal_basis": legal_basis, "retention_days": retention_days}
        given = {k: v for k, v in given.items() if v is not None}
        try:
            existing = self.store.collection(name)
        except CatalogError:
            if not name.strip():
                raise CatalogError("collection: a name is required") from None
            checked = check_policy(name, purpose, legal_basis, retention_days)
            return dict(zip(("purpose", "legal_basis", "retention_days"), checked))
        held = {k: getattr(existing, k) for k in given}
        if all(v is None for v in held.values()) and given:  # a collection from before policies: fill in
            self.set_collection_policy(name, **given)
            return None
        for key, value in given.items():
            if held[key] is not None and held[key] != value:
                raise FaceFinderError(
                    f"collection {name!r} has {key} {held[key]!r}, not {value!r}; "
                    f"change it with `facefinder collections set`"
                )
        return None

    def search(
        self,
        *probes: str | os.PathLike,
        collections: list[str] | None = None,
        top_k: int = 10,
        threshold: float | None = None,
        case_id: str | None = None,
        purpose: str | None = None,
        same_person: bool = False,
    ) -> list[ProbeFace]:
        """One record per face found in the probe photos (or folders of photos); with ``same_person``,
        the photos show one person and are searched together as one record (services/fusion.py)."""
        return list(self.iter_search(list(probes), collections, top_k, threshold, case_id, purpose, same_person))

    def iter_search(
        self,
        probes: list[str | os.PathLike],
        collections: list[str] | None = None,
        top_k: int = 10,
        threshold: float | None = None,
        case_id: str | None = None,
        purpose: str | None = None,
        same_person: bool = False,
    ) -> Iterator[ProbeFace]:
        """Search lazily; each probe face is written to the audit log as it is returned."""
        if top_k < 1:
            raise FaceFinderError("top_k: must be at least 1")
        searcher = Searcher(self.store, self.pipeline)
        if same_person:
            records = search_together(searcher, probes, collections, top_k, threshold)
        else:
            records = searcher.search(probes, collections, top_k, threshold)
        for record in records:
            try:
                self.audit.record(
                    self.actor,
                    "search",
                    case_id,
                    purpose=purpose,
                    probe=record.probe,
                    probe_sha256=record.probe_sha256,
                    face=record.face,
                    collections=collections or "all",
                    top_k=top_k,
                    threshold=record.threshold if record.threshold is not None else threshold,
                    candidates=[[c.face_id, c.score] for c in record.candidates],
                    error=record.error,
                    **({"same_person": True} if same_person else {}),  # the probes fused as one person
                )
            except Exception as exc:  # no result is shown that the audit log could not record
                if is_disk_full(exc):
                    raise DiskFullError(self.data_dir, doing="the audit log cannot record this search") from exc
                raise
            yield record

    def faces_in(self, photo: str | os.PathLike) -> list[Face]:
        """Every face in one photo: box, landmarks, quality, embedding, aligned crop."""
        return self.pipeline.analyze_decoded([decode_photo(read_photo_bytes(photo), str(photo))])[0]

    def compare(self, photo_a: str | os.PathLike, photo_b: str | os.PathLike) -> float:
        """Cosine similarity of the most prominent face in each photo."""
        a, b = (self._main_face(p) for p in (photo_a, photo_b))
        return float(np.dot(a.embedding, b.embedding))

    def collections(self) -> list[CollectionInfo]:
        return self.store.collections()

    def failures(self, collection: str):
        return self.store.failures(self.store.collection(collection).id)

    # Deletes are erasures (services/privacy/service.py): rows overwritten, index files rewritten, WAL emptied.
    def delete_face(self, face_id: int) -> bool:
        with self._erasing():
            return self.privacy.erase_faces([face_id]).faces >= 1  # a video's face: its whole track

    def delete_image(self, image_id: int) -> int:
        with self._erasing():
            return self.privacy.erase_image(image_id).faces

    def delete_collection(self, name: str) -> None:
        with self._erasing():
            self.privacy.erase_collection(name)

    @contextmanager
    def _erasing(self) -> Iterator[None]:
        """A full disk during an erasure is a DiskFullError naming the data dir. The catalog commits the
        erasure in one transaction or not at all, and a face it no longer holds is never served; what
        may be left is rewriting the index files, which the next erasure or checkpoint does."""
        try:
            yield
        except FaceFinderError:
            raise
        except Exception as exc:
            if is_disk_full(exc):
                raise DiskFullError(self.data_dir, doing="the erasure could not be completed") from exc
            raise

    def thumbnail(self, face_id: int) -> bytes:
        rows = self.store.faces([face_id])
        if face_id not in rows:
            raise FaceFinderError(f"face {face_id} does not exist")
        return rows[face_id][0].thumbnail

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "FaceFinder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Close; when an error is already on its way out (a full disk, say), a failure to close
        (the checkpoint cannot be written either) is logged rather than raised over it: the catalog's
        journal still holds what the checkpoint would have saved, and the next open replays it."""
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as close_error:
            log.info("closing %s after %s also failed: %s", self.data_dir, exc_type.__name__, close_error)

    def _main_face(self, photo) -> Face:
        faces = self.faces_in(photo)
        if not faces:
            raise FaceFinderError(f"{photo}: no face found")
        return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
