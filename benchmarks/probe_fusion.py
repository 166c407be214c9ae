"""Several photos of one person, one search: fusing probes on cfp-dev (issue 12, services/fusion.py).

The gallery is every frontal cfp-dev photo but one per person (2,250 photos of 250 people); the probes
are the held-out frontal photo and the four profile photos of each person. Rank-1 (the gallery photo
scoring highest shows the probe's person) for:

* each probe alone: the held-out frontal photo, a profile photo;
* a frontal and a profile photo together, and two profile photos together, fused three ways: the
  normalised mean of the embeddings, the mean of the two scores (the same ranking: the mean score is
  the template's cosine times |e1 + e2| / 2, which is how services/fusion.py scores it), and the
  larger of the two scores.

Embeddings: benchmarks/results/cfp_embeddings.npz (made by benchmarks/person_search.py, or here).

    .venv/bin/python benchmarks/probe_fusion.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import machine, table, write_json
from person_search import DEFAULT_DATA, cfp_faces


def fused(gallery: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    score_a, score_b = gallery @ a, gallery @ b
    template = (a + b) / np.linalg.norm(a + b)
    return {
        "mean_embedding": gallery @ template,
        "mean_score": (score_a + score_b) / 2,
        "max_score": np.maximum(score_a, score_b),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (args.data / "cfp-dev" / "images").is_dir():
        sys.exit(f"cfp-dev not found under {args.data}: pass --data (the folder holding cfp-dev/)")
    names, vectors, _, found = cfp_faces(args.data / "cfp-dev", args.workers)
    person = np.array([n.split("/")[0] for n in names])
    pose = np.array([n.split("/")[1] for n in names])
    last = {n.split("/")[0]: n for n in names if n.split("/")[1] == "frontal"}
    held = np.array([last[p] == n for p, n in zip(person, names)])
    rows = np.flatnonzero(found & (pose == "frontal") & ~held)
    gallery, who = vectors[rows], person[rows]
    hits: dict[str, list[bool]] = {}

    def note(kind: str, scores: np.ndarray, want: str) -> None:
        hits.setdefault(kind, []).append(bool(who[int(np.argmax(scores))] == want))

    for name in np.unique(person):
        frontal = np.flatnonzero((person == name) & held & found)
        profiles = np.flatnonzero((person == name) & (pose == "profile") & found)
        for profile in profiles:
            note("profile alone", gallery @ vectors[profile], name)
            if len(frontal):
                note("frontal alone", gallery @ vectors[frontal[0]], name)
                for how, scores in fused(gallery, vectors[frontal[0]], vectors[profile]).items():
                    note(f"frontal + profile: {how}", scores, name)
        for first, second in zip(profiles[:-1], profiles[1:]):
            for how, scores in fused(gallery, vectors[first], vectors[second]).items():
                note(f"profile + profile: {how}", scores, name)
    results = {
        kind: {"probes": len(found_), "rank1": round(float(np.mean(found_)), 4)} for kind, found_ in hits.items()
    }
    print(table([(kind, r["probes"], r["rank1"]) for kind, r in results.items()], ("probe", "searches", "rank-1")))
    out = write_json("probe_fusion.json", {"machine": machine(), "gallery_photos": len(rows), "results": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
