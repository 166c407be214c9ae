"""People on LFW: how well clustering groups faces into the people they show, and what it costs.

Every LFW photo's face (the one nearest the centre, as benchmarks/accuracy.py picks it) is a face of
one gallery; the true identity is the photo's folder. Reported against it:

* **pairwise precision / recall**: of the face pairs put in one person, the share that are one
  identity; of the same-identity pairs, the share put in one person (dominated by the big identities:
  George W Bush's 530 photos are 140,185 of the 242,710 same-identity pairs);
* **BCubed precision / recall / F** (Bagga & Baldwin 1998): the same per face, averaged over faces,
  so every face counts once whatever the size of its identity;
* **singletons kept alone**: of the 4,069 identities with one photo, the share left unassigned;
* clustering time and peak memory.

Unassigned faces count as people of one face. Steps:

1. ``sweep``: the two graph methods (connected components and Chinese whispers over mutual k-NN edges,
   services/people/graph.py) over thresholds, k and quality floors, on k-NN lists from one exact
   FAISS search: the same grouping code the service runs, without the catalog.
2. ``service``: the chosen settings end to end through ``FaceFinder.people`` on a real SQLite
   catalog and FAISS index: a full run over every face, then an incremental one (80% of the faces
   clustered first, the other 20% ingested and clustered incrementally), timed, with peak memory.

The 1M-face synthetic scale run is a later step (docs/people.md). Embeddings: reuses
benchmarks/results/lfw_embeddings.npz (made by benchmarks/accuracy.py, or by this script, which adds
each face's quality; without it no face is below the floor) or embeds LFW once (~5 min on 2 cores).

    .venv/bin/python benchmarks/people.py [--lfw ../shared/data/lfw] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from _common import RESULTS_DIR, machine, models_dir, table, write_json

from facefinder.services.people import graph
from facefinder.services.people.clustering import ClusterSettings

DEFAULT_LFW = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lfw").resolve()
CACHE = RESULTS_DIR / "lfw_embeddings.npz"
TARGETS = {"pairwise_precision": 0.98, "pairwise_recall": 0.90, "bcubed_f": 0.93}

_pipeline = None


# ----- embeddings ----------------------------------------------------------------------------------
def _init(models: str) -> None:
    global _pipeline
    from facefinder.vision.pipeline import FacePipeline

    _pipeline = FacePipeline.default(Path(models), threads=1)


def _embed_chunk(paths: list[str]) -> list[tuple]:
    """Per photo, the face nearest the centre: (embedding, flipped embedding, seconds, quality)."""
    from facefinder.vision.image import read_image

    out = []
    for path in paths:
        started = time.perf_counter()
        image = read_image(path)
        faces = _pipeline.analyze([image])[0]
        if not faces:
            out.append((None, None, time.perf_counter() - started, 0.0))
            continue
        centre = np.array([image.shape[1] / 2, image.shape[0] / 2])
        face = min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre))
        flipped = _pipeline.recognizer.embed([face.aligned[:, ::-1]])[0]
        out.append((face.embedding, flipped, time.perf_counter() - started, face.quality.score))
    return out


def embed_lfw(images: Path, models: Path, workers: int) -> dict[str, np.ndarray]:
    """Every LFW photo embedded once, in benchmarks/accuracy.py's cache format plus each face's quality."""
    paths = sorted(str(p) for p in images.glob("*/*.jpg"))
    chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
    started, results = time.perf_counter(), []
    with Pool(workers, initializer=_init, initargs=(str(models),)) as pool:
        for number, chunk in enumerate(pool.imap(_embed_chunk, chunks)):
            results.extend(chunk)
            if number % 20 == 0:
                print(f"  embedded {len(results)}/{len(paths)} ({time.perf_counter() - started:.0f} s)", flush=True)
    dim = next(r[0] for r in results if r[0] is not None).shape[0]
    zero = np.zeros(dim, np.float32)
    return {
        "names": np.array([str(Path(p).relative_to(images)) for p in paths]),
        "embeddings": np.stack([r[0] if r[0] is not None else zero for r in results]).astype(np.float32),
        "flipped": np.stack([r[1] if r[1] is not None else zero for r in results]).astype(np.float32),
        "seconds": np.array([r[2] for r in results]),
        "quality": np.array([r[3] for r in results], dtype=np.float32),
    }


def load_faces(lfw: Path, workers: int) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(identity, embedding, quality, photo name) of every photo where a face was found."""
    if not CACHE.exists():
        print(f"embedding {lfw / 'images'} with {workers} workers (cached in {CACHE}) ...", flush=True)
        np.savez(CACHE, **embed_lfw(lfw / "images", models_dir(None), workers))
    data = np.load(CACHE)
    names, vectors = [str(n) for n in data["names"]], data["embeddings"].astype(np.float32)
    quality = data["quality"] if "quality" in data.files else np.ones(len(names), np.float32)
    found = np.linalg.norm(vectors, axis=1) > 0
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    keep = np.flatnonzero(found)
    return [names[i].split("/")[0] for i in keep], vectors[keep], quality[keep], [names[i] for i in keep]


# ----- scores --------------------------------------------------------------------------------------
def scores(truth: list[str], labels: np.ndarray) -> dict:
    """Pairwise and BCubed precision / recall against the true identities; ``labels`` one per face,
    unassigned faces with a label of their own."""
    identities = {name: i for i, name in enumerate(sorted(set(truth)))}
    true = np.array([identities[name] for name in truth], dtype=np.int64)
    _, predicted = np.unique(labels, return_inverse=True)
    cells = Counter(zip(predicted.tolist(), true.tolist()))
    pred_size, true_size = np.bincount(predicted), np.bincount(true)
    counts = np.array(list(cells.values()), dtype=np.float64)
    keys = np.array(list(cells.keys()), dtype=np.int64)
    pairs = lambda n: (n * (n - 1) / 2).sum()  # noqa: E731
    tp, pred_pairs, true_pairs = pairs(counts), pairs(pred_size.astype(float)), pairs(true_size.astype(float))
    n = len(truth)
    b_precision = float((counts**2 / pred_size[keys[:, 0]]).sum() / n)
    b_recall = float((counts**2 / true_size[keys[:, 1]]).sum() / n)
    alone = true_size[true] == 1
    return {
        "pairwise_precision": round(float(tp / pred_pairs) if pred_pairs else 1.0, 4),
        "pairwise_recall": round(float(tp / true_pairs), 4),
        "bcubed_precision": round(b_precision, 4),
        "bcubed_recall": round(b_recall, 4),
        "bcubed_f": round(2 * b_precision * b_recall / (b_precision + b_recall), 4),
        "singletons_kept_alone": round(float((pred_size[predicted[alone]] == 1).mean()), 4),
        "people": int((pred_size > 1).sum()),
        "faces_assigned": round(float((pred_size[predicted] > 1).mean()), 4),
    }


def labels_of(n: int, grouping: graph.Grouping) -> np.ndarray:
    labels = np.arange(n, dtype=np.int64) + 1_000_000  # unassigned: a label of its own
    for face, (person, _) in grouping.assigned.items():
        labels[face] = person
    return labels


def meets(result: dict) -> bool:
    return all(result[key] >= target for key, target in TARGETS.items())


# ----- 1. the sweep over the grouping alone ---------------------------------------------------------
def knn(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores_, ids = index.search(vectors, k + 1)
    return ids, scores_


def run_grouping(truth, quality, ids, sims, settings: ClusterSettings) -> tuple[dict, float]:
    """Group every face from the k-NN lists as the service would (no one assigned yet); scores, seconds."""
    started = time.perf_counter()
    eligible = quality >= settings.quality_floor
    k = settings.neighbours
    nbr = np.where(eligible[ids[:, : k + 1]], ids[:, : k + 1], -1)
    faces = np.flatnonzero(eligible)
    lists = graph.neighbour_lists(faces, nbr[faces], sims[faces, : k + 1], settings.threshold)
    lists = {face: found[:k] for face, found in lists.items()}
    grouping = graph.group(faces.tolist(), lists, {}, settings.method, settings.support, settings.min_size)
    seconds = time.perf_counter() - started
    return scores(truth, labels_of(len(truth), grouping)), seconds


def sweep(truth, quality, vectors, quick: bool) -> list[dict]:
    """Both methods over thresholds and k (quality floor 0.3, support 2), then the floor and the join
    support varied around the chosen threshold and k."""
    ids, sims = knn(vectors, 40)
    thresholds = [0.64, 0.70, 0.76] if quick else [0.60, 0.62, 0.64, 0.66, 0.68, 0.70, 0.72, 0.74, 0.76, 0.80]
    chosen = ClusterSettings()
    variants = [{"threshold": t, "neighbours": k} for k in (10, 20, 30, 40) for t in thresholds]
    variants += [{"quality_floor": q} for q in (0.0, 0.5, 0.7)] + [{"support": n} for n in (1, 3)]
    rows = []
    for method in graph.METHODS:
        for change in variants:
            settings = replace(chosen, method=method, **change)
            result, seconds = run_grouping(truth, quality, ids, sims, settings)
            rows.append({**vars(settings), **result, "seconds": round(seconds, 2)})
            print(f"  {settings}: {result} ({seconds:.1f} s)", flush=True)
    return rows


# ----- 2. the service end to end -------------------------------------------------------------------
def fill(ff, collection: str, names: list[str], vectors: np.ndarray, quality: np.ndarray, rows: np.ndarray) -> None:
    """Store faces as photos of one face each (no image decoding: the embeddings are known)."""
    from facefinder.storage.store import NewFace, NewImage

    cid = ff.store.collection(collection).id
    ff.store.set_model(cid, "blazeface_full_range+mobilefacenet")
    for start in range(0, len(rows), 500):
        photos = [
            (
                NewImage(hashlib.sha256(names[i].encode()).hexdigest(), names[i], 250, 250),
                [NewFace([0, 0, 1, 1], [[0, 0]] * 5, 1.0, float(quality[i]), {}, vectors[i], b"")],
            )
            for i in rows[start : start + 500]
        ]
        ff.store.add_images(cid, photos, "blazeface_full_range+mobilefacenet")


def service_labels(ff, collection: str, names: list[str]) -> np.ndarray:
    """One label per face: its person, or a label of its own."""
    index = {name: i for i, name in enumerate(names)}
    labels = np.arange(len(names), dtype=np.int64) + 1_000_000
    for person in ff.people.list(collection, members=True):
        for member in person.members:
            labels[index[member.source]] = person.person_id
    return labels


def peak_rss_mib() -> float | None:
    """This process's peak resident memory since the last reset_peak_rss (Linux: VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def reset_peak_rss() -> bool:
    """Start the peak-memory count again (Linux 4.0+: writing 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measured(call) -> tuple[object, dict]:
    """A call's result, wall seconds, and the process's resident memory before it and at its peak
    (numpy, FAISS and SQLite included; no tracing, so the time is not slowed down)."""
    before = peak_rss_mib() if not reset_peak_rss() else None
    rss_before = _rss_mib()
    started = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - started
    return result, {
        "seconds": round(seconds, 2),
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "peak_is_since_process_start": before is not None,
    }


def _rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def service_run(truth, names, vectors, quality, settings: ClusterSettings) -> dict:
    from facefinder import FaceFinder

    policy = {"purpose": "benchmark", "legal_basis": "LFW research benchmark", "retention_days": 1}
    out = {}
    with tempfile.TemporaryDirectory() as folder, FaceFinder(folder, workers=0, actor="benchmark") as ff:
        ff.people.settings = settings
        ff.create_collection("full", **policy)
        fill(ff, "full", names, vectors, quality, np.arange(len(names)))
        report, cost = measured(lambda: ff.people.cluster("full", full=True))
        out["full"] = {**scores(truth, service_labels(ff, "full", names)), **cost, "report": report.to_dict()}
        ff.create_collection("incremental", **policy)
        first = np.array([i for i in range(len(names)) if i % 5]), np.array([i for i in range(len(names)) if not i % 5])
        fill(ff, "incremental", names, vectors, quality, first[0])
        ff.people.cluster("incremental", full=True)
        fill(ff, "incremental", names, vectors, quality, first[1])
        report, cost = measured(lambda: ff.people.cluster("incremental"))
        labels = service_labels(ff, "incremental", names)
        out["incremental"] = {**scores(truth, labels), **cost, "report": report.to_dict()}
    return out


def cfp_run(data: Path) -> dict:
    """The chosen settings on cfp-dev (250 people, 10 frontal and 4 profile photos each): frontal and
    profile photos mixed, and frontal alone (embeddings cached by benchmarks/person_search.py)."""
    from person_search import cfp_faces

    names, vectors, quality, found = cfp_faces(data, 2)
    person = np.array([n.split("/")[0] for n in names])
    frontal = np.array([n.split("/")[1] == "frontal" for n in names])
    out = {}
    for kind, rows in (("mixed", np.flatnonzero(found)), ("frontal", np.flatnonzero(found & frontal))):
        truth = person[rows].tolist()
        ids, sims = knn(vectors[rows], ClusterSettings().neighbours)
        result, seconds = run_grouping(truth, quality[rows], ids, sims, ClusterSettings())
        result = {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in result.items()}  # no singletons
        out[kind] = {"faces": len(rows), **result, "seconds": round(seconds, 2)}
        if kind == "mixed":  # how many profile faces found their person, and how many stayed alone
            labels = labels_of(len(rows), _grouping(quality[rows], ids, sims))
            profile = ~frontal[rows]
            sizes = Counter(labels.tolist())
            out[kind]["profile_faces_assigned"] = round(float(np.mean([sizes[x] > 1 for x in labels[profile]])), 4)
        print(f"cfp-dev {kind}: {out[kind]}", flush=True)
    return out


def _grouping(quality, ids, sims) -> graph.Grouping:
    s = ClusterSettings()
    eligible = quality >= s.quality_floor
    nbr = np.where(eligible[ids[:, : s.neighbours + 1]], ids[:, : s.neighbours + 1], -1)
    faces = np.flatnonzero(eligible)
    lists = graph.neighbour_lists(faces, nbr[faces], sims[faces, : s.neighbours + 1], s.threshold)
    return graph.group(faces.tolist(), lists, {}, s.method, s.support, s.min_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer thresholds in the sweep")
    parser.add_argument("--out", help="result file [default: benchmarks/results/people.json]")
    parser.add_argument("--cfp-only", action="store_true", help="only the cfp-dev run, added to the result file")
    args = parser.parse_args()
    cfp = args.lfw.parent / "cfp-dev"
    if args.cfp_only:
        path = Path(args.out) if args.out else RESULTS_DIR / "people.json"
        payload = json.loads(path.read_text()) if path.exists() else {"machine": machine()}
        payload["cfp_dev"] = cfp_run(cfp)
        print(f"wrote {write_json('people.json', payload, args.out)}")
        return
    if not (args.lfw / "images").is_dir():
        sys.exit(f"LFW not found at {args.lfw} (expected images/); pass --lfw DIR")
    info = machine()
    try:
        info["memory_gib"] = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        info["memory_gib"] = None
    truth, vectors, quality, names = load_faces(args.lfw, args.workers)
    print(f"{len(truth)} faces of {len(set(truth))} identities; {int((quality < 0.3).sum())} below quality 0.3")
    rows = sweep(truth, quality, vectors, args.quick)
    chosen = ClusterSettings()
    print(f"end to end with {chosen} ...", flush=True)
    end_to_end = service_run(truth, names, vectors, quality, chosen)
    headers = ("method", "threshold", "neighbours", "quality_floor", "support", "pairwise_precision",
               "pairwise_recall", "bcubed_f", "singletons_kept_alone", "people", "seconds")  # fmt: skip
    print(table([tuple(r[h] for h in headers) for r in rows], headers))
    for name, result in end_to_end.items():
        print(name, {k: v for k, v in result.items() if k != "report"})
    payload = {
        "machine": info,
        "faces": len(truth),
        "identities": len(set(truth)),
        "targets": TARGETS,
        "sweep": rows,
        "chosen": vars(chosen),
        "service": end_to_end,
        "meets_targets": {name: meets(result) for name, result in end_to_end.items()},
    }
    if (cfp / "images").is_dir():
        payload["cfp_dev"] = cfp_run(cfp)
    print(f"wrote {write_json('people.json', payload, args.out)}")


if __name__ == "__main__":
    main()
