"""The match threshold for a gallery of N faces: the score a stranger's best candidate stays below in
99% of searches (open-set FPIR 1%), measured on LFW, fitted for any N, and the calibration checked on
cfp-dev and UTKFace.

A fixed score does not hold its false positive rate as a gallery grows: a stranger searched against
N faces gets the best of N impostor scores, which creeps up with N. So the default threshold is read
off N (services/calibration.py ``Calibration.threshold_for``). This benchmark measures it:

1. Every photo of LFW (13,233; identities by folder), cfp-dev (3,500; frontal and profile) and the
   UTKFace demographic set (2,530; no identities) is embedded by the default pipeline (the face
   nearest the centre); cached in results/threshold_embeddings.npz.
2. Labels first: the false match rate at key scores for every pair of sets (LFW x LFW, cfp x cfp,
   across sets, UTKFace x UTKFace). Only pairs whose labels can be trusted to be different people may
   calibrate: across sets the same celebrities appear under two labels, and UTKFace holds exact
   duplicates under different file names (scores of 1.000), so those tails are label noise.
3. FPIR by gallery size on LFW: its identities split in two at random; the first photo of each
   identity on one side is a non-mated probe, every photo of the other side is the gallery pool
   (~6,600 faces). For N from 10 to the pool, random galleries of N faces are drawn (50 draws below
   1,000 faces, 10 above); the threshold at FPIR 1% is the score that 1% of the probes' best
   candidates exceed; the median over draws is threshold(N).
4. Extrapolation: the best of N draws from an exponential-tailed distribution grows linearly in
   log N, so threshold(N) = a + b log10 N is fitted on N >= 300. Two cross-checks beyond the pool:
   a per-probe Gaussian model (each probe's own mean and spread of impostor scores; FPIR(N, t) =
   mean over probes of 1 - (1 - tail_i(t))^N) and the union bound (FMR(t) x N = 1%, from LFW's pairs).
5. calibration.json gains the fit (``gallery_threshold``); its false-match-rate curve stays LFW's.

    .venv/bin/python benchmarks/gallery_threshold.py [--data ../shared/data] [--reuse] [--no-calibration]

Output: results/gallery_threshold.json, and src/facefinder/services/calibration.json updated.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, RESULTS_DIR, machine, models_dir, table, write_json

DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
CACHE = RESULTS_DIR / "threshold_embeddings.npz"
CALIBRATION = REPO_ROOT / "src" / "facefinder" / "services" / "calibration.json"
SETS = ("lfw", "cfp", "utk")
KEY_SCORES = (0.4, 0.533, 0.6, 0.635, 0.7, 0.78)  # the weak band, the threshold, the privacy and strong scores
SIZES = (10, 30, 100, 300, 1000, 3000)
FPIR = 0.01
FIT_FROM = 300  # smallest gallery the log-linear fit uses (smaller ones sit on the body, not the tail)
REPORTED = (10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000)


def labelled_sets(data: Path) -> list[tuple[str, list[str], list[Path]]]:
    """(set name, identity per photo, photo) for LFW, cfp-dev and UTKFace, identities prefixed by set."""
    from facefinder.services.evaluation.run import flat_photos, labelled_photos

    sets = []
    for name, folder in (("lfw", data / "lfw" / "images"), ("cfp", data / "cfp-dev" / "images")):
        if not folder.is_dir():
            sys.exit(f"error: {folder} not found (the shared data sets; pass --data DIR)")
        people, photos = labelled_photos(folder)
        sets.append((name, [f"{name}:{p}" for p in people], photos))
    utk = data / "utkface-demographics" / "images"
    if not utk.is_dir():
        sys.exit(f"error: {utk} not found (pass --data DIR)")
    photos = flat_photos(utk)
    sets.append(("utk", [f"utk:{p.name}" for p in photos], photos))
    return sets


def embedded(data: Path, models: str | None, reuse: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(identity, set name, unit embeddings, found) of every photo; cached in results/threshold_embeddings.npz."""
    if reuse and CACHE.is_file():
        cached = np.load(CACHE)
        return cached["people"], cached["sets"], cached["vectors"], cached["found"]
    from facefinder.services.evaluation.run import embed_photos
    from facefinder.vision.pipeline import FacePipeline

    pipeline = FacePipeline.default(models_dir(models), threads=2)
    people, sets, vectors, found = [], [], [], []
    for name, identities, photos in labelled_sets(data):
        started = time.perf_counter()
        result = embed_photos(pipeline, photos)
        print(f"{name}: {len(photos)} photos embedded in {time.perf_counter() - started:.0f} s", flush=True)
        people += identities
        sets += [name] * len(photos)
        vectors.append(result.vectors)
        found.append(result.found)
    arrays = np.array(people), np.array(sets), np.concatenate(vectors), np.concatenate(found)
    np.savez(CACHE, people=arrays[0], sets=arrays[1], vectors=arrays[2], found=arrays[3])
    return arrays


def split(people: np.ndarray, rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Of ``rows``: (probe rows, one per probe-side identity; gallery pool rows, every photo of the
    other side), identities assigned to a side at random."""
    rng = np.random.default_rng(seed)
    identities = np.unique(people[rows])
    probe_side = set(identities[rng.random(len(identities)) < 0.5].tolist())
    first: dict[str, int] = {}
    pool = []
    for row in rows.tolist():
        if people[row] in probe_side:
            first.setdefault(people[row], row)
        else:
            pool.append(row)
    return np.array(sorted(first.values())), np.array(pool)


def label_check(people: np.ndarray, sets: np.ndarray, vectors: np.ndarray, found: np.ndarray) -> dict:
    """FMR at KEY_SCORES for every pair of sets (different labels only): which pairs can calibrate."""
    rows = {name: np.flatnonzero((sets == name) & found) for name in SETS}
    out = {}
    for i, a in enumerate(SETS):
        for b in SETS[i:]:
            counts, total = np.zeros(len(KEY_SCORES)), 0
            for start in range(0, len(rows[a]), 2048):
                block = rows[a][start : start + 2048]
                scores = vectors[block] @ vectors[rows[b]].T
                keep = people[block][:, None] != people[rows[b]][None, :]
                if a == b:
                    keep &= block[:, None] < rows[b][None, :]
                values = scores[keep]
                total += values.size
                counts += [(values >= k).sum() for k in KEY_SCORES]
            out[f"{a} x {b}"] = {
                "pairs": total,
                **{f"fmr_at_{k}": float(f"{c / total:.3g}") for k, c in zip(KEY_SCORES, counts)},
            }
    return out


def measured_thresholds(scores: np.ndarray, seed: int = 1) -> dict[int, dict]:
    """Threshold at FPIR 1% per gallery size: median (and spread) over random galleries of that size."""
    from facefinder.services.evaluation.metrics import fpir_threshold

    rng = np.random.default_rng(seed)
    pool = scores.shape[1]
    out = {}
    for size in [*SIZES, pool]:
        draws = 1 if size == pool else (50 if size < 1000 else 10)
        found = [
            fpir_threshold(scores[:, rng.choice(pool, size, replace=False)].max(axis=1), FPIR)[0] for _ in range(draws)
        ]
        out[size] = {
            "threshold": round(float(np.median(found)), 4),
            "p10": round(float(np.percentile(found, 10)), 4),
            "p90": round(float(np.percentile(found, 90)), 4),
            "draws": draws,
        }
    return out


def fit(measured: dict[int, dict]) -> tuple[float, float]:
    """(a, b) of threshold = a + b log10 N, least squares over the galleries of FIT_FROM faces or more."""
    sizes = np.array([n for n in measured if n >= FIT_FROM], dtype=np.float64)
    values = np.array([measured[int(n)]["threshold"] for n in sizes])
    b, a = np.polyfit(np.log10(sizes), values, 1)
    return float(a), float(b)


def gaussian_model(scores: np.ndarray, size: int) -> float:
    """The FPIR-1% threshold for ``size`` faces if each probe's impostor scores were Gaussian with its
    own mean and spread (bisection on FPIR(N, t) = mean_i 1 - (1 - tail_i(t))^N)."""
    mean, spread = scores.mean(axis=1), scores.std(axis=1)
    erfc = np.vectorize(math.erfc)
    low, high = 0.0, 1.5
    for _ in range(50):
        t = (low + high) / 2
        tail = 0.5 * erfc((t - mean) / spread / math.sqrt(2))
        fpir = float(np.mean(-np.expm1(size * np.log1p(-tail))))
        low, high = (t, high) if fpir > FPIR else (low, t)
    return round((low + high) / 2, 4)


def union_bound(impostor_descending: np.ndarray, size: int) -> float | None:
    """The score where FMR x size = FPIR, from LFW's different-person pairs (None past what they resolve)."""
    at = int(FPIR / size * len(impostor_descending))
    return round(float(impostor_descending[at]), 4) if at >= 1 else None


def lfw_impostors(people: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Every different-person pair of LFW faces, highest first."""
    from facefinder.services.evaluation.metrics import all_pair_scores

    _, impostor = all_pair_scores(vectors[rows], np.ones(len(rows), bool), people[rows], block=2048)
    return np.sort(impostor)[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--models", default=None)
    parser.add_argument("--reuse", action="store_true", help="reuse results/threshold_embeddings.npz")
    parser.add_argument("--no-calibration", action="store_true", help="do not rewrite calibration.json")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    people, sets, vectors, found = embedded(args.data, args.models, args.reuse)
    labels = label_check(people, sets, vectors, found)
    lfw = np.flatnonzero((sets == "lfw") & found)
    probes, pool = split(people, lfw)
    scores = vectors[probes] @ vectors[pool].T
    measured = measured_thresholds(scores)
    a, b = fit(measured)
    impostor = lfw_impostors(people, vectors, lfw)
    beyond = {
        size: {
            "fitted": round(a + b * math.log10(size), 4),
            "gaussian_model": gaussian_model(scores, size),
            "union_bound": union_bound(impostor, size),
        }
        for size in REPORTED
    }
    result = {
        "machine": machine(),
        "photos": {name: int((sets == name).sum()) for name in SETS},
        "no_face": {name: int(((sets == name) & ~found).sum()) for name in SETS},
        "labels": labels,
        "lfw_probes": len(probes),
        "lfw_pool": len(pool),
        "fpir": FPIR,
        "measured": {str(k): v for k, v in measured.items()},
        "fit": {"a": round(a, 4), "b": round(b, 4), "from_size": FIT_FROM},
        "extrapolated": {str(k): v for k, v in beyond.items()},
        "lfw_impostor_pairs": len(impostor),
    }
    report(result)
    write_json("gallery_threshold.json", result, args.out)
    if not args.no_calibration:
        write_calibration(a, b, measured)


def report(result: dict) -> None:
    print(
        table(
            [(k, v["pairs"], *list(v.values())[1:]) for k, v in result["labels"].items()],
            ("sets", "pairs", *[f"FMR at {k}" for k in KEY_SCORES]),
        )
    )
    print(
        table(
            [(f"{int(k):,}", v["threshold"], v["p10"], v["p90"], v["draws"]) for k, v in result["measured"].items()],
            ("gallery (LFW)", "threshold (median)", "p10", "p90", "draws"),
        )
    )
    fit_ = result["fit"]
    print(f"fit: threshold = {fit_['a']} + {fit_['b']} log10 N (N >= {fit_['from_size']})")
    rows = [
        (f"{int(k):,}", v["fitted"], v["gaussian_model"], v["union_bound"] or "-")
        for k, v in result["extrapolated"].items()
    ]
    print(table(rows, ("gallery", "fitted", "Gaussian model", "union bound")))


def write_calibration(a: float, b: float, measured: dict) -> None:
    """calibration.json gains the gallery-size fit; its curve, threshold and bands are left as they are."""
    record = json.loads(CALIBRATION.read_text())
    record["gallery_threshold"] = {
        "fpir": FPIR,
        "a": round(a, 4),
        "b": round(b, 4),
        "measured_on": "LFW: random galleries of 10 to 6,566 faces, non-mated probes of the other identities",
        "measured": {str(k): v["threshold"] for k, v in measured.items()},
        "meaning": "default threshold for a gallery of N faces: a + b log10 N, at least `threshold`, at most 0.95",
    }
    CALIBRATION.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {CALIBRATION}")


if __name__ == "__main__":
    main()
