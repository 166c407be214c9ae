"""Embedding batch size: milliseconds per face of the recognizer at each batch size, one thread (as one
ingest worker runs it), to choose ``EMBED_BATCH`` in vision/embed.py.

The crops are real aligned LFW faces (the first ``--faces`` photos' main faces, aligned by the
pipeline once). Each batch size embeds all of them; the sizes take turns for ``--rounds`` rounds, so
a burst of load from other processes falls on every size alike, and the best round counts (the
least disturbed), with the median beside it.

    .venv/bin/python benchmarks/embed_batch.py [--faces 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, loadavg, machine, models_dir, table, write_json

from facefinder.vision.image import read_image
from facefinder.vision.pipeline import FacePipeline

SIZES = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_LFW = (REPO_ROOT / ".." / "shared" / "data" / "lfw" / "images").resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--faces", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    paths = sorted(args.lfw.glob("*/*.jpg"))[: args.faces * 2]
    if not paths:
        sys.exit(f"no LFW photos under {args.lfw}: pass --lfw (the folder of per-person folders)")
    pipeline = FacePipeline.default(models_dir(None), threads=1)
    crops = []
    for path in paths:
        faces = pipeline.analyze([read_image(path)])[0]
        if faces:
            crops.append(faces[0].aligned)
        if len(crops) == args.faces:
            break
    crops = np.stack(crops)
    load_before = loadavg()
    timings: dict[int, list[float]] = {size: [] for size in SIZES}
    for _ in range(args.rounds):
        for size in SIZES:
            started = time.perf_counter()
            pipeline.recognizer.embed(crops, batch_size=size)
            timings[size].append((time.perf_counter() - started) * 1000 / len(crops))
    rows = {
        size: {"best_ms_per_face": round(min(t), 3), "median_ms_per_face": round(float(np.median(t)), 3)}
        for size, t in timings.items()
    }
    print(table([(s, r["best_ms_per_face"], r["median_ms_per_face"]) for s, r in rows.items()],
                ("batch", "best ms/face", "median ms/face")))  # fmt: skip
    info = {**machine(), "loadavg_before": load_before}
    print(f"wrote {write_json('embed_batch.json', {'machine': info, 'faces': len(crops), 'results': rows})}")


if __name__ == "__main__":
    main()
