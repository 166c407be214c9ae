"""Distributed ingest on Ray: the same ingest, with the vision work spread over a cluster.

The driver (this process) lists the sources, as a local ingest does, and streams them through Ray
Data into a pool of actors; each actor loads the ONNX models once and runs ``analyze_batch``, the
very function local worker processes run, on the photos and videos it reads itself (a file path on
shared storage or an ``s3://`` object; archive members, which only the driver can open, travel as
bytes). A video is analysed whole by the actor that gets it, on that actor's one CPU.
Results come back in source order and the driver writes them exactly as ``Ingestor`` does (same
opt-out screening, same transactions, same order), into whatever catalog and vector backend the
store has: PostgreSQL and Milvus on a cluster. So a Ray ingest leaves the catalog a local ingest
of the same sources would, row for row, and re-running one skips what is stored (resumable).

``address``: ``None`` or ``"local"`` starts a Ray cluster on this machine (what the tests use);
``"auto"`` joins the cluster this machine belongs to; ``"ray://head:10001"`` connects a client.
Every node needs facefinder installed and the models in the same models directory.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

from facefinder.errors import FaceFinderError, ImageError
from facefinder.services.ingest import (
    BATCH_PHOTOS,
    Failure,
    Ingestor,
    IngestRun,
    analyze_batch,
    batch_size_for,
)
from facefinder.services.sources.folders import iter_sources, read_location
from facefinder.services.video import VideoJob, located_video_job
from facefinder.storage.store import NewImage
from facefinder.vision.video import is_video_name


class AnalyzeActor:
    """Holds the ONNX sessions for the life of a Ray actor; analyzes one batch of photos per call."""

    def __init__(
        self, models_dir: str, detector: str | None, recognizer: str | None, max_pixels: int, known: frozenset[str]
    ) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from facefinder.vision.pipeline import FacePipeline

        self.pipeline = FacePipeline.default(Path(models_dir), threads=1, detector=detector, recognizer=recognizer)
        self.max_pixels, self.known = max_pixels, known

    def __call__(self, batch):
        """Rows (seq, source, location, size, data, failure) -> rows (seq, payload): the pickled
        sha256, analysis result (or Failure, or "duplicate") and, on a batch's first row, its timings.
        Arrow batches: bytes columns come back exactly as sent (numpy would strip trailing zero bytes)."""
        import pyarrow as pa

        photos, digests, results = [], {}, {}
        columns = [batch.column(name).to_pylist() for name in ("source", "location", "size", "data", "failure")]
        for i, (source, location, size, data, failure) in enumerate(zip(*columns)):
            try:
                if failure:
                    raise ImageError(source, *pickle.loads(failure))
                digest, data = _read_row(source, location, int(size or 0), data)
            except ImageError as exc:
                results[i], digests[i] = Failure(source, exc.reason, exc.detail), None
                continue
            except OSError as exc:
                results[i], digests[i] = Failure(source, "unreadable", exc.strerror or str(exc)), None
                continue
            digests[i] = digest
            if digest in self.known:
                results[i] = "duplicate"  # stored by an earlier run: not analyzed again
            else:
                photos.append((i, source, data))
        # an actor is one CPU to Ray: a video's frames are analysed on this thread, not on one per core
        batch_items = [(s, d) for _, s, d in photos]
        outcome = analyze_batch(batch_items, self.max_pixels, self.pipeline, video_threads=1) if photos else None
        for (i, _, _), result in zip(photos, outcome["results"] if outcome else []):
            results[i] = result
        model_id = outcome["model_id"] if outcome else self.pipeline.model_id
        stages = outcome["stages"] if outcome else {}
        payloads = [
            pickle.dumps((digests[i], results[i], stages if i == 0 else {}, model_id)) for i in range(len(digests))
        ]
        return pa.table({"seq": batch.column("seq"), "payload": pa.array(payloads, pa.binary())})


def _read_row(source: str, location: str | None, size: int, data: bytes | None) -> tuple[str, bytes | VideoJob]:
    """A row's sha256 and what ``analyze_batch`` takes for it: a photo's bytes, or a video's job (a file
    on shared storage is streamed, never read whole). Raises ImageError or OSError."""
    if is_video_name(source):
        job = located_video_job(source, location, size, data)
        return job.sha256, job
    data = data if data is not None else read_location(location, size)
    return hashlib.sha256(data).hexdigest(), data


class RayIngestor(Ingestor):
    """``Ingestor`` whose analysis runs on a Ray cluster; writing stays in this process."""

    def __init__(self, *args, address: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.address = address

    def _analyzed(self, path, manifest, run: IngestRun) -> Iterator[tuple[dict, list[NewImage]]]:
        """(analysis outcome, the photos' metadata) per batch of up to BATCH_PHOTOS, in source order,
        as ``Ingestor._analyzed`` gives them, with the analysis spread over the cluster's actors."""
        ray = _connect(self.address, self.workers)  # ray with ray.data loaded
        rows, metas = self._listed(path, manifest, run)
        if not rows:
            return
        yield from self._batched(self._dataset(ray, rows, run.known), metas, run)

    def _listed(self, path, manifest, run: IngestRun) -> tuple[list[dict], list[NewImage]]:
        """A row for the actors and a NewImage (its sha256 still to come) per source; a photo whose
        consent was withdrawn is counted and left out, unread."""
        rows, metas = [], []
        for item in iter_sources(path, manifest, confine_to=self.confine_to):
            if item.provenance.get("consent_id") in self._withdrawn:
                run.report.seen += 1
                run.report.consent_withdrawn += 1
                continue
            rows.append(self._row(len(rows), item))
            metas.append(NewImage("", item.source, 0, 0, item.provenance))
        return rows, metas

    def _dataset(self, ray, rows: list[dict], known: set[str]):
        """The rows streamed through a pool of AnalyzeActors, results kept in source order (written in
        the order a local ingest writes them); the actors skip what is ``known`` without analysing it."""
        workers = max(1, self.workers or int(ray.available_resources().get("CPU", 1)))
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # written in source order, as a local ingest does
        return ray.data.from_items(rows).map_batches(
            AnalyzeActor,
            batch_size=batch_size_for(len(rows), workers),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            fn_constructor_kwargs={
                "models_dir": str(self.models_dir),
                "detector": self.detector,
                "recognizer": self.recognizer,
                "max_pixels": self.max_pixels,
                "known": frozenset(known),
            },
        )

    def _batched(self, dataset, metas: list[NewImage], run: IngestRun) -> Iterator[tuple[dict, list[NewImage]]]:
        """The actors' rows regrouped into batches to write; duplicates are counted, and a copy of a
        photo in flight shares its fate, as in a local ingest."""
        results, batch_metas, stages, model_id = [], [], {}, None
        for row in dataset.iter_rows():
            digest, result, row_stages, model_id = pickle.loads(row["payload"])
            meta = metas[row["seq"]]
            run.report.seen += 1
            for stage, seconds in row_stages.items():
                stages[stage] = stages.get(stage, 0.0) + seconds
            if result == "duplicate" or digest in run.known:
                run.report.duplicates += 1
                continue
            if digest in run.pending:  # a copy of a photo in flight shares its fate, as in a local ingest:
                self._copies.setdefault(digest, []).append(meta.source)  # a failure row each if it fails
                continue
            if digest is not None:
                meta.sha256 = digest
                run.pending[digest] = meta
            results.append(result)
            batch_metas.append(meta)
            if len(results) == BATCH_PHOTOS:
                yield {"results": results, "stages": stages, "model_id": model_id}, batch_metas
                results, batch_metas, stages = [], [], {}
        if results:
            yield {"results": results, "stages": stages, "model_id": model_id}, batch_metas

    def _row(self, seq: int, item) -> dict:
        """A photo as the actors get it: where to read it, or its bytes when only we can read it."""
        row = {
            "seq": seq,
            "source": item.source,
            "location": item.location,
            "size": item.size,
            "data": None,
            "failure": None,
        }
        if item.location is None:
            try:
                row["data"] = item.read()
            except ImageError as exc:
                row["failure"] = pickle.dumps((exc.reason, exc.detail))
            except OSError as exc:
                row["failure"] = pickle.dumps(("unreadable", exc.strerror or str(exc)))
        return row


def _connect(address: str | None, workers: int | None):
    try:
        import ray
        import ray.data  # noqa: F401  (loads the submodule the ingest uses as ray.data)
    except ImportError:
        raise FaceFinderError("a distributed ingest needs Ray: pip install 'facefinder[ray]'") from None
    if not ray.is_initialized():
        if address in (None, "", "local"):
            ray.init(
                num_cpus=workers or os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except Exception as exc:
                raise FaceFinderError(f"ray: cannot join the cluster at {address!r} ({exc})") from None
    return ray
