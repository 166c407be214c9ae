"""Search by person: does a person's fused template find a probe's identity better than single faces?

The gallery is clustered into people exactly as the service does (services/people/graph.py with the
default ``ClusterSettings``). A probe is then searched three ways, as ``services/people/search.py``
does: its nearest ``FACE_HITS`` faces come from the index, and each person one of them belongs to is
scored by

* **face**: its best face among the hits (single-face search, grouped);
* **template**: the cosine to the person's template, the normalised mean of its faces' embeddings;
* **blend**: the mean of the two.

Faces no person holds compete with their own score in every mode. Reported per mode: rank-1 (the
first result's identity is the probe's: for a person, the identity most of its faces show) and, where
non-mated probes exist, FNIR at FPIR 1% (the share of mated probes whose right result is not first at
or above the score that 1% of non-mated probes reach).

* **LFW**: one probe photo for every identity with two or more photos; half of the one-photo identities
  are non-mated probes, the other half stay in the gallery with every other photo.
* **cfp-dev**: a gallery of every frontal photo but one per person; probes: the held-out frontal photo
  and each profile photo (no non-mated probes: every person is in the gallery).

    .venv/bin/python benchmarks/person_search.py [--data ../shared/data] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, RESULTS_DIR, machine, models_dir, table, write_json
from people import _init, knn, load_faces

from facefinder.services.people import graph
from facefinder.services.people.clustering import ClusterSettings

DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
CFP_CACHE = RESULTS_DIR / "cfp_embeddings.npz"
FACE_HITS = 50  # nearest faces the service asks the index for, per probe (services/people/search.py)
MODES = ("face", "template", "blend", "max", "top3")


def cluster(vectors: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Person label per gallery face (-1: unassigned), grouped as the service groups a collection."""
    settings = ClusterSettings()
    k = settings.neighbours
    ids, sims = knn(vectors, k)
    eligible = quality >= settings.quality_floor
    nbr = np.where(eligible[ids], ids, -1)
    faces = np.flatnonzero(eligible)
    lists = graph.neighbour_lists(faces, nbr[faces], sims[faces], settings.threshold)
    lists = {face: found[:k] for face, found in lists.items()}
    grouping = graph.group(faces.tolist(), lists, {}, settings.method, settings.support, settings.min_size)
    labels = np.full(len(vectors), -1, dtype=np.int64)
    for face, (person, _) in grouping.assigned.items():
        labels[face] = -person - 1  # new people have ids -1, -2, ...
    return labels


def templates(vectors: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    out = {}
    for person in np.unique(labels[labels >= 0]):
        mean = vectors[labels == person].mean(axis=0)
        out[int(person)] = mean / np.linalg.norm(mean)
    return out


def ranked(probes, gallery, truth, labels, fused) -> dict[str, list[tuple[float, str]]]:
    """Per mode, per probe: (score, identity) of the first result."""
    import faiss

    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    sims, ids = index.search(probes, FACE_HITS)
    majority = {p: Counter(truth[i] for i in np.flatnonzero(labels == p)).most_common(1)[0][0] for p in fused}
    firsts: dict[str, list[tuple[float, str]]] = {mode: [] for mode in MODES}
    for probe, row_ids, row_sims in zip(probes, ids, sims):
        best_face: dict[object, float] = {}
        for face, score in zip(row_ids.tolist(), row_sims.tolist()):
            key = int(labels[face]) if labels[face] >= 0 else ("face", face)
            best_face[key] = max(best_face.get(key, -1.0), score)
        for mode in MODES:
            scored = []
            for key, face_score in best_face.items():
                if isinstance(key, tuple):
                    scored.append((face_score, truth[key[1]]))
                    continue
                template_score = float(fused[key] @ probe)
                if mode == "top3":
                    score = float(np.sort(gallery[labels == key] @ probe)[-3:].mean())
                else:
                    score = {
                        "face": face_score,
                        "template": template_score,
                        "blend": (face_score + template_score) / 2,
                        "max": max(face_score, template_score),
                    }[mode]
                scored.append((score, majority[key]))
            firsts[mode].append(max(scored))
    return firsts


def measure(name: str, probes, probe_truth, non_mated, gallery, truth, quality) -> dict:
    started = time.perf_counter()
    labels = cluster(gallery, quality)
    clustered = time.perf_counter() - started
    fused = templates(gallery, labels)
    mated = ranked(probes, gallery, truth, labels, fused)
    others = ranked(non_mated, gallery, truth, labels, fused) if len(non_mated) else None
    result = {
        "gallery_faces": len(gallery),
        "people": len(fused),
        "faces_in_people": int((labels >= 0).sum()),
        "mated_probes": len(probes),
        "non_mated_probes": len(non_mated),
        "cluster_seconds": round(clustered, 1),
    }
    for mode in MODES:
        hits = [identity == want for (_, identity), want in zip(mated[mode], probe_truth)]
        result[f"{mode}_rank1"] = round(float(np.mean(hits)), 4)
        if others is not None:
            threshold = float(np.quantile([score for score, _ in others[mode]], 0.99))
            found = [ok and score >= threshold for ok, (score, _) in zip(hits, mated[mode])]
            result[f"{mode}_fnir_at_fpir_1pct"] = round(1 - float(np.mean(found)), 4)
            result[f"{mode}_threshold_fpir_1pct"] = round(threshold, 4)
    print(f"{name}: {result}", flush=True)
    return result


def lfw_protocol(data: Path, workers: int, seed: int = 0) -> dict:
    truth, vectors, quality, _ = load_faces(data / "lfw", workers)
    truth = np.array(truth)
    rng = np.random.default_rng(seed)
    probe_rows, non_mated_rows = [], []
    by_identity: dict[str, list[int]] = {}
    for row, identity in enumerate(truth):
        by_identity.setdefault(identity, []).append(row)
    singles = [rows[0] for rows in by_identity.values() if len(rows) == 1]
    non_mated_rows = sorted(rng.choice(singles, len(singles) // 2, replace=False).tolist())
    probe_rows = [int(rng.choice(rows)) for rows in by_identity.values() if len(rows) > 1]
    held_out = set(probe_rows) | set(non_mated_rows)
    gallery = np.array([r for r in range(len(truth)) if r not in held_out])
    return measure(
        "lfw",
        vectors[probe_rows],
        truth[probe_rows],
        vectors[non_mated_rows],
        vectors[gallery],
        truth[gallery],
        quality[gallery],
    )


def _embed_cfp(paths: list[str]) -> list[tuple]:
    from people import _pipeline  # set by _init in this worker

    from facefinder.vision.image import read_image

    out = []
    for path in paths:
        image = read_image(path)
        faces = _pipeline.analyze([image])[0]
        if not faces:
            out.append((None, 0.0))
            continue
        centre = np.array([image.shape[1] / 2, image.shape[0] / 2])
        face = min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre))
        out.append((face.embedding, face.quality.score))
    return out


def cfp_faces(cfp: Path, workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(names, embeddings, quality, found) of every cfp-dev photo, embedded once and cached."""
    if not CFP_CACHE.exists():
        paths = sorted(str(p) for p in (cfp / "images").glob("*/*/*.jpg"))
        if not paths:
            sys.exit(f"no cfp-dev photos under {cfp / 'images'}: pass --data (the folder holding cfp-dev/)")
        print(f"embedding {len(paths)} cfp-dev photos with {workers} workers ...", flush=True)
        chunks = [paths[i : i + 32] for i in range(0, len(paths), 32)]
        with Pool(workers, initializer=_init, initargs=(str(models_dir(None)),)) as pool:
            results = [r for chunk in pool.imap(_embed_cfp, chunks) for r in chunk]
        dim = next(r[0] for r in results if r[0] is not None).shape[0]
        np.savez(
            CFP_CACHE,
            names=np.array([str(Path(p).relative_to(cfp / "images")) for p in paths]),
            embeddings=np.stack([r[0] if r[0] is not None else np.zeros(dim) for r in results]).astype(np.float32),
            quality=np.array([r[1] for r in results], dtype=np.float32),
        )
    data = np.load(CFP_CACHE)
    vectors = data["embeddings"]
    found = np.linalg.norm(vectors, axis=1) > 0
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.array([str(n) for n in data["names"]]), vectors.astype(np.float32), data["quality"], found


def cfp_protocol(data: Path, workers: int) -> dict:
    names, vectors, quality, found = cfp_faces(data / "cfp-dev", workers)
    person = np.array([n.split("/")[0] for n in names])
    pose = np.array([n.split("/")[1] for n in names])
    last_frontal = {p: n for n in names if n.split("/")[1] == "frontal" for p in [n.split("/")[0]]}
    held = np.array([last_frontal[p] == n for p, n in zip(person, names)])
    gallery = np.flatnonzero(found & (pose == "frontal") & ~held)
    results = {}
    for kind, rows in (
        ("frontal", np.flatnonzero(found & held)),
        ("profile", np.flatnonzero(found & (pose == "profile"))),
    ):
        results[kind] = measure(
            f"cfp-dev {kind}",
            vectors[rows],
            person[rows],
            np.empty((0, vectors.shape[1]), np.float32),
            vectors[gallery],
            person[gallery],
            quality[gallery],
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (args.data / "lfw" / "images").is_dir():
        sys.exit(f"LFW not found under {args.data / 'lfw' / 'images'}: pass --data (the folder holding lfw/)")
    results = {"machine": machine(), "face_hits": FACE_HITS, "lfw": lfw_protocol(args.data, args.workers)}
    results["cfp_dev"] = cfp_protocol(args.data, args.workers)
    rows = [
        [name, mode, r[f"{mode}_rank1"], r.get(f"{mode}_fnir_at_fpir_1pct", "")]
        for name, r in (("lfw", results["lfw"]), *(("cfp-dev " + k, v) for k, v in results["cfp_dev"].items()))
        for mode in MODES
    ]
    print(table(rows, ("set", "mode", "rank-1", "FNIR@FPIR 1%")))
    print(f"wrote {write_json('person_search.json', results)}")


if __name__ == "__main__":
    main()
