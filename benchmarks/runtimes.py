"""The two runtimes of the shipped models: LiteRT on their .tflite files vs onnxruntime on their ONNX
conversions, on one thread as an ingest worker runs them (vision/inference.py).

1. Each model alone: milliseconds per image at the batch sizes the pipeline uses.
2. The whole pipeline in-process on ``--photos`` LFW photos (evenly strided): ms per photo and its
   detect / align (FaceMesh + warp) / embed split. The runtimes take turns for ``--rounds`` rounds, so
   load from other processes falls on both alike; the best round counts, the median is beside it.
3. Agreement on those photos: faces found by one runtime and not the other, the largest box and
   landmark differences in pixels, and the lowest cosine between the two embeddings of a face.

    .venv/bin/python benchmarks/runtimes.py [--photos 400] [--rounds 3]

Ingest throughput with each runtime: ``FACEFINDER_RUNTIME=onnxruntime|litert benchmarks/throughput.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import DEFAULT_LFW, image_files, loadavg, machine, models_dir, spread, table, write_json

from facefinder.config import RUNTIME_ENV
from facefinder.vision.image import read_image
from facefinder.vision.inference import InferenceModel
from facefinder.vision.models import onnx_path, tflite_path
from facefinder.vision.pipeline import FacePipeline, PipelineTimings

RUNTIMES = {"onnxruntime": onnx_path, "litert": tflite_path}
BATCHES = {"blazeface_full_range": (1,), "facemesh": (1, 4), "mobilefacenet": (1, 2, 4)}


def per_image_ms(models: dict[str, InferenceModel], batch: int, rounds: int = 7, runs: int = 20) -> dict[str, float]:
    """Best ms per image of each runtime's model; the runtimes take turns, round by round."""
    height, width = (side or 112 for side in next(iter(models.values())).input_size)
    images = np.random.default_rng(0).random((batch, height, width, 3), dtype=np.float32)
    best: dict[str, list[float]] = {runtime: [] for runtime in models}
    for _ in range(rounds):
        for runtime, model in models.items():
            model.run(images)
            started = time.perf_counter()
            for _ in range(runs):
                model.run(images)
            best[runtime].append((time.perf_counter() - started) * 1000 / runs / batch)
    return {runtime: round(min(times), 3) for runtime, times in best.items()}


def models_alone(folder) -> dict:
    out: dict = {}
    for name, batches in BATCHES.items():
        models = {runtime: InferenceModel(path_of(folder, name)) for runtime, path_of in RUNTIMES.items()}
        for b in batches:
            for runtime, ms in per_image_ms(models, b).items():
                out.setdefault(name, {}).setdefault(runtime, {})[f"batch {b}"] = ms
    return out


def pipeline_on(runtime: str, folder) -> FacePipeline:
    os.environ[RUNTIME_ENV] = runtime
    try:
        return FacePipeline.default(folder, threads=1)
    finally:
        os.environ.pop(RUNTIME_ENV)


def timed_round(pipeline: FacePipeline, images: list) -> tuple[dict, list]:
    pipeline.timings = PipelineTimings()
    started = time.perf_counter()
    faces = [f for i in range(0, len(images), 8) for f in pipeline.analyze(images[i : i + 8])]
    total = time.perf_counter() - started
    t, n = pipeline.timings, len(images)
    split = {"ms_per_photo": total, "detect": t.detect, "align": t.align, "embed": t.embed}
    return {k: v * 1000 / n for k, v in split.items()}, faces


def agreement(a: list, b: list) -> dict:
    pairs = [(x, y) for fa, fb in zip(a, b) if len(fa) == len(fb) for x, y in zip(fa, fb)]
    return {
        "photos_with_other_face_counts": sum(len(fa) != len(fb) for fa, fb in zip(a, b)),
        "faces_compared": len(pairs),
        "max_box_diff_px": round(max(float(np.abs(x.box - y.box).max()) for x, y in pairs), 4),
        "max_landmark_diff_px": round(max(float(np.abs(x.landmarks - y.landmarks).max()) for x, y in pairs), 4),
        "min_embedding_cosine": round(min(float(x.embedding @ y.embedding) for x, y in pairs), 6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = spread(image_files(args.lfw), args.photos) if args.lfw.is_dir() else []
    if not paths:
        sys.exit(f"no LFW photos under {args.lfw}: pass --lfw (the folder of per-person folders)")
    folder = models_dir(None)
    load_before = loadavg()
    alone = models_alone(folder)
    images = [read_image(p) for p in paths]
    pipelines = {runtime: pipeline_on(runtime, folder) for runtime in RUNTIMES}
    rounds: dict[str, list[dict]] = {runtime: [] for runtime in RUNTIMES}
    faces: dict[str, list] = {}
    for _ in range(args.rounds):
        for runtime, pipeline in pipelines.items():
            split, faces[runtime] = timed_round(pipeline, images)
            rounds[runtime].append(split)
    in_pipeline = {
        runtime: {
            "best": {k: round(v, 2) for k, v in min(rs, key=lambda r: r["ms_per_photo"]).items()},
            "median_ms_per_photo": round(float(np.median([r["ms_per_photo"] for r in rs])), 2),
        }
        for runtime, rs in rounds.items()
    }
    agree = agreement(faces["onnxruntime"], faces["litert"])
    rows = [(f"{name} {b}", *(alone[name][r][b] for r in RUNTIMES)) for name in alone for b in alone[name]["litert"]]
    rows += [("pipeline ms/photo", *(in_pipeline[r]["best"]["ms_per_photo"] for r in RUNTIMES))]
    print(table(rows, ("ms per image, 1 thread", *RUNTIMES)))
    print(agree)
    payload = {
        "machine": {**machine(), "loadavg_before": load_before, "loadavg_after": loadavg()},
        "photos": len(images),
        "models_alone_ms_per_image": alone,
        "pipeline_ms_per_photo": in_pipeline,
        "agreement": agree,
    }
    print(f"wrote {write_json('runtimes.json', payload)}")


if __name__ == "__main__":
    main()
