"""Search: probe photo -> every face in it -> ranked candidates with calibrated scores.

Only candidates at or above the threshold are returned, so a stranger comes back as "no match"
rather than as whoever happens to be nearest. People on the opt-out list are never returned. Results are investigative leads, not identifications.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from facefinder.errors import CatalogError, ImageError
from facefinder.services.calibration import Calibration, default_calibration
from facefinder.services.privacy.optout import screen_for
from facefinder.services.sources.folders import SourceItem, iter_sources
from facefinder.services.video import job_video, video_job, video_tracks
from facefinder.storage.store import PROVENANCE_FIELDS, FaceStore
from facefinder.storage.video import video_places
from facefinder.vision.image import Decoded, decode_photo
from facefinder.vision.pipeline import FacePipeline
from facefinder.vision.tracks import KEEP
from facefinder.vision.video import is_video_name

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Match:
    """A held face that matched a probe face, with where its photo came from: the one shape that
    search results, opt-out and erasure reviews, and case records build on."""

    face_id: int
    score: float  # cosine similarity of the embeddings, -1..1
    false_match_rate: float  # estimated share of different-person pairs scoring this high
    collection: str
    image_id: int
    source: str  # the path or URI the photo was ingested from
    box: list[float]
    quality: float
    provenance: dict[str, str | None]
    video_time: float | None = None  # a face from a video: when it was seen (seconds from the start)
    track: dict[str, float] | None = None  # and its track's span: {"start": s, "end": s}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class Candidate(Match):
    """A search result: a Match with its rank among the probe face's results, its score band, and how
    many faces of a stranger's would be expected to score this high in the gallery searched."""

    rank: int
    band: str  # strong / possible / weak
    # false_match_rate x the faces searched: about this many candidates at or above this score would
    # come back for a probe of someone the gallery does not hold. A score is read with its gallery's size.
    expected_false_candidates: float | None = None
    # Below the threshold, down to the weak band: shown only for a hard probe face (low quality or turned,
    # see HARD_QUALITY) that nothing reached the threshold for. More likely a stranger than a lead.
    near_miss: bool = False


@dataclass
class ProbeFace:
    """One face found in a probe photo with its ranked candidates (or why the probe gave no face)."""

    probe: str
    face: int | None  # index of the face within the probe photo; None when none was found
    box: list[float] | None
    quality: float | None
    candidates: list[Candidate] = field(default_factory=list)
    error: str | None = None  # why this probe gave no face: "no-face", or an ImageError reason
    probe_sha256: str | None = None  # content hash of the probe photo, for the audit log
    video_time: float | None = None  # a video probe: when this face (its track's best) was seen, in seconds
    threshold: float | None = None  # the threshold searched at: the calibrated one for the gallery's size by default

    @property
    def match(self) -> bool:
        """At least one candidate reached the threshold (near misses do not count)."""
        return any(not c.near_miss for c in self.candidates)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["match"] = self.match
        return record


HARD_QUALITY = 0.3  # a probe face below this quality (the people quality floor) ...
HARD_YAW = 30.0  # ... or turned this far (degrees) is hard: it gets near misses rather than "no match"


def is_hard(face) -> bool:
    """A probe face whose genuine scores run low: blurred, tiny, or turned (docs/cli.md, near misses).
    On cfp-dev, 72% of profile faces are below the quality floor, and only 40% found their person at the
    threshold; showing those near misses brought the right person on screen for 60%."""
    return face.quality.score < HARD_QUALITY or abs(getattr(face.quality, "yaw", 0.0)) >= HARD_YAW


class Searcher:
    """Probe photos -> faces -> ranked, calibrated candidates from the collections this model can search."""

    def __init__(self, store: FaceStore, pipeline: FacePipeline, calibration: Calibration | None = None) -> None:
        """``calibration`` defaults to the one saved for this model in the store's data directory
        (`facefinder evaluate --save-calibration`), else the shipped one."""
        self.store, self.pipeline = store, pipeline
        self.calibration = calibration or default_calibration(pipeline.model_id, store.data_dir)

    def search(
        self,
        probes: list[str | os.PathLike],
        collections: list[str] | None = None,
        top_k: int = 10,
        threshold: float | None = None,
    ) -> Iterator[ProbeFace]:
        """Search each probe (a photo, or a folder of photos); yields one record per probe face. At the
        calibrated threshold (``threshold`` None), a hard probe face that matched nothing gets near misses."""
        near_misses = threshold is None  # a threshold the user chose is theirs: nothing below it is shown
        collection_ids = self._collection_ids(collections)
        threshold = self.default_threshold(collection_ids) if threshold is None else threshold
        for probe in probes:
            for item in iter_sources(probe, provenance=False):
                for record in self._search_item(item, collection_ids, top_k, threshold, near_misses):
                    record.threshold = threshold
                    yield record

    def _search_item(
        self, item: SourceItem, collection_ids: list[int], top_k: int, threshold: float, near_misses: bool
    ) -> Iterator[ProbeFace]:
        """The records of one probe photo or video."""
        if is_video_name(item.source):
            yield from self.search_video(item, collection_ids, top_k, threshold)
            return
        try:
            data = item.read()
            digest = hashlib.sha256(data).hexdigest()
            photo = decode_photo(data, item.source)
        except ImageError as exc:  # this probe is reported, the next one is searched
            yield ProbeFace(item.source, None, None, None, error=exc.reason)
            return
        except OSError as exc:
            log.warning("%s: unreadable (%s)", item.source, exc.strerror or exc)
            yield ProbeFace(item.source, None, None, None, error="unreadable")
            return
        for record in self.search_image(photo, item.source, collection_ids, top_k, threshold, near_misses):
            record.probe_sha256 = digest
            yield record

    def search_image(
        self,
        image: np.ndarray | Decoded,
        source: str,
        collection_ids: list[int],
        top_k: int,
        threshold: float,
        near_misses: bool = False,
    ) -> Iterator[ProbeFace]:
        """One record per face of a decoded probe (boxes in the probe's own pixels)."""
        if not isinstance(image, Decoded):
            image = Decoded(image, image.shape[1], image.shape[0])
        faces = self.pipeline.analyze_decoded([image])[0]
        if not faces:
            yield ProbeFace(source, None, None, None, error="no-face")
            return
        per_face = self.search_embeddings(np.stack([f.embedding for f in faces]), collection_ids, top_k, threshold)
        for number, (face, candidates) in enumerate(zip(faces, per_face)):
            if near_misses and not candidates and is_hard(face):
                candidates = self.near_misses(face.embedding, collection_ids, top_k, threshold)
            yield ProbeFace(
                source, number, [round(float(v), 2) for v in face.box], round(face.quality.score, 4), candidates
            )

    def near_misses(
        self, embedding: np.ndarray, collection_ids: list[int], top_k: int, threshold: float
    ) -> list[Candidate]:
        """The candidates below the threshold down to the weak band, marked as near misses: what a hard
        probe face that matched nothing at the threshold is shown instead of "no match"."""
        floor = self.calibration.near_miss_floor(threshold)
        if floor >= threshold:
            return []
        found = self.search_embeddings(embedding[None, :], collection_ids, top_k, floor)[0]
        return [replace(c, near_miss=True) for c in found]

    def search_video(
        self, item: SourceItem, collection_ids: list[int], top_k: int, threshold: float
    ) -> Iterator[ProbeFace]:
        """A video probe: one record per distinct face track in it, searched with the track's best face."""
        try:
            job = video_job(item, None)
            with job_video(job) as video:
                tracks, _ = video_tracks(video, self.pipeline, source=item.source)
        except (ImageError, OSError) as exc:
            yield ProbeFace(item.source, None, None, None, error=getattr(exc, "reason", "unreadable"))
            return
        best = [track.kept[0] for track in tracks]
        if not best:
            yield ProbeFace(item.source, None, None, None, error="no-face", probe_sha256=job.sha256)
            return
        per_face = self.search_embeddings(np.stack([f.embedding for _, f in best]), collection_ids, top_k, threshold)
        for number, ((when, face), candidates) in enumerate(zip(best, per_face)):
            box = [round(float(v), 2) for v in face.box]
            yield ProbeFace(item.source, number, box, round(face.quality.score, 4), candidates, None, job.sha256, when)

    def search_embeddings(
        self, embeddings: np.ndarray, collection_ids: list[int], top_k: int, threshold: float, scale: float = 1.0
    ) -> list[list[Candidate]]:
        """Ranked candidates at or above the threshold for each embedding (the service searches these);
        each score is the cosine times ``scale`` (services/fusion.py: a fused template's mean score).
        A video's appearance (face track) keeps up to KEEP faces: only its best-scoring one is a
        candidate, so the index is asked for KEEP times as many and the list cut to ``top_k`` after."""
        hits = self.store.search(collection_ids, embeddings, top_k * KEEP)
        if scale != 1.0:
            hits = [[(face_id, score * scale) for face_id, score in row] for row in hits]
        rows = self.store.faces([fid for row in hits for fid, _ in row])
        with self.store.catalog.session() as session:
            places = video_places(session, list(rows))
        # Opt-out: nothing for a probe face on the list, and no candidate on it (services/privacy/optout.py).
        hits = screen_for(self.store.catalog).filter_hits(embeddings, hits, rows, threshold, self.pipeline.model_id)
        gallery = self.gallery_size(collection_ids)
        return [self._candidates(row, rows, places, top_k, threshold, gallery) for row in hits]

    def _candidates(
        self, row: list[tuple[int, float]], rows: dict, places: dict, top_k: int, threshold: float, gallery: int
    ) -> list[Candidate]:
        """One query's hits, best first, as up to ``top_k`` candidates at or above ``threshold``: faces
        the catalog holds, one per video appearance, banded against the gallery's default threshold."""
        default = self.calibration.threshold_for(gallery)
        candidates: list[Candidate] = []
        appearances: set[int] = set()
        for face_id, score in row:
            if score < threshold or face_id not in rows:  # never serve a face the catalog lacks
                continue
            track = places[face_id].track_id if face_id in places else None
            if track in appearances:
                continue  # a lower-scoring face of an appearance already shown
            if track is not None:
                appearances.add(track)
            fields = self.match_fields(face_id, score, rows, places)
            expected = float(f"{fields['false_match_rate'] * gallery:.2e}")
            band = self.calibration.band(score, default)
            candidates.append(
                Candidate(rank=len(candidates) + 1, band=band, expected_false_candidates=expected, **fields)
            )
            if len(candidates) == top_k:
                break
        return candidates

    def match_fields(self, face_id: int, score: float, rows: dict, places: dict | None = None) -> dict:
        """The Match fields of a held face (``rows`` from ``FaceStore.faces``), scored and calibrated;
        ``places`` (storage/video.py ``video_places``) says where the faces from videos lie in them."""
        record, image_row, collection = rows[face_id]
        place = (places or {}).get(face_id)
        return dict(
            video_time=place.video_time if place else None,
            track=place.track() if place else None,
            face_id=face_id,
            score=round(score, 4),
            false_match_rate=float(f"{self.calibration.false_match_rate(score):.2e}"),
            collection=collection,
            image_id=image_row.id,
            source=image_row.source,
            box=record.box,
            quality=record.quality,
            provenance={k: getattr(image_row, k) for k in PROVENANCE_FIELDS},
        )

    def default_threshold(self, collection_ids: list[int]) -> float:
        """The calibrated threshold for the faces these collections hold (Calibration.threshold_for): it
        rises with the gallery, so that a stranger gets a candidate in about 1% of searches at any size."""
        return self.calibration.threshold_for(self.gallery_size(collection_ids))

    def gallery_size(self, collection_ids: list[int]) -> int:
        """Faces indexed in these collections: what a score's false matches multiply with."""
        return sum(self.store.index_size(cid) for cid in collection_ids)

    def collection_ids(self, names: list[str] | None) -> list[int]:
        """Catalog ids of the named collections (default: all) that these models can search."""
        return self._collection_ids(names)

    def _collection_ids(self, names: list[str] | None) -> list[int]:
        infos = self.store.collection_models()
        if names:
            known = {name: (cid, name, model) for cid, name, model in infos}
            missing = [n for n in names if n not in known]
            if missing:
                raise CatalogError(f"collection {missing[0]!r} does not exist")
            infos = [known[n] for n in names]
        usable = [c for c in infos if c[2] in (None, self.pipeline.model_id)]
        if names and len(usable) < len(infos):
            _, bad_name, bad_model = next(c for c in infos if c not in usable)
            raise CatalogError(
                f"collection {bad_name!r} was embedded with {bad_model}, "
                f"not {self.pipeline.model_id}: search it with the same models"
            )
        return [c[0] for c in usable]
