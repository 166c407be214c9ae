"""False match rates by demographic group, as NIST's demographic reports measure them (FRVT Part 3).

A search threshold is one number for everyone, but how often two different people score above it
differs between groups of people: this measures it within each group and across groups, on photos
labelled by group. The labels come from the file names of UTKFace (``AGE_GENDER_GROUP_DATE.jpg.chip.jpg``,
GENDER 0 male / 1 female, GROUP 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others), which are the data
set authors' estimates, not the people's own. UTKFace has no identities: every pair is taken to be two
different people (a few repeats of one person may be among them, so the ``highest_pairs`` are listed for
a person to check), and false non-match rates cannot be measured.

A photo with no face found cannot make a false match: it is counted per group and left out of the pairs.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from facefinder.errors import FaceFinderError
from facefinder.services.evaluation.run import EXAMPLES, Progress, embed_photos, flat_photos
from facefinder.vision.pipeline import FacePipeline

SCHEMES = ("utkface",)
GENDERS = ("male", "female")
GROUPS = ("White", "Black", "Asian", "Indian", "Others")  # UTKFace's own names for its labels
UTKFACE_NAME = re.compile(r"^(\d+)_([01])_([0-4])[_.]")
# Each group's score at these FMRs: measurable with a few hundred photos, unlike the threshold's, and (at 1e-2)
# little moved by the few repeats of one person that a set without identities holds.
TAIL_FMRS = (1e-2, 1e-3)
HIGHEST = 20  # the highest-scoring pairs listed for a person to check
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def utkface_group(name: str) -> int | None:
    """The cell (gender x 5 + group) of a UTKFace file name, or None when the name carries no labels."""
    match = UTKFACE_NAME.match(name)
    return None if match is None else int(match.group(2)) * len(GROUPS) + int(match.group(3))


def cell_name(cell: int) -> tuple[str, str]:
    return GENDERS[cell // len(GROUPS)], GROUPS[cell % len(GROUPS)]


def wilson_upper(errors: int, trials: int) -> float | None:
    """The upper end of the 95% Wilson interval of a rate: with 0 false matches in n pairs, about 3.8 / n."""
    if trials == 0:
        return None
    p, z2 = errors / trials, Z95**2
    centre = p + z2 / (2 * trials)
    spread = Z95 * np.sqrt(p * (1 - p) / trials + z2 / (4 * trials**2))
    return float((centre + spread) / (1 + z2 / trials))


def _rate(pairs: int, false_matches: int) -> dict:
    return {
        "pairs": int(pairs),
        "false_matches": int(false_matches),
        "fmr": false_matches / pairs if pairs else None,
        "fmr_upper_95": wilson_upper(int(false_matches), int(pairs)),
    }


def group_rates(emb: np.ndarray, cells: np.ndarray, threshold: float, block: int = 256) -> dict:
    """Every pair of faces once, counted by the cells of its two faces: pairs and false matches (score >=
    ``threshold``) as cells x cells matrices (upper triangle), each cell's own scores, the highest pairs."""
    n_cells = len(GENDERS) * len(GROUPS)
    pairs = np.zeros(n_cells * n_cells, np.int64)
    matches = np.zeros(n_cells * n_cells, np.int64)
    within: list[list[np.ndarray]] = [[] for _ in range(n_cells)]
    top: list[tuple[float, int, int]] = []
    for start in range(0, len(emb), block):
        rows = np.arange(start, min(start + block, len(emb)))
        sims = emb[rows] @ emb[start:].T
        i, j = np.nonzero(np.arange(start, len(emb))[None, :] > rows[:, None])
        scores, a, b = sims[i, j], rows[i], start + j
        low, high = np.minimum(cells[a], cells[b]), np.maximum(cells[a], cells[b])
        code = low * n_cells + high
        pairs += np.bincount(code, minlength=n_cells * n_cells)
        matches += np.bincount(code[scores >= threshold], minlength=n_cells * n_cells)
        same = cells[a] == cells[b]
        for cell in np.unique(cells[a][same]):
            within[cell].append(scores[same & (cells[a] == cell)])
        best = np.argpartition(-scores, HIGHEST)[:HIGHEST] if len(scores) > HIGHEST else np.arange(len(scores))
        top = sorted(top + [(float(scores[k]), int(a[k]), int(b[k])) for k in best], reverse=True)[:HIGHEST]
    return {
        "pairs": pairs.reshape(n_cells, n_cells),
        "false_matches": matches.reshape(n_cells, n_cells),
        "within": [np.concatenate(w) if w else np.empty(0) for w in within],
        "top": top,
    }


def _score_at(scores: np.ndarray, fmr: float) -> float | None:
    """The score that floor(fmr x pairs) of ``scores`` exceed; None when that is less than one pair."""
    at = int(np.floor(fmr * len(scores)))
    return float(np.sort(scores)[::-1][at]) if 1 <= at < len(scores) else None


def evaluate_demographics(
    folder: Path,
    pipeline: FacePipeline,
    threshold: float,
    threshold_source: str,
    scheme: str = "utkface",
    on_progress: Progress | None = None,
) -> dict:
    """FMR at ``threshold`` within each gender x group cell, across cells and over all pairs, on a flat
    folder of photos labelled by their UTKFace names."""
    if scheme not in SCHEMES:
        raise FaceFinderError(f"--demographics {scheme!r}: known schemes are {', '.join(SCHEMES)}")
    photos, copies = _distinct(flat_photos(folder))
    labelled = [(p, cell) for p in photos if (cell := utkface_group(p.name)) is not None]
    unlabelled = [os.path.relpath(p, folder) for p in photos if utkface_group(p.name) is None]
    if not labelled:
        raise FaceFinderError(f"{folder}: no photo is named AGE_GENDER_GROUP_DATE.jpg... (UTKFace)")
    paths = [p for p, _ in labelled]
    cells = np.array([cell for _, cell in labelled])
    embedded = embed_photos(pipeline, paths, on_progress=on_progress)
    found = embedded.found
    kept = np.flatnonzero(found)  # the photos whose faces are paired
    counted = group_rates(embedded.vectors[found], cells[found], threshold)
    result = {
        "folder": str(folder),
        "model_id": pipeline.model_id,
        "scheme": scheme,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "photos": len(photos) + len(copies),
        "identical_copies": len(copies),
        "identical_copies_examples": [
            {"copy": os.path.relpath(c, folder), "of": os.path.relpath(o, folder)} for c, o in copies[:EXAMPLES]
        ],
        "labelled": len(labelled),
        "unlabelled": len(unlabelled),
        "unlabelled_examples": unlabelled[:EXAMPLES],
        "faces_found": int(found.sum()),
        "no_face": len(embedded.no_face),
        "unreadable": len(embedded.unreadable),
        "no_face_examples": [os.path.relpath(p, folder) for p in embedded.no_face[:EXAMPLES]],
        **_summaries(counted, cells, found),
        "highest_pairs": [
            {"a": paths[kept[a]].name, "b": paths[kept[b]].name, "score": s} for s, a, b in counted["top"]
        ],
    }
    result["notes"] = _notes(result)
    return result


def _distinct(photos: list[Path]) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """The photos without byte-identical copies (the first of each kept), and (copy, photo kept) for each
    left out: a photo paired with its own copy is no false match, whatever its labels say."""
    kept: dict[str, Path] = {}
    copies = []
    for photo in photos:
        digest = hashlib.sha256(photo.read_bytes()).hexdigest()
        if digest in kept:
            copies.append((photo, kept[digest]))
        else:
            kept[digest] = photo
    return list(kept.values()), copies


def _summaries(counted: dict, cells: np.ndarray, found: np.ndarray) -> dict:
    """The per-cell table, within / across / all pairs, and the cell x cell matrices."""
    pairs, matches = counted["pairs"], counted["false_matches"]
    overall = _rate(pairs.sum(), matches.sum())
    groups = []
    for cell in range(len(pairs)):
        gender, group = cell_name(cell)
        rate = _rate(pairs[cell, cell], matches[cell, cell])
        ratio = rate["fmr"] / overall["fmr"] if rate["fmr"] is not None and overall["fmr"] else None
        groups.append(
            {
                "gender": gender,
                "group": group,
                "photos": int((cells == cell).sum()),
                "faces": int(((cells == cell) & found).sum()),
                **rate,
                "fmr_ratio_to_all": ratio,
                **{f"score_at_fmr_{fmr:g}": _score_at(counted["within"][cell], fmr) for fmr in TAIL_FMRS},
            }
        )
    diagonal = np.diag(pairs).sum(), np.diag(matches).sum()
    return {
        "groups": groups,
        "within_groups": _rate(*diagonal),
        "across_groups": _rate(pairs.sum() - diagonal[0], matches.sum() - diagonal[1]),
        "all_pairs": overall,
        "cells": [" ".join(cell_name(c)) for c in range(len(pairs))],
        "pairs_matrix": pairs.tolist(),
        "false_matches_matrix": matches.tolist(),
    }


def _notes(result: dict) -> list[str]:
    """What the table does not show."""
    notes = [
        "group labels are the data set authors' estimates, not self-identification",
        "no identities: every pair is counted as two different people (check highest_pairs for repeats of one "
        "person), and false non-match rates cannot be measured",
        "fmr_upper_95: the upper end of the 95% Wilson interval; with few false matches the rate itself is noise",
    ]
    if result["identical_copies"]:
        notes.append(f"{result['identical_copies']} byte-identical copies of other photos were left out")
    if result["no_face"] or result["unreadable"]:
        notes.append(
            f"{result['no_face']} photos with no face found and {result['unreadable']} unreadable: they cannot "
            "make a false match and are left out of the pairs"
        )
    return notes
