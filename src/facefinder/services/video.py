"""Video analysis for ingest and search: a video file -> its face tracks, each with its best faces.

Frames are sampled (vision/video.py), analysed a few at a time by the same pipeline as photos, and
linked into tracks (vision/tracks.py); only each track's few best faces are kept, with their times.
The result has the shape of a photo's analysis result in services/ingest.py, plus the tracks, so a
video is stored through the same path as a photo: one image row (the video file), its faces, and
their tracks (storage/video.py). Runs in an ingest worker process; memory is bounded by a few frames
and the open tracks, whatever the video's length.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from facefinder.errors import ImageError
from facefinder.services.sources.folders import Fence, SourceItem, read_location, read_source
from facefinder.services.sources.object_storage import is_object_uri
from facefinder.storage.store import NewFace
from facefinder.storage.video import NewTrack
from facefinder.vision.fallback import FallbackDetector
from facefinder.vision.image import encode_jpeg
from facefinder.vision.inference import ImageArray
from facefinder.vision.pipeline import Face, FacePipeline
from facefinder.vision.tracks import Track, track_faces
from facefinder.vision.video import DEFAULT_SAMPLE_FPS, clip_mp4, frame_at, probe_video, sample_frames

CLIP_BEFORE, CLIP_AFTER = 3.0, 5.0  # seconds of a result's clip before and after the face was seen
FRAMES_IN_FLIGHT = 4  # sampled frames being analysed at once, split over the threads (5-8 frames held in all)
MAX_THREADS = 4  # threads analysing one video's frames: ingest workers each analyse their own video too


def frame_pipeline(pipeline: FacePipeline) -> FacePipeline:
    """The pipeline for video frames: the photo pipeline without its profile pass (vision/fallback.py).

    That pass runs on every photo where no face was found, and most video frames hold none (an empty
    corridor): at 1080p it tripled the cost of such a frame (0.94 s against 0.35 s, benchmarks/video.py),
    and a face turned away in one frame is usually seen frontal in another. Same models, same model id,
    same timings."""
    if not isinstance(pipeline.detector, FallbackDetector):
        return pipeline
    frames = FacePipeline(pipeline.detector.primary, pipeline.recognizer, pipeline.landmarker, pipeline.min_face)
    frames.timings = pipeline.timings
    return frames


def _analysed(
    path, pipeline: FacePipeline, fps: float, counts: dict[str, float], source: str | None, threads: int
) -> Iterator[tuple[float, list[Face]]]:
    """(time, faces) of each sampled frame, in time order; ``counts`` gains frames and decode seconds.

    Chunks of frames are analysed on ``threads`` threads while the next ones decode (ONNX Runtime and
    FFmpeg release the GIL), so one video uses the cores other ingest workers leave idle. A chunk's
    faces embed in one batch; the chunks are smaller the more threads there are, so that at most
    FRAMES_IN_FLIGHT frames are being analysed and one chunk decoding (5-8 frames held), whatever the
    video's length or the number of threads."""
    frames = sample_frames(path, fps, source)
    per_chunk = max(1, FRAMES_IN_FLIGHT // threads)
    pending: deque[tuple[list, Future]] = deque()
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="video-frames") as pool:
        while True:
            started = time.perf_counter()
            chunk = [frame for _, frame in zip(range(per_chunk), frames)]
            counts["decode"] += time.perf_counter() - started
            ended = not chunk
            if chunk:
                counts["frames"] += len(chunk)
                counts["height"], counts["width"] = chunk[0].image.shape[:2]  # upright, a display matrix applied
                pending.append((chunk, pool.submit(pipeline.analyze, [frame.image for frame in chunk])))
            chunk = []  # the frames are pending's now: none held twice while the next chunk decodes
            while pending and (ended or len(pending) > threads):
                done, future = pending.popleft()
                yield from ((frame.time, faces) for frame, faces in zip(done, future.result()))
                del done
            if ended:
                return


def video_tracks(
    path,
    pipeline: FacePipeline,
    fps: float = DEFAULT_SAMPLE_FPS,
    source: str | None = None,
    threads: int | None = None,
) -> tuple[list[Track[Face]], dict[str, float]]:
    """Every face track of a video (a path or an open file), in order of appearance, and counts
    (frames analysed, decode seconds). Frames are analysed on ``threads`` threads (default: a core each of
    those this process may use, at most MAX_THREADS)."""
    counts = {"frames": 0, "decode": 0.0}
    threads = threads or min(len(os.sched_getaffinity(0)), MAX_THREADS)
    frames = _analysed(path, frame_pipeline(pipeline), fps, counts, source, threads)
    tracks = sorted(track_faces(frames), key=lambda t: (t.start, t.end))
    return tracks, counts


def new_face(face: Face, place: tuple[int, float] | None = None) -> NewFace:
    """A face as the store takes it, from a photo or (with ``place``: track number, time) a video frame."""
    return NewFace(
        box=[round(float(v), 2) for v in face.box],
        landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
        detector_score=round(face.score, 4),
        quality=round(face.quality.score, 4),
        quality_parts=face.quality.as_dict(),
        embedding=face.embedding,
        thumbnail=encode_jpeg(face.aligned),
        video_place=place,
    )


@dataclass
class VideoJob:
    """A video to analyse in a worker process: a local file (``path``, opened through the ``fence``
    folder for a server job), or the capped bytes of one that is not a file (``data``)."""

    sha256: str
    source: str
    path: str | None = None
    fence: str | None = None
    data: bytes | None = None


def video_job(item: SourceItem, confine_to: str | os.PathLike | None) -> VideoJob:
    """The job for a video source, hashed as it is streamed (never held whole, unless it is an archive
    member or an object, which are read under the photo byte cap). Raises ImageError or OSError."""
    location = item.location
    if location and not is_object_uri(location):
        with open(location, "rb") as handle:
            return VideoJob(hashlib.file_digest(handle, "sha256").hexdigest(), item.source, path=location)
    if confine_to is not None and "!" not in item.source:
        with Fence(confine_to).open(Path(item.source)) as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return VideoJob(digest, item.source, path=item.source, fence=str(confine_to))
    data = item.read()
    return VideoJob(hashlib.sha256(data).hexdigest(), item.source, data=data)


def located_video_job(source: str, location: str | None, size: int, data: bytes | None) -> VideoJob:
    """The job for a video as a remote (Ray) worker gets it: its bytes when only the driver could read
    it (an archive member), else by its ``location``: an object read under the byte cap, as a local
    ingest reads one; a file on shared storage hashed as it is streamed. Raises ImageError or OSError."""
    if data is None and location and is_object_uri(location):
        data = read_location(location, size)
    if data is not None:
        return VideoJob(hashlib.sha256(data).hexdigest(), source, data=data)
    if not location:
        raise ImageError(source, "unreadable", "neither a location nor the bytes of the video were given")
    with open(location, "rb") as handle:
        return VideoJob(hashlib.file_digest(handle, "sha256").hexdigest(), source, path=location)


@contextmanager
def job_video(job: VideoJob) -> Iterator:
    """The job's video to decode, wherever it lies: a path, an open file (fenced), or a temporary copy."""
    if job.data is not None:
        with local_copy(lambda: job.data, Path(job.source).suffix) as path:
            yield path
    elif job.fence is not None:
        with Fence(job.fence).open(Path(job.path)) as handle:
            yield handle
    else:
        yield job.path


def analyze_job(job: VideoJob, pipeline: FacePipeline, threads: int | None = None) -> dict:
    """``analyze_video`` on a job, wherever its video lies."""
    with job_video(job) as video:
        return analyze_video(video, pipeline, source=job.source, threads=threads)


def analyze_video(
    path,
    pipeline: FacePipeline,
    fps: float = DEFAULT_SAMPLE_FPS,
    source: str | None = None,
    threads: int | None = None,
) -> dict:
    """A video's analysis result for ingest: width, height, kept faces (with their places) and tracks.
    Raises ImageError (with its reason, naming ``source``) for a file that cannot be used."""
    info = probe_video(path, source)
    tracks, counts = video_tracks(path, pipeline, fps, source, threads)
    faces = [
        new_face(face, (number, round(when, 3))) for number, track in enumerate(tracks) for when, face in track.kept
    ]
    return {
        "width": int(counts.get("width", info.width)),
        "height": int(counts.get("height", info.height)),
        "faces": faces,
        "tracks": [NewTrack(round(t.start, 3), round(t.end, 3), t.frames) for t in tracks],
        "kept": [len(t.kept) for t in tracks],  # faces kept per track, for whole_tracks_screened
        "frames": int(counts["frames"]),
        "decode": counts["decode"],
    }


def whole_tracks_screened(result: dict) -> int:
    """After the opt-out screen dropped some faces of a video's result (services/privacy/optout.py), drop
    the rest of each track it touched: a track is one person's appearance, kept or dropped whole.
    Returns how many more faces were dropped."""
    if not result.get("opted_out") or "kept" not in result:
        return 0
    left = Counter(face.video_place[0] for face in result["faces"])
    touched = {number for number, kept in enumerate(result["kept"]) if left[number] < kept}
    before = len(result["faces"])
    result["faces"] = [face for face in result["faces"] if face.video_place[0] not in touched]
    return before - len(result["faces"])


def uploaded_tracks(data: bytes, filename: str, pipeline: FacePipeline) -> tuple[int, int, list[tuple[float, Face]]]:
    """A video uploaded as a probe: its upright size and each face track's best face with its time. The
    upload is spooled to a temporary file for FFmpeg and removed at once; it is never kept."""
    with local_copy(lambda: data, Path(filename).suffix.lower()) as path:
        info = probe_video(path, filename)
        tracks, _ = video_tracks(path, pipeline, source=filename)
    return info.width, info.height, [track.kept[0] for track in tracks]


@contextmanager
def local_copy(read: Callable[[], bytes], suffix: str) -> Iterator[Path]:
    """A video that is not a local file (an archive member, an object) spooled to a temporary file,
    removed afterwards: FFmpeg seeks in it. ``read`` is the source's capped reader."""
    folder = tempfile.mkdtemp(prefix="facefinder-video-")
    try:
        path = Path(folder) / f"video{suffix}"
        path.write_bytes(read())
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def ingested_video(source: str, fenced=()) -> Iterator:
    """An ingested video, opened from where it was ingested as read_source reads a photo: a file under
    one of ``fenced`` only through its fence, an archive member through a temporary copy."""
    if "!" in source and not Path(source).is_file():
        with local_copy(lambda: read_source(source, fenced), Path(source).suffix) as path:
            yield path
        return
    named = os.path.abspath(source)  # as read_source: the path as named decides, links are the fence's to check
    fence = next((Fence(f) for f in fenced if named.startswith(os.path.abspath(f).rstrip(os.sep) + os.sep)), None)
    if fence is None:
        yield source
        return
    with fence.open(Path(source)) as handle:
        yield handle


def video_frame(source: str, when: float, fenced=()) -> ImageArray:
    """The frame of an ingested video at ``when`` seconds (see ``ingested_video``)."""
    with ingested_video(source, fenced) as video:
        return frame_at(video, when, source)


def video_clip(source: str, when: float, fenced=()) -> bytes:
    """The clip a result plays: CLIP_BEFORE seconds before ``when`` to CLIP_AFTER after, as a small MP4."""
    start = max(0.0, when - CLIP_BEFORE)
    with ingested_video(source, fenced) as video:
        return clip_mp4(video, start, when + CLIP_AFTER - start, source)


def failure_detail(exc: Exception) -> tuple[str, str]:
    """(reason, detail) of a video that failed in analysis: an ImageError's own, else "corrupt"."""
    if isinstance(exc, ImageError):
        return exc.reason, exc.detail
    return "corrupt", f"video analysis failed: {exc}"
