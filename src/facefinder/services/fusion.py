"""Several photos of one person, one search: the probes are declared to show the same person, and
each candidate is scored by the mean of its cosines to all of them.

That mean needs no second search: for unit embeddings e_1..e_n and any face x, the mean of
cos(e_i, x) is cos(m, x) * |e_1 + ... + e_n| / n, where m is the normalised sum. So the index is
asked once, with m, and its scores are scaled; the ranking is the template's, and the score stays on
the scale of one comparison (never above the best single probe's), so the calibrated threshold, bands
and false match rates keep their meaning, conservatively. Measured on cfp-dev by
benchmarks/probe_fusion.py (docs/cli.md, `search --same-person`): a frontal and a profile photo
together find the person first for 99.7% (frontal alone 99.6%, profile alone 76.3%); two profile
photos 88.0% (one: 76.1%). Taking the better of the two scores instead found 89.2% of the profile
pairs but lets the worse-matching photo add its own chance matches; the mean was kept.

From each photo its largest face is taken (a probe photo of one person); a photo with no face, or one
that cannot be read, is an error naming it: a fused search never runs on part of what was declared.
A probe on the opt-out list gets nothing back, as in a single search. ``fuse`` is the arithmetic, shared
with the service's case searches (services/server/cases.py, ``same_person``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from facefinder.errors import FaceFinderError, ImageError
from facefinder.services.privacy.optout import screen_for
from facefinder.services.search import ProbeFace, Searcher
from facefinder.services.sources.folders import iter_sources
from facefinder.vision.image import decode_photo

if TYPE_CHECKING:
    from facefinder.storage.catalog import Catalog


def fuse(embeddings: np.ndarray) -> tuple[np.ndarray, float]:
    """The fused template of the rows of ``embeddings`` (one face each, of one person) and the scale of
    its scores: (m, |e_1 + ... + e_n| / n) for the unit rows e_i, as the module docstring says."""
    unit = np.asarray(embeddings, dtype=np.float32)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    total = unit.sum(axis=0)
    norm = float(np.linalg.norm(total))
    return (total / norm)[None, :], norm / len(unit)


def any_opted_out(catalog: Catalog, embeddings: np.ndarray, model_id: str) -> bool:
    """Whether any of the probe faces (rows) is on the opt-out list: the fused search then finds nothing."""
    screen = screen_for(catalog)
    return bool(screen.size(model_id) and np.any(screen.match(embeddings, model_id)))


def search_together(
    searcher: Searcher,
    probes: list[str | os.PathLike],
    collections: list[str] | None = None,
    top_k: int = 10,
    threshold: float | None = None,
) -> Iterator[ProbeFace]:
    """One record for all the probe photos (or folders of them), fused as the module says."""
    collection_ids = searcher.collection_ids(collections)
    threshold = searcher.default_threshold(collection_ids) if threshold is None else threshold
    sources, digests, embeddings = [], [], []
    for probe in probes:
        for item in iter_sources(probe, provenance=False):
            try:
                data = item.read()
                faces = searcher.pipeline.analyze_decoded([decode_photo(data, item.source)])[0]
            except ImageError as exc:
                raise FaceFinderError(f"{item.source}: {exc.reason}") from None
            except OSError as exc:
                raise FaceFinderError(f"{item.source}: unreadable ({exc.strerror or exc})") from None
            if not faces:
                raise FaceFinderError(f"{item.source}: no face found")
            largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            sources.append(item.source)
            digests.append(hashlib.sha256(data).hexdigest())
            embeddings.append(largest.embedding / np.linalg.norm(largest.embedding))
    if len(embeddings) < 2:
        raise FaceFinderError("--same-person: give at least two probe photos of the person")
    stacked = np.stack(embeddings).astype(np.float32)
    record = ProbeFace(" + ".join(sources), None, None, None, probe_sha256=" ".join(digests), threshold=threshold)
    if any_opted_out(searcher.store.catalog, stacked, searcher.pipeline.model_id):
        yield record  # one of them is on the opt-out list: nothing is searched for it
        return
    template, scale = fuse(stacked)
    record.candidates = searcher.search_embeddings(template, collection_ids, top_k, threshold, scale)[0]
    yield record
