"""FaceFinder: the Python API, a handful of verbs over the services.

    ff = FaceFinder("~/.facefinder")
    ff.ingest("photos/", collection="family")
    results = ff.search("probe.jpg", top_k=5)
    ff.delete_image(results[0].candidates[0].image_id)
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from facefinder.config import data_dir as resolve_data_dir, models_dir as resolve_models_dir
from facefinder.errors import FaceFinderError
from facefinder.services.audit import AuditLog
from facefinder.services.ingest import Ingestor, IngestReport, Progress
from facefinder.services.search import ProbeFace, Searcher
from facefinder.storage.store import CollectionInfo, FaceStore
from facefinder.vision.image import read_image
from facefinder.vision.pipeline import Face, FacePipeline


class FaceFinder:
    def __init__(self, data_dir: str | os.PathLike | None = None, *, models_dir: str | os.PathLike | None = None,
                 detector: str | None = None, recognizer: str | None = None, workers: int | None = None,
                 catalog_url: str | None = None, actor: str | None = None) -> None:
        """Open (or create) a facefinder data directory.

        ``detector`` / ``recognizer`` point at other ONNX models (SCRFD-style / ArcFace-style);
        ``workers`` is the number of ingest processes (default: one per core, 0 = in-process);
        ``actor`` is who the audit log names for what this object does (default: local:<os user>).
        """
        self.data_dir = resolve_data_dir(data_dir)
        self.models_dir = Path(models_dir) if models_dir else resolve_models_dir(self.data_dir)
        self.detector, self.recognizer, self.workers = detector, recognizer, workers
        self.store = FaceStore(self.data_dir, catalog_url)
        self.audit = AuditLog(self.store.catalog)
        self.actor = actor or f"local:{getpass.getuser()}"
        self._pipeline: FacePipeline | None = None

    @property
    def pipeline(self) -> FacePipeline:
        """The vision pipeline, loaded on first use and then kept (models load once)."""
        if self._pipeline is None:
            self._pipeline = FacePipeline.default(self.models_dir, threads=os.cpu_count() or 1,
                                                  detector=self.detector, recognizer=self.recognizer)
        return self._pipeline

    def ingest(self, path: str | os.PathLike, collection: str, manifest: str | None = None,
               on_progress: Callable[[Progress], None] | None = None) -> IngestReport:
        ingestor = Ingestor(self.store, self.models_dir, self.workers, self.detector, self.recognizer,
                            pipeline=self._pipeline)
        report = ingestor.ingest(path, collection, manifest, on_progress)
        self.audit.record(self.actor, "ingest", collection=collection, path=str(path), ingested=report.ingested,
                          duplicates=report.duplicates, faces=report.faces, failed=len(report.failures))
        return report

    def search(self, *probes: str | os.PathLike, collections: list[str] | None = None, top_k: int = 10,
               threshold: float | None = None, case_id: str | None = None,
               purpose: str | None = None) -> list[ProbeFace]:
        """One record per face found in the probe photos (or folders of photos)."""
        return list(self.iter_search(list(probes), collections, top_k, threshold, case_id, purpose))

    def iter_search(self, probes: list[str | os.PathLike], collections: list[str] | None = None, top_k: int = 10,
                    threshold: float | None = None, case_id: str | None = None,
                    purpose: str | None = None) -> Iterator[ProbeFace]:
        """Search lazily; each probe face is written to the audit log as it is returned."""
        if top_k < 1:
            raise FaceFinderError("top_k: must be at least 1")
        searcher = Searcher(self.store, self.pipeline)
        for record in searcher.search(probes, collections, top_k, threshold):
            self.audit.record(
                self.actor, "search", case_id, purpose=purpose, probe=record.probe, probe_sha256=record.probe_sha256,
                face=record.face, collections=collections or "all", top_k=top_k,
                threshold=searcher.calibration.threshold if threshold is None else threshold,
                candidates=[[c.face_id, c.score] for c in record.candidates], error=record.error,
            )
            yield record

    def faces_in(self, photo: str | os.PathLike) -> list[Face]:
        """Every face in one photo: box, landmarks, quality, embedding, aligned crop."""
        return self.pipeline.analyze([read_image(str(photo))])[0]

    def compare(self, photo_a: str | os.PathLike, photo_b: str | os.PathLike) -> float:
        """Cosine similarity of the most prominent face in each photo."""
        a, b = (self._main_face(p) for p in (photo_a, photo_b))
        return float(np.dot(a.embedding, b.embedding))

    def collections(self) -> list[CollectionInfo]:
        return self.store.collections()

    def failures(self, collection: str):
        return self.store.failures(self.store.collection(collection).id)

    def delete_face(self, face_id: int) -> bool:
        deleted = self.store.delete_faces([face_id]) == 1
        if deleted:
            self.audit.record(self.actor, "delete.face", face_id=face_id)
        return deleted

    def delete_image(self, image_id: int) -> int:
        count = self.store.delete_image(image_id)
        self.audit.record(self.actor, "delete.image", image_id=image_id, faces=count)
        return count

    def delete_collection(self, name: str) -> None:
        self.store.delete_collection(name)
        self.audit.record(self.actor, "delete.collection", collection=name)

    def thumbnail(self, face_id: int) -> bytes:
        rows = self.store.faces([face_id])
        if face_id not in rows:
            raise FaceFinderError(f"face {face_id} does not exist")
        return rows[face_id][0].thumbnail

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "FaceFinder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _main_face(self, photo) -> Face:
        faces = self.faces_in(photo)
        if not faces:
            raise FaceFinderError(f"{photo}: no face found")
        return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
