"""Video ingest: how fast, how much memory, and how many tracks per true identity (fragmentation).

Two 1080p30 H.264 videos are made from the shared sample photos, so the ground truth is known:

* ``generated``: the 8 people of faceapi-8x5, one after the other, each on screen continuously for
  five of their photos (hard cuts between the photos of one person, a grey gap between people);
  8 true identities.
* ``group``: the six group photos (shared samples/group-photos), each a 5-second shot panned slowly
  across, as a camera would; a true identity is a face the pipeline finds in the still photo
  (22 in all), each visible for its whole shot.

For each video and each sampling rate: video decode alone (frames per second), then the whole
analysis (services/video.py: sample, detect, embed, track, keep the best faces) timed in-process with
the pipeline's models on one thread each, as in an ingest worker, and frames analysed on ``--threads``
threads, as services/video.py does with a core each; seconds of video analysed per second of wall time ("x real
time"), sampled frames analysed per second, peak RSS of the process, and tracks per true identity.
The ingest adds hashing and one catalog transaction per video, both small beside this.

    .venv/bin/python benchmarks/video.py [--seconds 30] [--fps 1 2 4] [--threads 2] [--ingest-workers 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import CpuWatch, machine, models_dir, table, write_json
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples"
SIZE = (1920, 1080)
RATE = 30


def encode(path: Path, frame_at: Callable[[int], np.ndarray], frames: int) -> Path:
    """An H.264 (libx264, ultrafast) 1080p30 video of ``frame_at(n)`` for n in range(frames)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for n in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_at(n), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _centred(photo: Path, height: int) -> np.ndarray:
    image = Image.open(photo).convert("RGB")
    image = image.resize((round(image.width * height / image.height), height))
    canvas = Image.new("RGB", SIZE, (110, 110, 110))
    canvas.paste(image, ((SIZE[0] - image.width) // 2, (SIZE[1] - image.height) // 2))
    return np.asarray(canvas)


def generated_video(folder: Path, seconds: float) -> tuple[Path, list[tuple[float, float]]]:
    """faceapi-8x5's people in turn (their 5 photos each); returns the video and each identity's span."""
    people = sorted(p for p in (SAMPLES / "faceapi-8x5" / "images").iterdir() if p.is_dir())
    per_person = seconds / len(people)
    shot, gap = (per_person - 0.5) / 5, 0.5
    pictures = {p: [_centred(f, 600) for f in sorted(p.iterdir())[:5]] for p in people}
    blank = np.full((SIZE[1], SIZE[0], 3), 110, np.uint8)

    def frame_at(n: int) -> np.ndarray:
        t = n / RATE
        person, within = divmod(t, per_person)
        if within >= per_person - gap:
            return blank
        shown = pictures[people[int(person)]][min(int(within / shot), 4)]
        return np.ascontiguousarray(np.roll(shown, int(3 * np.sin(n / 5)), axis=1))

    spans = [(i * per_person, (i + 1) * per_person - gap) for i in range(len(people))]
    return encode(folder / "generated.mp4", frame_at, int(seconds * RATE)), spans


def group_video(folder: Path, seconds: float) -> tuple[Path, list[tuple[float, float]]]:
    """The group photos, each a shot panned slowly from top to bottom."""
    photos = sorted((SAMPLES / "group-photos").glob("*.jpg"))
    shot = seconds / len(photos)
    stills = []
    for photo in photos:
        image = Image.open(photo).convert("RGB")
        stills.append(np.asarray(image.resize((SIZE[0], round(image.height * SIZE[0] / image.width)))))

    def frame_at(n: int) -> np.ndarray:
        t = n / RATE
        index, within = int(t // shot), (t % shot) / shot
        still = stills[index]
        top = int((still.shape[0] - SIZE[1]) * within)
        return np.ascontiguousarray(still[top : top + SIZE[1]])

    spans = [(i * shot, (i + 1) * shot) for i in range(len(photos))]
    return encode(folder / "group.mp4", frame_at, int(seconds * RATE)), spans


def true_identities(pipeline, name: str, spans: list[tuple[float, float]]) -> list[int]:
    """How many true identities each span holds: one per person (generated), the faces of the still (group)."""
    if name == "generated":
        return [1] * len(spans)
    from facefinder.vision.image import read_image

    photos = sorted((SAMPLES / "group-photos").glob("*.jpg"))
    return [len(faces) for faces in pipeline.analyze([read_image(str(p)) for p in photos])]


def decode_speed(video: Path) -> float:
    """Frames per second of decoding alone (every frame, as sampling must)."""
    import av

    started, frames = time.perf_counter(), 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            frames += 1
    return frames / (time.perf_counter() - started)


def measure(pipeline, video: Path, spans, identities: list[int], fps: float, seconds: float, threads: int) -> dict:
    from facefinder.services.video import video_tracks

    with CpuWatch() as cpu:
        tracks, counts = video_tracks(video, pipeline, fps, threads=threads)
    wall = cpu.result["wall_s"]
    per_span = [sum(1 for t in tracks if a - 0.01 <= t.start < b) for a, b in spans]
    steady = [sum(1 for t in tracks if a - 0.01 <= t.start < b and t.frames >= 2) for a, b in spans]
    return {
        "sample_fps": fps,
        "wall_s": wall,
        "x_real_time": round(seconds / wall, 2),
        "frames_analysed": int(counts["frames"]),
        "frames_analysed_per_s": round(counts["frames"] / wall, 1),
        "decode_s": round(counts["decode"], 2),
        "tracks": len(tracks),
        "true_identities": sum(identities),
        "tracks_per_identity": round(len(tracks) / max(sum(identities), 1), 2),
        "tracks_per_identity_2plus_frames": round(sum(steady) / max(sum(identities), 1), 2),
        "tracks_per_span": per_span,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu": cpu.result,
    }


def measure_ingest(folder: Path, videos: list[Path], seconds: float, workers: int, models: str | None) -> dict:
    """``videos`` ingested in one run, as an operator would (FaceFinder.ingest, ``workers`` processes:
    one video per worker, hashing and storing included): seconds of video ingested per second."""
    import shutil

    from facefinder import FaceFinder

    folder = folder / f"ingest-{len(videos)}"
    source = folder / "footage"
    source.mkdir(parents=True)
    for video in videos:
        shutil.copy(video, source / video.name)
    policy = {"purpose": "benchmark", "legal_basis": "benchmark", "retention_days": 1}
    with FaceFinder(folder / "data", models_dir=models_dir(models), workers=workers) as ff, CpuWatch() as cpu:
        report = ff.ingest(source, collection="video", **policy)
    return {
        "workers": workers,
        "videos": len(videos),
        "ingested": report.ingested,
        "faces": report.faces,
        "failures": len(report.failures),
        "x_real_time": round(seconds * len(videos) / cpu.result["wall_s"], 2),
        "cpu": cpu.result,
        "stage_seconds": {k: round(v, 2) for k, v in report.stage_seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each video")
    parser.add_argument("--fps", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="sampling rates")
    parser.add_argument("--threads", type=int, default=2, help="threads analysing frames")
    parser.add_argument("--models", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--ingest-workers",
        type=int,
        default=0,
        help="also ingest the first video alone, then both in one run, with N workers",
    )
    args = parser.parse_args()
    from facefinder.vision.pipeline import FacePipeline

    pipeline = FacePipeline.default(models_dir(args.models), threads=1)
    results = {"machine": machine(), "seconds": args.seconds, "size": SIZE, "rate": RATE, "videos": {}}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        made_videos = []
        for name, make in (("generated", generated_video), ("group", group_video)):
            started = time.perf_counter()
            video, spans = make(Path(folder), args.seconds)
            made_videos.append(video)
            made = time.perf_counter() - started
            identities = true_identities(pipeline, name, spans)
            entry = {
                "encode_s": round(made, 1),
                "bytes": video.stat().st_size,
                "decode_fps": round(decode_speed(video), 1),
            }
            entry["runs"] = [
                measure(pipeline, video, spans, identities, fps, args.seconds, args.threads) for fps in args.fps
            ]
            results["videos"][name] = entry
            for run in entry["runs"]:
                rows.append(
                    (
                        name,
                        run["sample_fps"],
                        entry["decode_fps"],
                        run["x_real_time"],
                        run["frames_analysed_per_s"],
                        run["tracks"],
                        run["true_identities"],
                        run["tracks_per_identity"],
                        run["tracks_per_identity_2plus_frames"],
                        run["peak_rss_mb"],
                    )
                )
            print(f"{name}: made in {made:.1f} s", file=sys.stderr, flush=True)
        if args.ingest_workers:
            for videos in (made_videos[:1], made_videos):
                ingest = measure_ingest(Path(folder), videos, args.seconds, args.ingest_workers, args.models)
                results["ingest" if len(videos) > 1 else "ingest_one_video"] = ingest
                print(
                    f"ingest of {len(videos)} video(s), {args.ingest_workers} workers: "
                    f"{ingest['x_real_time']}x real time",
                    flush=True,
                )
    headers = (
        "video",
        "sample fps",
        "decode fps",
        "x real time",
        "frames/s",
        "tracks",
        "identities",
        "tracks/id",
        "tracks/id (2+ frames)",
        "peak RSS MB",
    )
    print(table(rows, headers))
    print(f"written to {write_json('video.json', results, args.out)}")


if __name__ == "__main__":
    main()
