"""People at scale: clustering 1M faces, and assigning a 1,000-photo ingest to the people already there.

The gallery is every LFW face (benchmarks/results/lfw_embeddings.npz, with its quality) among
synthetic face-like vectors up to N, as benchmarks/scale.py builds them (5 samples per synthetic
identity, same-identity cosine ~0.70 +- 0.03, different ~0.00 +- 0.07). The clustering is the
service's (services/people/graph.py with the default ``ClusterSettings``) on k-NN lists from the
index tier the service uses at this size (``VectorIndex``: IVF-PQ + exact re-rank past 250k faces),
queried in batches of 2,048 as ``ClusterRun`` does.

1. **full**: the index built over N - 1,000 faces, every face's k-NN list, the grouping; time and peak
   memory of each step, and the LFW faces' pairwise precision / recall and BCubed F (the synthetic
   ones are distractors here: their identities sit right at the threshold by construction).
2. **incremental**: 1,000 LFW faces held out of step 1 are added to the index and clustered as an
   incremental run does (their lists, the older unassigned faces they meet, the join and the new
   people); time per face.

Not in these figures: the catalog's reads and writes (``ClusterRun`` reads each face's embedding and
writes the assignments in one transaction; at LFW's 13k faces the whole service run took 3.0 s against
1.5 s for the grouping alone, docs/people.md).

    .venv/bin/python benchmarks/people_scale.py [--faces 1000000] [--new 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, write_json
from people import CACHE, DEFAULT_LFW, load_faces, measured, scores
from search_latency import DIM, synthetic

from facefinder.services.people import graph
from facefinder.services.people.clustering import BATCH, ClusterSettings


def build(vectors: np.ndarray, ids: np.ndarray):
    from facefinder.storage.index import VectorIndex, tier_for

    index = VectorIndex(vectors.shape[1], tier=tier_for(len(vectors)))
    index.add(ids, vectors)
    return index


def neighbour_lists(index, ids: np.ndarray, vectors: np.ndarray, quality: dict, settings: ClusterSettings) -> dict:
    """Each face's k nearest at or above the threshold, as ``ClusterRun._neighbour_lists`` keeps them."""
    k, lists = settings.neighbours, {}
    for start in range(0, len(ids), BATCH):
        scores_, found = index.search(vectors[start : start + BATCH], k + 1)
        for face, row_ids, row_scores in zip(ids[start : start + BATCH].tolist(), found.tolist(), scores_.tolist()):
            lists[face] = [
                (n, round(s, 4))
                for n, s in zip(row_ids, row_scores)
                if n >= 0 and n != face and s >= settings.threshold and quality.get(n, 0.0) >= settings.quality_floor
            ][:k]
    return lists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=1_000, help="LFW faces held out for the incremental run")
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    args = parser.parse_args()
    if not CACHE.exists() and not (args.lfw / "images").is_dir():
        sys.exit(f"LFW not found under {args.lfw}: pass --lfw, or run benchmarks/people.py first")
    settings, rng = ClusterSettings(), np.random.default_rng(0)
    truth, real, real_quality, _ = load_faces(args.lfw, 2)
    new_rows = np.sort(rng.choice(len(real), args.new, replace=False))
    old_rows = np.setdiff1d(np.arange(len(real)), new_rows)
    n_old = args.faces - args.new
    vectors = np.empty((n_old, DIM), np.float32)
    vectors[: len(old_rows)] = real[old_rows]
    synthetic(n_old - len(old_rows), rng, out=vectors[len(old_rows) :])
    ids = np.arange(1, n_old + 1, dtype=np.int64)  # face id = row + 1
    quality = dict(zip(ids.tolist(), [float(q) for q in real_quality[old_rows]] + [1.0] * (n_old - len(old_rows))))
    print(f"{n_old:,} faces ({len(old_rows):,} LFW), {os.cpu_count()} cores", flush=True)

    index, build_cost = measured(lambda: build(vectors, ids))
    print(f"  index ({index.tier}) built: {build_cost}", flush=True)
    eligible = np.array([quality[i] >= settings.quality_floor for i in ids.tolist()])
    lists, knn_cost = measured(lambda: neighbour_lists(index, ids[eligible], vectors[eligible], quality, settings))
    print(f"  k-NN lists: {knn_cost}", flush=True)
    faces = ids[eligible].tolist()
    s = settings
    grouping, group_cost = measured(lambda: graph.group(faces, lists, {}, s.method, s.support, s.min_size))
    print(f"  grouping: {group_cost}", flush=True)
    member_of = {face: -person for face, (person, _) in grouping.assigned.items()}  # as stored: ids 1, 2, ...
    real_truth = [truth[r] for r in old_rows]
    labels = np.arange(len(old_rows), dtype=np.int64) + 10_000_000
    for row in range(len(old_rows)):
        if row + 1 in member_of:
            labels[row] = member_of[row + 1]
    full = {
        "faces": n_old,
        "lfw_faces": len(old_rows),
        "tier": index.tier,
        "build": build_cost,
        "knn": knn_cost,
        "grouping": group_cost,
        "seconds_total": round(build_cost["seconds"] + knn_cost["seconds"] + group_cost["seconds"], 1),
        "people": len(grouping.new_people),
        "faces_assigned": len(grouping.assigned),
        "lfw_scores": scores(real_truth, labels),
    }
    print(f"full: {full}", flush=True)
    lists.clear()  # freed before the incremental run

    new_ids = np.arange(n_old + 1, n_old + 1 + args.new, dtype=np.int64)
    quality.update(zip(new_ids.tolist(), [float(q) for q in real_quality[new_rows]]))

    def incremental():
        index.add(new_ids, real[new_rows])
        fresh = neighbour_lists(index, new_ids, real[new_rows], quality, settings)
        older = sorted({n for found in fresh.values() for n, _ in found} - set(fresh) - set(member_of))
        older_lists = (
            neighbour_lists(index, np.array(older, np.int64), vectors[np.array(older, np.int64) - 1], quality, settings)
            if older
            else {}
        )
        fresh |= older_lists
        return graph.group(sorted(fresh), fresh, member_of, s.method, s.support, s.min_size)

    added, add_cost = measured(incremental)
    new_truth, majority = [truth[r] for r in new_rows], _majorities(member_of, old_rows, truth)
    joined_right = sum(
        1
        for face, (person, _) in added.assigned.items()
        if face > n_old and person >= 0 and majority.get(person) == new_truth[face - n_old - 1]
    )
    joined = sum(1 for face, (person, _) in added.assigned.items() if face > n_old and person >= 0)
    result = {
        "machine": machine(),
        "settings": vars(settings),
        "full": full,
        "incremental": {
            "new_faces": args.new,
            **add_cost,
            "ms_per_face": round(add_cost["seconds"] * 1000 / args.new, 2),
            "joined_existing": joined,
            "joined_the_right_identity": joined_right,
            "new_people": len(added.new_people),
        },
    }
    print(f"incremental: {result['incremental']}", flush=True)
    name = "people_scale.json" if args.faces == 1_000_000 else f"people_scale_{args.faces}.json"
    print(f"wrote {write_json(name, result)}")


def _majorities(member_of: dict, old_rows: np.ndarray, truth: list[str]) -> dict[int, str]:
    """person -> the LFW identity most of its LFW faces show (people of synthetic faces only: none)."""
    names: dict[int, list[str]] = {}
    for row in range(len(old_rows)):
        if row + 1 in member_of:
            names.setdefault(member_of[row + 1], []).append(truth[old_rows[row]])
    return {person: max(set(found), key=found.count) for person, found in names.items()}


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"{time.perf_counter() - started:.0f} s in all")
