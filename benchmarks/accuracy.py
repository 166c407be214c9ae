"""Accuracy on LFW with facefinder's own pipeline (detect -> FaceMesh align -> MobileFaceNet).

1. Verification: the standard 10-fold protocol on pairs.txt (threshold chosen on 9 folds, accuracy
   on the 10th; mean and std), and TAR at FAR 1e-2 / 1e-3 over the 6,000 pairs.
2. 1:N identification: gallery = the first photo of each of the 1,680 people with two or more
   photos plus the 4,069 singletons; probes = their other photos. Rank-1 and rank-10.
3. Open-set: half of the 1,680 people are held out of the gallery; their photos are non-mated
   probes. FNIR (mate not at rank 1 above the threshold) at FPIR 1%.
4. Calibration: the false match rate curve of all different-person probe x gallery scores, the
   FPIR-1% threshold and verbal bands, written to src/facefinder/services/calibration.json.

Each variant (plain, flip-fused) is scored from one pass over the photos. Photos where no face is
found are counted and reported; their pairs score -1 (a miss), never skipped.

    .venv/bin/python benchmarks/accuracy.py [--lfw ../shared/data/lfw] [--workers 2] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from facefinder.services.calibration import calibration_record
from facefinder.services.evaluation import metrics
from facefinder.services.evaluation.metrics import normalise

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CALIBRATION = ROOT / "src" / "facefinder" / "services" / "calibration.json"

_pipeline = None


def _init(models_dir: str, mesh_passes: int) -> None:
    global _pipeline
    from facefinder.vision.pipeline import FacePipeline

    _pipeline = FacePipeline.default(Path(models_dir), threads=1, mesh_passes=mesh_passes)


def _embed_chunk(paths: list[str]) -> list[tuple[np.ndarray | None, np.ndarray | None, float]]:
    """Per photo: (embedding, flipped-crop embedding, seconds) of the face nearest the centre."""
    from facefinder.vision.image import read_image

    out = []
    for path in paths:
        started = time.perf_counter()
        image = read_image(path)
        faces = _pipeline.analyze([image])[0]
        if not faces:
            out.append((None, None, time.perf_counter() - started))
            continue
        height, width = image.shape[:2]
        centre = np.array([width / 2, height / 2])
        face = min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre))
        flipped = _pipeline.recognizer.embed([face.aligned[:, ::-1]])[0]
        out.append((face.embedding, flipped, time.perf_counter() - started))
    return out


def embed_lfw(
    images_dir: Path, models_dir: Path, workers: int, mesh_passes: int = 1
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    paths = sorted(str(p) for p in images_dir.glob("*/*.jpg"))
    chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
    started = time.perf_counter()
    results = []
    with Pool(workers, initializer=_init, initargs=(str(models_dir), mesh_passes)) as pool:
        for i, chunk in enumerate(pool.imap(_embed_chunk, chunks)):
            results.extend(chunk)
            if i % 20 == 0:
                print(
                    f"  embedded {len(results)}/{len(paths)} photos ({time.perf_counter() - started:.0f} s)", flush=True
                )
    dim = next(r[0] for r in results if r[0] is not None).shape[0]
    plain = np.stack([r[0] if r[0] is not None else np.zeros(dim, np.float32) for r in results])
    flipped = np.stack([r[1] if r[1] is not None else np.zeros(dim, np.float32) for r in results])
    seconds = np.array([r[2] for r in results])
    found = np.array([r[0] is not None for r in results])
    print(f"  {len(paths)} photos in {time.perf_counter() - started:.0f} s; no face found in {int((~found).sum())}")
    return [os.path.relpath(p, images_dir) for p in paths], plain, flipped, seconds


def read_pairs(path: Path) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    lines = path.read_text().split("\n")
    folds, per_fold = map(int, lines[0].split())
    pairs, same, fold = [], [], []
    for i, line in enumerate(text for text in lines[1:] if text.strip()):
        parts = line.split()
        if len(parts) == 3:
            a, b = (parts[0], int(parts[1])), (parts[0], int(parts[2]))
        else:
            a, b = (parts[0], int(parts[1])), (parts[2], int(parts[3]))
        pairs.append(tuple(f"{name}/{name}_{n:04d}.jpg" for name, n in (a, b)))
        same.append(len(parts) == 3)
        fold.append(i // (2 * per_fold))
    return pairs, np.array(same), np.array(fold)


def verification(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> dict:
    accuracies = metrics.fold_accuracy(scores, same, fold)
    tar = {f"tar_at_far_{far:g}": metrics.tar_at_fmr(scores[same], scores[~same], far).tar for far in (1e-2, 1e-3)}
    return {"accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)), **tar}


def identification(names: list[str], emb: np.ndarray, found: np.ndarray) -> tuple[dict, np.ndarray]:
    """Closed-set rank-1/10 and open-set FNIR@FPIR 1% (services/evaluation/metrics.py), plus the impostor
    score distribution. ``names`` are sorted, so each person's first photo is their gallery photo."""
    people = np.array([n.split("/")[0] for n in names])
    ident = metrics.identification(people, emb, found, fpir=0.01)
    closed = {k: ident.closed_set[k] for k in ("gallery", "probes", "rank1", "rank10")}
    open_set = {
        "gallery": ident.open_set["gallery"],
        "mated_probes": ident.open_set["mated_probes"],
        "non_mated_probes": ident.open_set["non_mated_probes"],
        "threshold_at_fpir_1pct": ident.open_set["threshold"],
        "fnir_at_fpir_1pct": ident.open_set["fnir"],
    }
    return {"closed_set": closed, "open_set": open_set}, ident.impostor


def machine() -> dict:
    cpu = next(
        (row.split(":", 1)[1].strip() for row in open("/proc/cpuinfo") if row.startswith("model name")),
        platform.processor(),
    )
    import onnxruntime

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reuse", action="store_true", help="reuse benchmarks/results/lfw_embeddings.npz")
    parser.add_argument("--mesh-passes", type=int, default=1, help="FaceMesh passes (2 = re-crop on the mesh)")
    parser.add_argument("--tag", default="", help="suffix for the result files of an experiment")
    parser.add_argument("--no-calibration", action="store_true", help="do not rewrite calibration.json")
    args = parser.parse_args()
    if not (args.lfw / "pairs.txt").is_file():
        sys.exit(f"LFW not found at {args.lfw} (expected pairs.txt and images/); pass --lfw DIR")
    from facefinder.config import data_dir, models_dir
    from facefinder.vision.models import require_models

    models = models_dir(data_dir())
    require_models(models)
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = RESULTS / f"lfw_embeddings{args.tag}.npz"
    if args.reuse and cache.exists():
        data = np.load(cache)
        names, plain, flipped, seconds = list(data["names"]), data["embeddings"], data["flipped"], data["seconds"]
    else:
        print(f"embedding {args.lfw / 'images'} with {args.workers} workers ...")
        names, plain, flipped, seconds = embed_lfw(args.lfw / "images", models, args.workers, args.mesh_passes)
        np.savez(
            cache,
            names=np.array(names),
            embeddings=plain.astype(np.float32),
            flipped=flipped.astype(np.float32),
            seconds=seconds,
        )
    found = np.linalg.norm(plain, axis=1) > 0
    index = {n: i for i, n in enumerate(names)}
    pairs, same, fold = read_pairs(args.lfw / "pairs.txt")
    a = np.array([index[p[0]] for p in pairs])
    b = np.array([index[p[1]] for p in pairs])

    report = {
        "machine": machine(),
        "photos": len(names),
        "no_face_found": int((~found).sum()),
        "no_face_examples": [n for n, f in zip(names, found) if not f][:20],
        "ms_per_photo_single_core_mean": float(seconds.mean() * 1000),
        "variants": {},
    }
    impostors = {}
    for variant, emb in {"plain": normalise(plain), "flip": normalise(normalise(plain) + normalise(flipped))}.items():
        emb = np.where(found[:, None], emb, 0)
        scores = np.where(found[a] & found[b], (emb[a] * emb[b]).sum(axis=1), -1.0)
        ident, impostors[variant] = identification(names, emb, found)
        report["variants"][variant] = {
            "verification": verification(scores, same, fold),
            **ident,
            "pairs_missing_a_face": int((~(found[a] & found[b])).sum()),
        }
    print(json.dumps(report, indent=2))
    report["mesh_passes"] = args.mesh_passes
    (RESULTS / f"accuracy{args.tag}.json").write_text(json.dumps(report, indent=2))

    if not args.no_calibration:
        variant = "plain"  # what the default pipeline serves (flip fusion is not on by default)
        impostor = impostors[variant]
        threshold = report["variants"][variant]["open_set"]["threshold_at_fpir_1pct"]
        calibration = calibration_record(
            "blazeface_full_range+mobilefacenet",
            impostor,
            threshold,
            measured_on="LFW",
            fpir=0.01,
            source=f"benchmarks/accuracy.py on LFW ({len(names)} photos), variant {variant}",
        )
        CALIBRATION.write_text(json.dumps(calibration, indent=2))
        print(f"wrote {CALIBRATION}")


if __name__ == "__main__":
    main()
