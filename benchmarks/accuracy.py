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


def normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


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
    thresholds = np.unique(np.round(scores, 4))
    accuracies = []
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        train_acc = [((scores[train] >= t) == same[train]).mean() for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        accuracies.append(((scores[test] >= best) == same[test]).mean())
    impostor = np.sort(scores[~same])[::-1]
    genuine = scores[same]
    tar = {}
    for far in (1e-2, 1e-3):
        allowed = int(np.floor(far * len(impostor)))
        threshold = impostor[allowed] if allowed < len(impostor) else -1
        tar[f"tar_at_far_{far:g}"] = float((genuine > threshold).mean())
    return {"accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)), **tar}


def identification(names: list[str], emb: np.ndarray, found: np.ndarray) -> dict:
    """Closed-set rank-1/10 and open-set FNIR@FPIR 1%, plus the impostor score distribution."""
    people = np.array([n.split("/")[0] for n in names])
    order = np.argsort(names, kind="stable")
    first = {}
    for i in order:
        first.setdefault(people[i], i)
    counts = {p: c for p, c in zip(*np.unique(people, return_counts=True))}
    multi = sorted(p for p, c in counts.items() if c >= 2)
    gallery = np.array(sorted(first.values()))
    probes = np.array([i for i in range(len(names)) if counts[people[i]] >= 2 and first[people[i]] != i])
    sims = emb[probes] @ emb[gallery].T
    sims[~found[probes]] = -1  # a probe with no face finds nothing
    sims[:, ~found[gallery]] = -1
    mate = people[probes][:, None] == people[gallery][None, :]
    mate_score = np.where(mate, sims, -np.inf).max(axis=1)
    better = (sims > mate_score[:, None]).sum(axis=1)
    closed = {
        "gallery": int(len(gallery)),
        "probes": int(len(probes)),
        "rank1": float((better == 0).mean()),
        "rank10": float((better < 10).mean()),
    }
    impostor = sims[~mate & found[probes][:, None] & found[gallery][None, :]]

    # Open set: every other person with 2+ photos is held out of the gallery.
    held_out = set(multi[1::2])
    in_gallery = np.array([people[g] not in held_out for g in gallery])
    g_open = gallery[in_gallery]
    mated = np.array([i for i in probes if people[i] not in held_out])
    non_mated = np.array([i for i in range(len(names)) if people[i] in held_out])
    s_mated = emb[mated] @ emb[g_open].T
    s_non = emb[non_mated] @ emb[g_open].T
    s_mated[~found[mated]] = -1
    s_non[~found[non_mated]] = -1
    top_non = np.sort(s_non.max(axis=1))[::-1]
    threshold = float(top_non[int(np.floor(0.01 * len(top_non)))])
    best = s_mated.argmax(axis=1)
    hit = (people[g_open][best] == people[mated]) & (s_mated.max(axis=1) > threshold)
    open_set = {
        "gallery": int(len(g_open)),
        "mated_probes": int(len(mated)),
        "non_mated_probes": int(len(non_mated)),
        "threshold_at_fpir_1pct": threshold,
        "fnir_at_fpir_1pct": float(1 - hit.mean()),
    }
    return {"closed_set": closed, "open_set": open_set}, impostor


def fmr_curve(impostor: np.ndarray) -> dict:
    grid = np.round(np.arange(0.0, 1.0001, 0.01), 2)
    ordered = np.sort(impostor)
    at_or_above = len(ordered) - np.searchsorted(ordered, grid, side="left")
    fmr = np.maximum(at_or_above, 0.5) / len(ordered)  # half a count where none was seen: an upper-ish bound
    return {"scores": grid.tolist(), "fmr": [float(f"{v:.3g}") for v in fmr], "impostor_pairs": int(len(ordered))}


def score_at_fmr(impostor: np.ndarray, fmr: float) -> float:
    ordered = np.sort(impostor)[::-1]
    return float(ordered[int(np.floor(fmr * len(ordered)))])


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
        bands = {
            "strong": max(score_at_fmr(impostor, 1e-6), threshold),
            "possible": threshold,
            "weak": min(score_at_fmr(impostor, 1e-4), threshold),
        }
        calibration = {
            "model_id": "blazeface_full_range+mobilefacenet",
            "threshold": round(threshold, 4),
            "bands": {k: round(v, 4) for k, v in bands.items()},
            "band_meaning": {
                "strong": "false match rate <= 1e-6 per comparison",
                "possible": "at or above the default threshold (open-set FPIR 1% on LFW)",
                "weak": "below the default threshold, false match rate <= 1e-4: only shown when --threshold is lowered",
            },
            "fmr_curve": fmr_curve(impostor),
            "source": f"benchmarks/accuracy.py on LFW ({len(names)} photos), variant {variant}",
        }
        CALIBRATION.write_text(json.dumps(calibration, indent=2))
        print(f"wrote {CALIBRATION}")


if __name__ == "__main__":
    main()
