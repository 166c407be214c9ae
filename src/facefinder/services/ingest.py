"""Ingest: photos from a folder or archive -> faces in the store, in parallel, resumably.

The main process reads and hashes files (skipping content already in the collection), worker
processes decode and run the vision pipeline on batches of photos, and the main process writes
each photo with all its faces in one transaction. A crash loses at most the photos in flight;
re-running the same ingest skips everything already stored, so it resumes without duplicates.
Faces on the opt-out list are dropped before they are written (one check per batch), and photos
whose consent was withdrawn are not read at all (services/privacy/optout.py, services/privacy/consent.py).
Videos (vision/video.py suffixes) go the same way, one per batch: a worker samples, tracks and keeps
each track's best faces (services/video.py), stored as one image row with its faces and tracks.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from facefinder.errors import DiskFullError, FaceFinderError, ImageError, is_disk_full
from facefinder.services.privacy.consent import withdrawn_ids
from facefinder.services.privacy.optout import OptOutScreen, screen_for
from facefinder.services.sources.folders import SourceItem, iter_sources
from facefinder.services.video import (
    VideoJob,
    analyze_job,
    failure_detail,
    new_face,
    video_job,
    whole_tracks_screened,
)
from facefinder.storage.store import FaceStore, NewImage
from facefinder.vision.image import DEFAULT_MAX_PIXELS, decode_photo
from facefinder.vision.pipeline import FacePipeline
from facefinder.vision.video import is_video_name

BATCH_PHOTOS = 8  # photos per worker task: enough faces to batch, small enough to stream


@dataclass
class Failure:
    """One photo an ingest could not use, and why (``reason`` is an ImageError reason)."""

    source: str
    reason: str
    detail: str


@dataclass
class IngestReport:
    """What an ingest did: counts of photos seen, stored, skipped and refused, and each failure."""

    collection: str
    seen: int = 0
    ingested: int = 0
    duplicates: int = 0
    faces: int = 0
    photos_without_faces: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("read", "decode", "detect", "align", "embed", "optout", "store"), 0.0)
    )
    opted_out: int = 0  # faces not stored: they match the opt-out list
    opted_out_photos: int = 0  # photos not stored: every face in them matched it
    consent_withdrawn: int = 0  # photos not read: their consent_id was withdrawn

    @property
    def photos_per_second(self) -> float:
        return self.ingested / self.seconds if self.seconds else 0.0


@dataclass
class Progress:
    """An ingest's progress, reported as photos are analysed and stored."""

    done: int
    total: int
    faces: int
    failures: int


@dataclass
class IngestRun:
    """One ingest's working state, shared by its steps: reading and batching the sources, analysing
    the batches (here or on a Ray cluster), and writing what came back."""

    collection_id: int
    report: IngestReport
    screen: OptOutScreen  # the opt-out list, read once per ingest
    known: set[str]  # sha256 of the photos already in the collection
    pending: dict[str, NewImage]  # sha256 -> a photo being analysed
    total: int
    on_progress: Callable[[Progress], None] | None = None

    def progress(self) -> None:
        """Tell the caller how far the ingest is (photos seen of the total, faces stored, failures)."""
        if self.on_progress:
            report = self.report
            self.on_progress(Progress(report.seen, self.total, report.faces, len(report.failures)))


# ----- worker side -------------------------------------------------------------------------
_PIPELINE: FacePipeline | None = None


def _init_worker(models_dir: str, detector: str | None, recognizer: str | None) -> None:
    global _PIPELINE
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _PIPELINE = FacePipeline.default(Path(models_dir), threads=1, detector=detector, recognizer=recognizer)


def analyze_batch(
    batch: list[tuple[str, bytes | VideoJob]],
    max_pixels: int,
    pipeline: FacePipeline | None = None,
    video_threads: int | None = None,
) -> dict:
    """Decode and analyze photos (and videos); returns per-photo faces or failures, plus stage timings.
    ``video_threads``: threads analysing a video's frames (default: services/video.py's, a core each)."""
    pipeline = pipeline or _PIPELINE
    before = (pipeline.timings.detect, pipeline.timings.align, pipeline.timings.embed)
    started = time.perf_counter()
    images, results = [], []
    for source, data in batch:
        if isinstance(data, VideoJob):
            images.append(None)
            results.append(_video_result(data, pipeline, video_threads))
            continue
        try:
            images.append(decode_photo(data, source, max_pixels))
            results.append(None)
        except ImageError as exc:
            images.append(None)
            results.append(Failure(source, exc.reason, exc.detail))
    decode = time.perf_counter() - started
    decode -= sum(r.pop("seconds", 0.0) - r.get("decode", 0.0) for r in results if isinstance(r, dict))
    ok = [i for i, image in enumerate(images) if image is not None]
    try:
        analyzed = pipeline.analyze_decoded([images[i] for i in ok])
    except Exception:  # one pathological photo must not sink the batch: retry one by one
        analyzed = []
        for i in ok:
            try:
                analyzed.append(pipeline.analyze_decoded([images[i]])[0])
            except Exception as exc:
                analyzed.append(Failure(batch[i][0], "corrupt", f"analysis failed: {exc}"))
    for i, faces in zip(ok, analyzed):
        if isinstance(faces, Failure):
            results[i] = faces
            continue
        results[i] = {
            "width": images[i].width,
            "height": images[i].height,
            "faces": [new_face(f) for f in faces],
        }
    after = (pipeline.timings.detect, pipeline.timings.align, pipeline.timings.embed)
    stages = {"decode": decode, **{k: a - b for k, a, b in zip(("detect", "align", "embed"), after, before)}}
    return {"results": results, "stages": stages, "model_id": pipeline.model_id}


def _video_result(job: VideoJob, pipeline: FacePipeline, threads: int | None = None) -> dict | Failure:
    """A video's analysis result (services/video.py), or its failure; "seconds" it took in all."""
    started = time.perf_counter()
    try:
        result = analyze_job(job, pipeline, threads)
    except Exception as exc:  # a bad video is one failure row; the run goes on
        return Failure(job.source, *failure_detail(exc))
    return {**result, "seconds": time.perf_counter() - started}


def batch_size_for(total: int, workers: int) -> int:
    """Photos per batch: small ingests are split so that every worker gets a share."""
    return max(1, min(BATCH_PHOTOS, -(-total // max(workers, 1))))


# ----- main side ---------------------------------------------------------------------------
class Ingestor:
    """Parallel, resumable ingest: sources -> worker processes (detect, align, embed) -> the store, in batches."""

    def __init__(
        self,
        store: FaceStore,
        models_dir: Path,
        workers: int | None = None,
        detector: str | None = None,
        recognizer: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        pipeline: FacePipeline | None = None,
        confine_to: str | os.PathLike | None = None,
    ) -> None:
        """``confine_to``: a folder no source may lead out of (server jobs; see sources/folders.py)."""
        self.store, self.models_dir, self.confine_to = store, models_dir, confine_to
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.detector, self.recognizer, self.max_pixels = detector, recognizer, max_pixels
        self._pipeline = pipeline  # used in-process when workers == 0
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: list[tuple[Future | dict, list[NewImage]]] = []
        self._withdrawn: set[str] = set()
        # sha256 -> sources of later copies of a photo still being analysed: they share its fate (a
        # failure row each when it fails, a duplicate each when it is stored).
        self._copies: dict[str, list[str]] = {}

    def ingest(
        self,
        path: str | os.PathLike,
        collection: str,
        manifest: str | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        policy: dict | None = None,
    ) -> IngestReport:
        """``policy`` (purpose, legal_basis, retention_days) is needed when ``collection`` is new.

        A full disk stops the run with DiskFullError (one line: how many photos were stored); each
        photo is written in one transaction with its faces, so a re-run after freeing space resumes.
        """
        report = IngestReport(collection=collection)
        try:
            return self._ingest(path, collection, manifest, on_progress, policy, report)
        except Exception as exc:
            if isinstance(exc, DiskFullError) or not is_disk_full(exc):
                raise
            raise DiskFullError(self.store.data_dir, report.ingested) from exc

    def _ingest(
        self,
        path: str | os.PathLike,
        collection: str,
        manifest: str | None,
        on_progress: Callable[[Progress], None] | None,
        policy: dict | None,
        report: IngestReport,
    ) -> IngestReport:
        """The ingest proper: models, collection and run state first, then every analysed batch written."""
        started = time.perf_counter()
        self._load_models()
        coll = self.store.collection(collection, create=True, **(policy or {}))
        self._copies = {}
        screen = screen_for(self.store.catalog)
        self._withdrawn = withdrawn_ids(self.store.catalog)
        total = sum(1 for _ in iter_sources(path, manifest, confine_to=self.confine_to))
        run = IngestRun(coll.id, report, screen, self.store.known_hashes(coll.id), {}, total, on_progress)
        for outcome, metas in self._analyzed(path, manifest, run):
            self._write(run, outcome, metas)
        self.store.checkpoint()
        report.seconds = time.perf_counter() - started
        return report

    def _load_models(self) -> None:
        """Load the models here first: a bad model path is then one ModelError, raised now, rather than
        a crash in every worker process that would record each photo as "corrupt"."""
        if self._pipeline is None:
            pipeline = FacePipeline.default(
                self.models_dir, threads=1, detector=self.detector, recognizer=self.recognizer
            )
            if self.workers == 0:
                self._pipeline = pipeline

    def _analyzed(self, path, manifest, run: IngestRun) -> Iterator[tuple[dict, list[NewImage]]]:
        """(outcome of analyze_batch, the photos' metadata) per batch, in source order, from worker
        processes on this machine (services/distributed.py does the same on a Ray cluster)."""
        batch_size = batch_size_for(run.total, self.workers)
        try:
            for batch in self._batches(path, manifest, run, batch_size):
                metas = [meta for meta, _ in batch]
                self._inflight.append((self._submit([(m.source, data) for m, data in batch]), metas))
                yield from self._drain(limit=2 * max(self.workers, 1))
            yield from self._drain(limit=0)
        finally:
            self._close_pool()

    def _write(self, run: IngestRun, outcome: dict, metas: list[NewImage]) -> None:
        """Screen one analysed batch against the opt-out list, store what is left, and count it all."""
        report = run.report
        if outcome["model_id"]:
            self.store.set_model(run.collection_id, outcome["model_id"])
        for stage, seconds in outcome["stages"].items():
            report.stage_seconds[stage] += seconds
        t = time.perf_counter()
        report.opted_out += run.screen.screen_batch(outcome["results"], outcome["model_id"])
        report.stage_seconds["optout"] += time.perf_counter() - t
        photos = self._storable(run, outcome["results"], metas)
        t = time.perf_counter()
        written = self._store(run.collection_id, photos, outcome["model_id"])
        report.stage_seconds["store"] += time.perf_counter() - t
        self._count_written(run, photos, written)
        run.progress()

    def _storable(self, run: IngestRun, results: list, metas: list[NewImage]) -> list[tuple[NewImage, list]]:
        """The photos of a batch to store, with their faces; a failure is recorded once per copy of
        the photo, and a photo whose every face is opted out is not stored at all."""
        report, photos = run.report, []
        for meta, result in zip(metas, results):
            run.pending.pop(meta.sha256, None)
            copies = self._copies.pop(meta.sha256, [])
            if isinstance(result, Failure):
                for source in [meta.source, *copies]:  # every copy of a bad file gets its own row
                    self._fail(run.collection_id, report, Failure(source, result.reason, result.detail))
                continue
            report.opted_out += whole_tracks_screened(result)  # a video's track goes whole
            if result.get("opted_out") and not result["faces"]:
                report.opted_out_photos += 1 + len(copies)  # nothing of it is stored, not even its row
                continue
            report.duplicates += len(copies)
            meta.width, meta.height = result["width"], result["height"]
            meta.tracks = result.get("tracks", [])
            photos.append((meta, result["faces"]))
        return photos

    def _count_written(self, run: IngestRun, photos: list[tuple[NewImage, list]], written: list[bool]) -> None:
        """Count what a batch write stored; a photo is known from then on, so a later copy is a duplicate."""
        report = run.report
        for (meta, faces), stored in zip(photos, written):
            if not stored:  # another process stored the same photo meanwhile
                report.duplicates += 1
                continue
            run.known.add(meta.sha256)  # a later copy in this run is a duplicate, not a failed write
            report.ingested += 1
            report.faces += len(faces)
            report.photos_without_faces += not faces

    def _store(self, collection_id: int, photos: list[tuple[NewImage, list]], model_id: str) -> list[bool]:
        """Write a batch in one transaction; if another process stored one of its photos meanwhile,
        write them one at a time, so that only that one is skipped. Returns which were written."""
        if not photos:
            return []
        try:
            self.store.add_images(collection_id, photos, model_id)
            return [True] * len(photos)
        except IntegrityError:
            written = []
            for meta, faces in photos:
                try:
                    self.store.add_image(collection_id, meta, faces, model_id)
                    written.append(True)
                except IntegrityError:
                    written.append(False)
            return written

    def _batches(
        self, path, manifest, run: IngestRun, batch_size: int = BATCH_PHOTOS
    ) -> Iterator[list[tuple[NewImage, bytes]]]:
        """The sources to analyse, read and hashed, in batches; a photo already stored, a copy of one
        in flight, and one whose consent was withdrawn are counted here and go no further."""
        report, batch = run.report, []
        for item in iter_sources(path, manifest, confine_to=self.confine_to):
            report.seen += 1
            if item.provenance.get("consent_id") in self._withdrawn:
                report.consent_withdrawn += 1
                continue
            t = time.perf_counter()
            video = is_video_name(item.source)
            data = self._read(item, run.collection_id, report, video)
            report.stage_seconds["read"] += time.perf_counter() - t
            if data is None:
                continue
            digest = data.sha256 if video else hashlib.sha256(data).hexdigest()
            if digest in run.pending:  # a copy of a photo in flight: counted when that one's fate is known
                self._copies.setdefault(digest, []).append(item.source)
                continue
            if digest in run.known:
                report.duplicates += 1
                run.progress()
                continue
            meta = NewImage(digest, item.source, 0, 0, item.provenance)
            run.pending[digest] = meta
            if video:  # a video is a batch of its own: photos do not wait for it
                yield from [batch, [(meta, data)]] if batch else [[(meta, data)]]
                batch = []
                continue
            batch.append((meta, data))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _read(self, item: SourceItem, collection_id: int, report: IngestReport, video: bool) -> bytes | VideoJob | None:
        """A photo's bytes, or a video's job (hashed, not read into memory); None when it failed."""
        try:
            return video_job(item, self.confine_to) if video else item.read()
        except ImageError as exc:
            self._fail(collection_id, report, Failure(item.source, exc.reason, exc.detail))
        except OSError as exc:
            self._fail(collection_id, report, Failure(item.source, "unreadable", exc.strerror or str(exc)))
        return None

    def _fail(self, collection_id: int, report: IngestReport, failure: Failure) -> None:
        report.failures.append(failure)
        self.store.record_failure(collection_id, failure.source, failure.reason, failure.detail)

    # Worker processes, or the caller's own pipeline when workers == 0.
    def _submit(self, batch: list[tuple[str, bytes | VideoJob]]) -> Future | dict:
        if self.workers == 0:
            if self._pipeline is None:
                self._pipeline = FacePipeline.default(
                    self.models_dir, threads=1, detector=self.detector, recognizer=self.recognizer
                )
            return analyze_batch(batch, self.max_pixels, self._pipeline)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                initializer=_init_worker,
                initargs=(str(self.models_dir), self.detector, self.recognizer),
            )
        return self._pool.submit(analyze_batch, batch, self.max_pixels)

    def _drain(self, limit: int) -> Iterator[tuple[dict, list[NewImage]]]:
        while len(self._inflight) > limit:
            job, metas = self._inflight.pop(0)
            try:
                outcome = job.result() if isinstance(job, Future) else job
            except FaceFinderError:
                self._close_pool()
                raise
            except Exception as exc:  # a worker died (e.g. out of memory): record, go on
                outcome = {
                    "results": [Failure(m.source, "corrupt", f"worker failed: {exc}") for m in metas],
                    "stages": {},
                    "model_id": None,
                }
                self._close_pool()
            yield outcome, metas

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
