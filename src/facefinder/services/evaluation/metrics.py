"""Accuracy figures computed from scores: pure numpy, no model and no file.

Shared by `facefinder evaluate` and benchmarks/accuracy.py, so that the LFW figures in
docs/benchmarks.md and the ones an operator measures on their own photos are the same computation,
and so that each function can be tested on synthetic scores with exact expected values.

A photo where no face was found is a miss, never skipped: every pair it is in scores ``MISS``, a
mated probe without a face is not found at any rank, and a non-mated one raises no alarm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MISS = -1.0  # the score of any pair with a photo in which no face was found


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so that a dot product is a cosine."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# ----- verification: pairs --------------------------------------------------------------------------------
def best_threshold(scores: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> float:
    """The threshold of ``thresholds`` (ascending) that classifies the most pairs right (score >= it
    means same person); the lowest of equally good ones. Counted by sorting, not by trying each one."""
    mated, non_mated = np.sort(scores[same]), np.sort(scores[~same])
    correct = len(mated) - np.searchsorted(mated, thresholds, "left") + np.searchsorted(non_mated, thresholds, "left")
    return float(thresholds[int(np.argmax(correct))])


def fold_accuracy(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> list[float]:
    """LFW's protocol: for each fold, the threshold that does best on the other folds (scores rounded to
    4 decimals are the candidates), and the share of this fold's pairs it classifies right."""
    thresholds = np.unique(np.round(scores, 4))
    accuracies = []
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        best = best_threshold(scores[train], same[train], thresholds)
        accuracies.append(float(((scores[test] >= best) == same[test]).mean()))
    return accuracies


@dataclass
class TarAtFmr:
    """The share of mated pairs accepted at the threshold where ``fmr`` of the impostor pairs would be.

    ``tar`` and ``threshold`` are None when there are too few impostor pairs to measure that rate
    (fewer than 1 / fmr): a threshold above every impostor seen says nothing about one in 10,000."""

    fmr: float
    tar: float | None
    threshold: float | None
    impostor_pairs: int
    needed: int  # impostor pairs needed to measure this rate

    def to_dict(self) -> dict:
        return asdict(self)


def tar_at_fmr(genuine: np.ndarray, impostor: np.ndarray, fmr: float) -> TarAtFmr:
    """TAR at ``fmr``: the threshold lets at most floor(fmr x impostors) impostors score above it, and
    the TAR is the share of mated pairs that score above it (a mated pair with a miss never does)."""
    ordered = np.sort(impostor)[::-1]
    allowed = int(np.floor(fmr * len(ordered)))
    needed = int(np.ceil(1 / fmr - 1e-9))
    if allowed < 1 or allowed >= len(ordered):
        return TarAtFmr(fmr, None, None, int(len(ordered)), needed)
    threshold = float(ordered[allowed])
    return TarAtFmr(fmr, float((genuine > threshold).mean()), threshold, int(len(ordered)), needed)


def roc_points(genuine: np.ndarray, impostor: np.ndarray, points: int = 200) -> dict[str, list[float]]:
    """The ROC (TAR against FMR) at log-spaced false match rates from 1 / impostors to 1, for plotting."""
    if len(impostor) == 0 or len(genuine) == 0:
        return {"fmr": [], "tar": []}
    ordered_impostor, ordered_genuine = np.sort(impostor)[::-1], np.sort(genuine)
    rates = np.unique(np.geomspace(1 / len(ordered_impostor), 1.0, points))
    allowed = np.minimum(np.floor(rates * len(ordered_impostor)).astype(int), len(ordered_impostor) - 1)
    thresholds = ordered_impostor[allowed]
    tar = (len(ordered_genuine) - np.searchsorted(ordered_genuine, thresholds, "right")) / len(ordered_genuine)
    return {"fmr": rates.tolist(), "tar": tar.tolist()}


def make_pairs(people: np.ndarray, seed: int = 0, folds: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verification pairs for a labelled set: every mated pair, as many random non-mated ones (seeded),
    each class dealt evenly into ``folds`` folds at random. Returns (pairs as an n x 2 index array,
    same, fold); the folds are fewer when there are fewer mated pairs than folds.

    Unlike LFW's View 2 the folds are not split by person: with one parameter (the threshold) learnt
    on the other folds, the difference is small, and a small labelled set could not fill ten
    person-disjoint folds."""
    people = np.asarray(people)
    rng = np.random.default_rng(seed)
    mated = _mated_pairs(people)
    non_mated = _non_mated_pairs(people, len(mated), rng)
    pairs = np.concatenate([mated, non_mated]).reshape(-1, 2)
    same = np.arange(len(pairs)) < len(mated)
    folds = max(1, min(folds, len(mated)))
    fold = np.concatenate([rng.permutation(len(mated)) % folds, rng.permutation(len(non_mated)) % folds])
    return pairs.astype(np.int64), same, fold.astype(np.int64)


def _mated_pairs(people: np.ndarray) -> np.ndarray:
    """Every (i, j), i < j, of two photos of the same person, in photo order."""
    order = np.argsort(people, kind="stable")  # each person's photos together, in photo order
    ordered = people[order]
    bounds = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    found = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        members = order[start:end]
        i, j = np.triu_indices(len(members), k=1)
        found.append(np.stack([members[i], members[j]], axis=1))
    pairs = np.concatenate(found) if found else np.empty((0, 2), np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _non_mated_pairs(people: np.ndarray, wanted: int, rng: np.random.Generator) -> np.ndarray:
    """``wanted`` distinct random (i, j), i < j, of two different people (all of them if there are fewer)."""
    n = len(people)
    available = n * (n - 1) // 2 - sum(c * (c - 1) // 2 for c in np.unique(people, return_counts=True)[1])
    if wanted >= available:
        i, j = np.triu_indices(n, k=1)
        keep = people[i] != people[j]
        return np.stack([i[keep], j[keep]], axis=1)
    codes = np.empty(0, np.int64)
    while len(codes) < wanted:
        i, j = rng.integers(0, n, size=(2, 2 * (wanted - len(codes)) + 16))
        keep = people[i] != people[j]
        drawn = np.minimum(i, j)[keep] * n + np.maximum(i, j)[keep]
        merged = np.concatenate([codes, drawn])
        _, first = np.unique(merged, return_index=True)
        codes = merged[np.sort(first)]  # distinct, in the order drawn
    codes = codes[:wanted]
    return np.stack([codes // n, codes % n], axis=1)


def pair_scores(emb: np.ndarray, found: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The cosine score of each pair (rows of unit embeddings); ``MISS`` where a photo has no face."""
    a, b = pairs[:, 0], pairs[:, 1]
    return np.where(found[a] & found[b], (emb[a] * emb[b]).sum(axis=1), MISS)


def all_pair_scores(
    emb: np.ndarray, found: np.ndarray, people: np.ndarray, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of photos once: (mated scores, ``MISS`` where a face is missing; non-mated scores of
    pairs of found faces only, float32), in blocks so that no n x n matrix is held."""
    people = np.asarray(people)
    mated = _mated_pairs(people)
    genuine = pair_scores(emb, found, mated)
    chunks = []
    for start in range(0, len(people), block):
        rows = np.arange(start, min(start + block, len(people)))
        sims = emb[rows] @ emb[start:].T
        upper = np.arange(start, len(people))[None, :] > rows[:, None]
        keep = upper & (people[rows][:, None] != people[start:][None, :])
        keep &= found[rows][:, None] & found[start:][None, :]
        chunks.append(sims[keep].astype(np.float32))
    impostor = np.concatenate(chunks) if chunks else np.empty(0, np.float32)
    return genuine, impostor


# ----- identification: 1:N ---------------------------------------------------------------------------------
def fpir_threshold(top_non_mated: np.ndarray, fpir: float) -> tuple[float, bool]:
    """The threshold above which ``fpir`` of non-mated searches return any candidate, from each one's
    top score; and whether it was measured (False when fewer than 1 / fpir non-mated searches)."""
    ordered = np.sort(top_non_mated)[::-1]
    at = int(np.floor(fpir * len(ordered)))
    return float(ordered[min(at, len(ordered) - 1)]), 1 <= at < len(ordered)


@dataclass
class Identification:
    """1:N figures: closed set (everyone enrolled) and open set (half the people left out)."""

    closed_set: dict | None  # gallery, distractors, probes, rank1, rank10; None without a person of 2+ photos
    open_set: dict | None  # gallery, mated/non-mated probes, fpir, threshold, fnir, measured; None without 2 such
    impostor: np.ndarray  # closed-set scores of every probe against every other person's gallery face


def identification(
    people: np.ndarray,
    emb: np.ndarray,
    found: np.ndarray,
    distractors: np.ndarray | None = None,
    fpir: float = 0.01,
) -> Identification:
    """Gallery = each person's first photo (in the arrays' order) plus ``distractors`` (faces of nobody
    labelled); probes = every other photo of a person with two or more. Rank-1 / rank-10: the mate
    outscores all but 0 / 9 gallery faces. Open set: every other person with two or more photos (by
    sorted name) is left out of the gallery, and all their photos become non-mated probes; FNIR is the
    share of mated probes whose top candidate is not their mate or does not score above the threshold
    at which ``fpir`` of the non-mated probes would get a candidate."""
    people = np.asarray(people)
    extra = np.zeros((0, emb.shape[1]), emb.dtype) if distractors is None else distractors
    first: dict[str, int] = {}
    for i, person in enumerate(people.tolist()):
        first.setdefault(person, i)
    names, counts = np.unique(people, return_counts=True)
    multi = sorted(p for p, c in zip(names.tolist(), counts) if c >= 2)
    gallery = np.array(sorted(first.values()), dtype=np.int64)
    enrolled_twice = set(multi)
    probes = np.array([i for i, p in enumerate(people.tolist()) if p in enrolled_twice and first[p] != i], np.int64)
    if len(probes) == 0:
        return Identification(None, None, np.empty(0, np.float32))
    closed, impostor = _closed_set(people, emb, found, gallery, probes, extra)
    held_out = set(multi[1::2])
    open_set = _open_set(people, emb, found, gallery, probes, extra, held_out, fpir) if held_out else None
    return Identification(closed, open_set, impostor)


def _scores(emb, found, probes, gallery, extra) -> np.ndarray:
    """Probe x gallery (+ distractor) cosines, ``MISS`` for a probe or gallery photo without a face."""
    sims = emb[probes] @ np.concatenate([emb[gallery], extra]).T
    sims[~found[probes]] = MISS
    sims[:, : len(gallery)][:, ~found[gallery]] = MISS
    return sims


def _closed_set(people, emb, found, gallery, probes, extra) -> tuple[dict, np.ndarray]:
    sims = _scores(emb, found, probes, gallery, extra)
    mate = np.zeros(sims.shape, bool)
    mate[:, : len(gallery)] = people[probes][:, None] == people[gallery][None, :]
    mate_score = np.where(mate, sims, -np.inf).max(axis=1)
    better = (sims > mate_score[:, None]).sum(axis=1)
    mate_found = (mate[:, : len(gallery)] & found[gallery][None, :]).any(axis=1)
    better = np.where(found[probes] & mate_found, better, np.iinfo(np.int64).max)  # a miss is found at no rank
    rows_found = found[probes][:, None] & np.concatenate([found[gallery], np.ones(len(extra), bool)])[None, :]
    closed = {
        "gallery": int(len(gallery)),
        "distractors": int(len(extra)),
        "probes": int(len(probes)),
        "rank1": float((better == 0).mean()),
        "rank10": float((better < 10).mean()),
    }
    return closed, sims[~mate & rows_found]


def _open_set(people, emb, found, gallery, probes, extra, held_out, fpir) -> dict:
    g_open = gallery[~np.isin(people[gallery], list(held_out))]
    mated = probes[~np.isin(people[probes], list(held_out))]
    non_mated = np.flatnonzero(np.isin(people, list(held_out)))
    s_mated = _scores(emb, found, mated, g_open, extra)
    s_non = _scores(emb, found, non_mated, g_open, extra)
    threshold, measured = fpir_threshold(s_non.max(axis=1), fpir)
    mate = np.zeros(s_mated.shape, bool)
    mate[:, : len(g_open)] = people[mated][:, None] == people[g_open][None, :]
    hit = mate[np.arange(len(mated)), s_mated.argmax(axis=1)] & (s_mated.max(axis=1) > threshold)
    return {
        "gallery": int(len(g_open)),
        "distractors": int(len(extra)),
        "mated_probes": int(len(mated)),
        "non_mated_probes": int(len(non_mated)),
        "fpir": fpir,
        "threshold": threshold,
        "fpir_measured": measured,
        "fnir": float(1 - hit.mean()),
    }
