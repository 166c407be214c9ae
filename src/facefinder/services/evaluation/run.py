"""`facefinder evaluate` on a labelled folder: embed every photo with the pipeline in use, then measure
verification, 1:N search and (on request) a calibration for this model.

A labelled folder is FOLDER/<person>/<photos>, photos anywhere under each person's folder (CFP keeps
frontal/ and profile/ apart there). Each photo stands for its person by the face nearest its centre, as
in benchmarks/accuracy.py; a photo with no face (or that cannot be read) is counted, and is a miss.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facefinder.config import models_dir as resolve_models_dir
from facefinder.errors import FaceFinderError, ImageError
from facefinder.services.calibration import calibration_record, save_calibration
from facefinder.services.evaluation import metrics
from facefinder.services.sources.folders import SKIPPED_SUFFIXES
from facefinder.vision.image import Decoded, decode_photo, read_photo_bytes
from facefinder.vision.pipeline import FacePipeline

if TYPE_CHECKING:
    from facefinder.services.engine import FaceFinder

Progress = Callable[[int, int], None]  # (photos done, photos in all)
BATCH = 16  # photos analysed together: the recognizer embeds their faces in one call
FMRS = (1e-3, 1e-4)  # the false match rates TAR is reported at
EXAMPLES = 20  # file names listed for each kind of miss


def open_pipeline(data_dir: Path, detector: str | None = None, recognizer: str | None = None) -> FacePipeline:
    """The pipeline `facefinder` uses with these options (the shipped models, or the given ONNX files)."""
    return FacePipeline.default(
        resolve_models_dir(data_dir), threads=os.cpu_count() or 1, detector=detector, recognizer=recognizer
    )


# ----- finding and embedding photos -----------------------------------------------------------------------
def _photos_under(folder: Path) -> list[Path]:
    """Every photo file anywhere under ``folder``, sorted; hidden files and sidecars left out."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and not path.name.lower().endswith(SKIPPED_SUFFIXES)
    )


def labelled_photos(folder: Path) -> tuple[list[str], list[Path]]:
    """(person, photo) for every photo under each FOLDER/<person>/, in sorted order."""
    if not folder.is_dir():
        raise FaceFinderError(f"{folder}: not a folder")
    people, photos = [], []
    for person in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for photo in _photos_under(person):
            people.append(person.name)
            photos.append(photo)
    if not photos:
        raise FaceFinderError(f"{folder}: no photos in per-person folders (expected FOLDER/<person>/<photo>)")
    return people, photos


def flat_photos(folder: Path) -> list[Path]:
    """Every photo under ``folder`` (distractors, demographic sets), sorted."""
    if not folder.is_dir():
        raise FaceFinderError(f"{folder}: not a folder")
    photos = _photos_under(folder)
    if not photos:
        raise FaceFinderError(f"{folder}: no photos")
    return photos


@dataclass
class Embedded:
    """The photos' embeddings (zero rows for misses) and why each miss is one."""

    vectors: np.ndarray  # n x dim, unit rows; zeros where no face was used
    found: np.ndarray  # n bools
    no_face: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)  # {"photo", "reason"}


def _decoded(photos: list[Path], embedded: Embedded) -> Iterator[tuple[int, Decoded]]:
    """(index, decoded photo) for each photo that can be read; the others are noted as unreadable."""
    for i, photo in enumerate(photos):
        try:
            yield i, decode_photo(read_photo_bytes(photo), str(photo))
        except ImageError as exc:
            embedded.unreadable.append({"photo": str(photo), "reason": exc.reason})


def embed_photos(
    pipeline: FacePipeline, photos: list[Path], every_face: bool = False, on_progress: Progress | None = None
) -> Embedded:
    """One embedding per photo, of its face nearest the centre; with ``every_face`` (distractors), one
    row per face found, and ``found`` all true."""
    dim = pipeline.recognizer.dim
    rows: list[np.ndarray] = []
    embedded = Embedded(np.zeros((0, dim), np.float32), np.zeros(0, bool))
    chosen = np.zeros((len(photos), dim), np.float32)
    found = np.zeros(len(photos), bool)
    readable = _decoded(photos, embedded)
    while batch := list(islice(readable, BATCH)):
        for (i, photo), faces in zip(batch, pipeline.analyze_decoded([p for _, p in batch])):
            if not faces:
                embedded.no_face.append(str(photos[i]))
            elif every_face:
                rows.extend(face.embedding for face in faces)
            else:
                centre = np.array([photo.width / 2, photo.height / 2])
                face = min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre))
                chosen[i], found[i] = face.embedding, True
        if on_progress:
            on_progress(batch[-1][0] + 1, len(photos))
    if every_face:
        embedded.vectors = metrics.normalise(np.array(rows, np.float32).reshape(-1, dim))
        embedded.found = np.ones(len(rows), bool)
    else:
        embedded.vectors, embedded.found = metrics.normalise(chosen), found
    return embedded


# ----- the figures ----------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """What `facefinder evaluate` found on a labelled folder: the figures (``result``, the JSON) and
    the different-person scores a calibration is made from."""

    result: dict
    impostor: np.ndarray


def evaluate_folder(
    folder: Path,
    pipeline: FacePipeline,
    distractors: Path | None = None,
    fpir: float = 0.01,
    seed: int = 0,
    on_progress: Progress | None = None,
) -> Evaluation:
    """Verification (10-fold on generated pairs; TAR at FMR 1e-3 and 1e-4 over every pair) and 1:N
    search (rank-1, rank-10, FNIR at ``fpir``) on FOLDER/<person>/<photos>."""
    people_list, photos = labelled_photos(folder)
    people = np.array(people_list)
    embedded = embed_photos(pipeline, photos, on_progress=on_progress)
    extra = embed_photos(pipeline, flat_photos(distractors), every_face=True).vectors if distractors else None
    emb, found = embedded.vectors, embedded.found
    genuine, impostor = metrics.all_pair_scores(emb, found, people)
    ident = metrics.identification(people, emb, found, extra, fpir)
    result = {
        "folder": str(folder),
        "model_id": pipeline.model_id,
        "seed": seed,
        "photos": len(photos),
        "people": int(len(set(people_list))),
        "faces_found": int(found.sum()),
        "no_face": len(embedded.no_face),
        "unreadable": len(embedded.unreadable),
        "no_face_examples": [os.path.relpath(p, folder) for p in embedded.no_face[:EXAMPLES]],
        "unreadable_examples": embedded.unreadable[:EXAMPLES],
        "by_subfolder": _by_subfolder(folder, photos, embedded.no_face),
        "distractor_faces": 0 if extra is None else int(len(extra)),
        "verification": _verification(people, emb, found, genuine, impostor, seed),
        "identification": {"closed_set": ident.closed_set, "open_set": ident.open_set},
    }
    result["notes"] = _notes(result, fpir)
    return Evaluation(result, impostor)


def _by_subfolder(folder: Path, photos: list[Path], no_face: list[str]) -> dict[str, dict[str, int]]:
    """Photos and misses by the folder between a person's and the photo ("." for none): where faces are
    missed (CFP: profile/ against frontal/)."""

    def kind(photo: Path) -> str:
        return Path(*photo.relative_to(folder).parts[1:-1]).as_posix() or "."

    counts: dict[str, dict[str, int]] = {}
    for photo in photos:
        counts.setdefault(kind(photo), {"photos": 0, "no_face": 0})["photos"] += 1
    for photo in no_face:
        counts[kind(Path(photo))]["no_face"] += 1
    return dict(sorted(counts.items()))


def _verification(people, emb, found, genuine, impostor, seed) -> dict:
    """Accuracy on generated pairs, TAR at FMRS, the ROC and score histograms over every pair."""
    pairs, same, fold = metrics.make_pairs(people, seed)
    scores = metrics.pair_scores(emb, found, pairs)
    accuracies = metrics.fold_accuracy(scores, same, fold) if same.any() and (~same).any() else []
    edges = np.linspace(-1.0, 1.0, 101)
    return {
        "mated_pairs": int(same.sum()),
        "non_mated_pairs": int((~same).sum()),
        "folds": int(len(np.unique(fold))) if accuracies else 0,
        "accuracy_mean": float(np.mean(accuracies)) if accuracies else None,
        "accuracy_std": float(np.std(accuracies)) if accuracies else None,
        "pairs_missing_a_face": int((scores == metrics.MISS).sum()),
        "all_mated_pairs": int(len(genuine)),
        "all_non_mated_pairs": int(len(impostor)),
        "tar_at_fmr": [metrics.tar_at_fmr(genuine, impostor, fmr).to_dict() for fmr in FMRS],
        "roc": metrics.roc_points(genuine, impostor),
        "histogram": {
            "edges": np.round(edges, 3).tolist(),
            "mated": np.histogram(np.clip(genuine, -1, 1), edges)[0].tolist(),
            "non_mated": np.histogram(np.clip(impostor, -1, 1), edges)[0].tolist(),
        },
    }


def _notes(result: dict, fpir: float) -> list[str]:
    """What the figures cannot say on this folder, in words."""
    notes = []
    if result["no_face"] or result["unreadable"]:
        notes.append(
            f"{result['no_face']} photos with no face found and {result['unreadable']} unreadable: "
            "counted as misses (their pairs score -1), not skipped"
        )
    for tar in result["verification"]["tar_at_fmr"]:
        if tar["tar"] is None:
            notes.append(
                f"TAR at FMR {tar['fmr']:g} not measured: {tar['impostor_pairs']:,} different-person pairs, "
                f"at least {tar['needed']:,} are needed"
            )
    open_set = result["identification"]["open_set"]
    if open_set is None:
        notes.append("no open-set figures: they need at least two people with two or more photos")
    elif not open_set["fpir_measured"]:
        needed = math.ceil(1 / fpir - 1e-9)
        notes.append(
            f"FPIR {fpir:g} not measured: {open_set['non_mated_probes']} non-mated probes, at least {needed} "
            "are needed; the threshold shown is the highest non-mated score"
        )
    return notes


def calibration_from(evaluation: Evaluation, fpir: float) -> dict:
    """A calibration for the evaluated model in calibration.json's format: the FMR curve of every
    different-person pair, the open-set threshold at ``fpir`` and the bands."""
    result = evaluation.result
    open_set = result["identification"]["open_set"]
    if open_set is None or len(evaluation.impostor) == 0:
        raise FaceFinderError(
            "calibration not saved: it needs different-person pairs and at least two people with two or more photos"
        )
    if not open_set["fpir_measured"]:  # a threshold nobody measured would mislead every search after it
        raise FaceFinderError(
            f"calibration not saved: FPIR {fpir:g} was not measured ({open_set['non_mated_probes']} non-mated probes, "
            f"at least {math.ceil(1 / fpir - 1e-9)} are needed); evaluate more people or choose a larger --fpir"
        )
    name = Path(result["folder"]).name
    source = (
        f"facefinder evaluate on {result['folder']} ({result['photos']} photos, {result['people']} people, "
        f"{len(evaluation.impostor):,} different-person pairs; threshold from {open_set['non_mated_probes']} "
        "non-mated probes)"
    )
    return calibration_record(result["model_id"], evaluation.impostor, open_set["threshold"], name, fpir, source)


def store_calibration(finder: FaceFinder, record: dict) -> Path:
    """Keep ``record`` as the calibration of its model in the finder's data directory and log it: from
    now on it sets the threshold and false match rates of every search with this model there."""
    path = save_calibration(record, finder.data_dir)
    finder.audit.record(
        finder.actor,
        "calibration.save",
        model_id=record["model_id"],
        threshold=record["threshold"],
        source=record["source"],
        path=str(path),
    )
    return path
