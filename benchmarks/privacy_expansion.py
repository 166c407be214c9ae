"""Erasure and opt-out that reach the whole person, on LFW: how many of a person's faces the expanded
list holds, and how many of the listed faces are someone else's, against the strict-only list.

Every LFW photo's face is held (one gallery of 13,2xx faces, as benchmarks/people.py builds it); each
of the 62 identities with at least 20 photos asks with one probe photo (their first). The probe's own
held face counts on neither side. Reported, per rule:

* **recall**: of the person's other held faces, the share listed (mean over the 62 people, and
  pooled over all their faces, where George W Bush's 529 weigh most);
* **listed wrong**: of the faces listed, the share filed under another name (pooled; LFW's own
  labelling errors count as wrong here, see docs/privacy.md);
* the baseline: the strict matches alone (``delete person`` and ``optout add`` without ``--expand``).

Steps:

1. ``sweep``: the rule of services/privacy/expansion.py (``grow``, the very same code) over arrays:
   neighbours from one exact FAISS range search, people from the clustering of services/people/graph.py
   with its default settings, over link threshold, support, strong link and person support.
2. ``service``: the chosen rule (``ExpansionRule()``) end to end through ``expansion.expand`` on a real
   SQLite catalog and FAISS index, people clustered by ``ff.people.cluster``; timed per request.
3. ``optout``: re-ingest. Each person's photos other than the probe are split in two, one half held,
   the other arriving later; the share of the later half screened by the probe's template alone, and
   by the probe plus the confirmed faces of the expanded list (the ones that are truly theirs, as a
   reviewer would keep); and the share of other people's faces each opt-out then screens.

Embeddings: benchmarks/results/lfw_embeddings.npz (benchmarks/people.py makes it if missing).

    .venv/bin/python benchmarks/privacy_expansion.py [--lfw ../shared/data/lfw] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from _common import machine, models_dir, table, write_json
from people import DEFAULT_LFW, fill, knn, labels_of, load_faces

from facefinder.services.calibration import default_calibration
from facefinder.services.people import graph
from facefinder.services.people.clustering import ClusterSettings
from facefinder.services.privacy.expansion import ExpansionRule, grow

MIN_PHOTOS = 20
TARGETS = {"recall": 0.95, "listed_wrong": 0.01}
THRESHOLD = default_calibration().privacy_threshold


class Arrays:
    """``grow``'s callables over the LFW arrays: range-search neighbours, clustered people; faces in
    ``hidden`` (not held) are left out of both."""

    def __init__(self, vectors: np.ndarray, low: float, person: np.ndarray) -> None:
        import faiss

        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        self.lims, self.scores, self.ids = index.range_search(vectors, low)
        self.person = person  # face -> person id, -1 unassigned
        self.faces_of: dict[int, list[int]] = defaultdict(list)
        for face, p in enumerate(person.tolist()):
            if p >= 0:
                self.faces_of[p].append(face)
        self.hidden: set[int] = set()

    def neighbours(self, faces: list[int]) -> dict[int, list[tuple[int, float]]]:
        out = {}
        for f in faces:
            a, b = self.lims[f], self.lims[f + 1]
            out[f] = [
                (int(g), float(s))
                for g, s in zip(self.ids[a:b], self.scores[a:b])
                if g != f and int(g) not in self.hidden
            ]
        return out

    def people_of(self, faces: list[int]) -> dict[int, int]:
        return {f: int(self.person[f]) for f in faces if self.person[f] >= 0}

    def members(self, people: list[int]) -> dict[int, list[int]]:
        return {p: [f for f in self.faces_of[p] if f not in self.hidden] for p in people}


def cluster(vectors: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Each face's person under the default clustering settings (as benchmarks/people.py groups them)."""
    s = ClusterSettings()
    ids, sims = knn(vectors, s.neighbours)
    eligible = quality >= s.quality_floor
    nbr = np.where(eligible[ids], ids, -1)
    faces = np.flatnonzero(eligible)
    lists = graph.neighbour_lists(faces, nbr[faces], sims[faces], s.threshold)
    lists = {face: found[: s.neighbours] for face, found in lists.items()}
    grouping = graph.group(faces.tolist(), lists, {}, s.method, s.support, s.min_size)
    labels = labels_of(len(vectors), grouping)
    return np.where(labels >= 1_000_000, -1, labels)


def requests(truth: list[str]) -> list[tuple[str, int, list[int]]]:
    """(identity, probe face, the identity's other faces) for each identity with >= MIN_PHOTOS faces."""
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(truth):
        by_name[name].append(i)
    return [(n, faces[0], faces[1:]) for n, faces in sorted(by_name.items()) if len(faces) >= MIN_PHOTOS]


def direct(vectors: np.ndarray, probe: int, hidden: set[int]) -> dict[int, float]:
    scores = vectors @ vectors[probe]
    return {int(f): float(scores[f]) for f in np.flatnonzero(scores >= THRESHOLD) if int(f) not in hidden}


def score(lists: list[tuple[set[int], int, list[int]]]) -> dict:
    """Recall (mean over people, pooled) and the pooled share of listed faces that are someone else's."""
    recalls, found, total, wrong, listed = [], 0, 0, 0, 0
    for got, probe, own in lists:
        got = got - {probe}
        hits = len(got & set(own))
        recalls.append(hits / len(own))
        found, total, wrong, listed = found + hits, total + len(own), wrong + len(got) - hits, listed + len(got)
    return {
        "recall": round(float(np.mean(recalls)), 4),
        "recall_pooled": round(found / total, 4),
        "recall_min": round(float(np.min(recalls)), 4),
        "listed_wrong": round(wrong / max(listed, 1), 4),
        "wrong_faces": wrong,
        "listed_faces": listed,
    }


def run_rule(arrays: Arrays, vectors, asks, rule: ExpansionRule | None) -> dict:
    started, lists = time.perf_counter(), []
    for _, probe, own in asks:
        first = direct(vectors, probe, set())
        got = set(first) if rule is None else set(grow(first, arrays.neighbours, arrays.people_of, arrays.members,
                                                        rule, THRESHOLD if rule.link is None else rule.link))  # fmt: skip
        lists.append((got, probe, own))
    return {**score(lists), "seconds": round(time.perf_counter() - started, 2)}


def sweep(arrays: Arrays, vectors, asks, quick: bool) -> list[dict]:
    """Link threshold x support x support share x strong link (people on), then people off and stricter."""
    links = [None, 0.66] if quick else [None, 0.66, 0.64]
    shares = (0.0, 0.02) if quick else (0.0, 0.01, 0.02, 0.05)
    grid = [
        ExpansionRule(link, support, share, strong)
        for link, support, share, strong in itertools.product(links, (1, 2, 3), shares, (0.80, 1.01))
    ]
    grid += [replace(ExpansionRule(), person_support=n) for n in (0, 3)]
    rows = []
    for rule in grid:
        result = run_rule(arrays, vectors, asks, rule)
        rows.append({**asdict(rule), **result})
        print(f"  {rule}: {result}", flush=True)
    return rows


def service_run(truth, names, vectors, quality, asks) -> dict:
    """The default rule through the service on a real catalog and index, people clustered."""
    from facefinder import FaceFinder
    from facefinder.services.privacy.expansion import expand

    policy = {"purpose": "benchmark", "legal_basis": "LFW research benchmark", "retention_days": 1}
    with (
        tempfile.TemporaryDirectory() as folder,
        FaceFinder(folder, models_dir=models_dir(None), workers=0, actor="benchmark") as ff,
    ):
        ff.create_collection("lfw", **policy)
        fill(ff, "lfw", names, vectors, quality, np.arange(len(names)))
        ff.people.cluster("lfw", full=True)
        row_of = {name: i for i, name in enumerate(names)}
        times, lists, reasons = [], [], defaultdict(int)
        for _, probe, own in asks:
            started = time.perf_counter()
            listed = expand(ff.privacy, vectors[probe], ["lfw"])
            times.append(time.perf_counter() - started)
            lists.append(({row_of[m.source] for m in listed}, probe, own))
            for m in listed:
                reasons[m.reason] += 1
    return {**score(lists), "reasons": dict(reasons), "seconds_per_request_mean": round(float(np.mean(times)), 3),
            "seconds_per_request_max": round(float(np.max(times)), 3)}  # fmt: skip


def optout_effect(arrays: Arrays, vectors, truth, asks, rule: ExpansionRule) -> dict:
    """Held-out photos screened by one template vs the expanded templates, and others' faces screened."""
    labels = np.array(truth)
    caught_one = caught_many = later_total = 0
    others_one = others_many = others_total = 0
    templates_mean = []
    for name, probe, own in asks:
        later = own[1::2]  # the other half, own[0::2], stays held
        arrays.hidden = set(later)
        first = direct(vectors, probe, arrays.hidden)
        link = THRESHOLD if rule.link is None else rule.link
        listed = grow(first, arrays.neighbours, arrays.people_of, arrays.members, rule, link)
        confirmed = [f for f in listed if labels[f] == name]
        templates = vectors[[probe, *[f for f in confirmed if f != probe]]]
        templates_mean.append(len(templates))
        one = (vectors[later] @ vectors[probe]) >= THRESHOLD
        many = (vectors[later] @ templates.T).max(axis=1) >= THRESHOLD
        caught_one, caught_many, later_total = (
            caught_one + one.sum(),
            caught_many + many.sum(),
            later_total + len(later),
        )
        others = np.flatnonzero(labels != name)
        others_one += int(((vectors[others] @ vectors[probe]) >= THRESHOLD).sum())
        others_many += int(((vectors[others] @ templates.T).max(axis=1) >= THRESHOLD).sum())
        others_total += len(others)
    arrays.hidden = set()
    return {
        "later_photos": later_total,
        "screened_one_template": round(caught_one / later_total, 4),
        "screened_expanded_templates": round(caught_many / later_total, 4),
        "templates_mean": round(float(np.mean(templates_mean)), 1),
        "others_screened_one_template": round(others_one / others_total, 7),
        "others_screened_expanded_templates": round(others_many / others_total, 7),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smaller sweep")
    parser.add_argument("--out", help="result file [default: benchmarks/results/privacy_expansion.json]")
    args = parser.parse_args()
    if not (args.lfw / "images").is_dir():
        sys.exit(f"LFW not found at {args.lfw} (expected images/); pass --lfw DIR")
    info = machine()
    info["memory_gib"] = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    truth, vectors, quality, names = load_faces(args.lfw, args.workers)
    asks = requests(truth)
    print(f"{len(truth)} faces; {len(asks)} people with >= {MIN_PHOTOS} photos; threshold {THRESHOLD}", flush=True)
    arrays = Arrays(vectors, 0.60, cluster(vectors, quality))
    baseline = run_rule(arrays, vectors, asks, None)
    print(f"strict only: {baseline}", flush=True)
    rows = sweep(arrays, vectors, asks, args.quick)
    chosen = ExpansionRule()
    chosen_row = run_rule(arrays, vectors, asks, chosen)
    print(f"chosen {chosen}: {chosen_row}\nend to end ...", flush=True)
    service = service_run(truth, names, vectors, quality, asks)
    print(f"service: {service}", flush=True)
    optout = optout_effect(arrays, vectors, truth, asks, chosen)
    print(f"opt-out re-ingest: {optout}", flush=True)
    headers = ("link", "support", "support_share", "strong", "person_support", "recall", "recall_pooled",
               "listed_wrong", "seconds")  # fmt: skip
    print(table([tuple(r[h] for h in headers) for r in rows], headers))
    payload = {
        "machine": info,
        "faces": len(truth),
        "people": len(asks),
        "threshold": THRESHOLD,
        "targets": TARGETS,
        "baseline_strict": baseline,
        "sweep": rows,
        "chosen": {**asdict(chosen), **chosen_row},
        "service": service,
        "optout_reingest": optout,
        "meets_targets": service["recall"] >= TARGETS["recall"] and service["listed_wrong"] <= TARGETS["listed_wrong"],
    }
    print(f"wrote {write_json('privacy_expansion.json', payload, args.out)}")


if __name__ == "__main__":
    main()
