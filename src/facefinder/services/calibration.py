"""What a similarity score means: its false match rate, a verbal band, and the match threshold.

Cosine scores are not probabilities. We report, for each candidate, the estimated *false match
rate* (FMR) at its score: the fraction of different-person comparisons that score at least as high,
measured on LFW by `benchmarks/accuracy.py`, which writes `calibration.json` beside this file.
Against a gallery of N faces a stranger is expected to produce about FMR x N candidates above that
score, so scores are read together with gallery size. Results are investigative leads, never an
identification.

LFW's people and cameras are not everyone's: `facefinder evaluate --save-calibration` measures the same
curve on the operator's own labelled photos, for whichever model is in use (a user-supplied recognizer
gets honest false match rates only this way), and keeps it in <data dir>/calibrations/<model_id>.json;
``default_calibration(model_id)`` prefers it to the shipped file from then on.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from facefinder.config import data_dir as resolve_data_dir
from facefinder.errors import FaceFinderError

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")

# Erasure by person, opt-out and subject access match a person's face against what is held at the score
# where the measured false match rate falls to 2.5e-6 per comparison (about 0.69 for the default models;
# the search threshold, 0.635, sits near 5e-6). Stricter than search, because the opt-out list multiplies
# comparisons: each face ingested or returned is compared with every opted-out template, so with 1,000
# people on the list about 1,000 x 2.5e-6 = 0.25% of other people's faces would be withheld. Stricter still
# costs recall fast (LFW pairs: ~84% of same-person pairs reach 0.69, ~53% reach the 1e-6 score, 0.78).
# README, "Privacy and compliance", explains the trade-off.
PRIVACY_FMR = 2.5e-6
MAX_THRESHOLD = 0.95  # the gallery-size threshold's ceiling: past it hardly any genuine pair scores


@dataclass(frozen=True)
class Calibration:
    """One recognizer's score calibration: score -> false match rate, the default threshold and the bands."""

    model_id: str
    threshold: float  # default "is this a match at all": open-set FPIR 1% on the LFW 1:N benchmark
    scores: np.ndarray  # ascending cosine scores ...
    fmr: np.ndarray  # ... and the impostor fraction at or above each
    bands: dict[str, float]  # band name -> lowest score in it, best band first
    source: str
    gallery_fit: tuple[float, float] | None = None  # (a, b): threshold a + b log10 N for a gallery of N faces

    def threshold_for(self, gallery_faces: int) -> float:
        """The default threshold for a gallery of this many faces: where a stranger's best candidate stays
        below it in 99% of searches (open-set FPIR 1%). The best of N impostor scores grows with log N, so
        a fixed score would let a large gallery return a stranger far more often; measured on random LFW
        galleries and fitted by benchmarks/gallery_threshold.py. Never below ``threshold`` (small galleries
        keep the LFW operating point), never above MAX_THRESHOLD; a calibration without a fit keeps ``threshold``."""
        if self.gallery_fit is None or gallery_faces < 1:
            return self.threshold
        a, b = self.gallery_fit
        fitted = float(np.ceil((a + b * np.log10(gallery_faces)) * 1000 - 1e-6) / 1000)
        return min(max(self.threshold, fitted), MAX_THRESHOLD)

    def false_match_rate(self, score: float) -> float:
        """Estimated FMR at this score (interpolated in log space, clamped to the measured range)."""
        log_fmr = np.interp(score, self.scores, np.log10(np.maximum(self.fmr, 1e-12)))
        return float(10**log_fmr)

    def score_at(self, fmr: float) -> float:
        """The lowest score whose estimated false match rate is at most ``fmr`` (rounded up to 0.001)."""
        log_fmr = np.log10(np.maximum(self.fmr, 1e-12))[::-1]  # ascending, for np.interp
        score = float(np.interp(np.log10(fmr), log_fmr, self.scores[::-1]))
        return float(np.ceil(score * 1000 - 1e-6) / 1000)

    @property
    def privacy_threshold(self) -> float:
        """The strict threshold of erasure by person, opt-out and subject access: see PRIVACY_FMR."""
        return self.score_at(PRIVACY_FMR)

    def band(self, score: float, default: float | None = None) -> str:
        """The verbal band of a score. ``default``: the default threshold for the gallery searched
        (``threshold_for``). Where it is above the calibrated one, a score below it is at most weak,
        whatever its false match rate, and the weak band ends at ``near_miss_floor`` under it."""
        if default is not None and default > self.threshold:
            if score >= default:
                return "strong" if score >= self.bands.get("strong", default) else "possible"
            return "weak" if score >= self.near_miss_floor(default) else "none"
        for name, lowest in self.bands.items():
            if score >= lowest:
                return name
        return "none"

    def near_miss_floor(self, threshold: float) -> float:
        """The lowest score a near miss may have under ``threshold``: the weak band's width below it (the
        weak band itself at the calibrated threshold). So near misses rise with a large gallery's
        threshold instead of reaching down to scores that half its strangers get."""
        weak = self.bands.get("weak", threshold)
        return min(threshold, max(weak, threshold - max(self.threshold - weak, 0.0)))


def default_calibration(model_id: str | None = None, data_dir: str | os.PathLike | None = None) -> Calibration:
    """The calibration for ``model_id``: the one `facefinder evaluate --save-calibration` stored for it in
    the data directory (default: $FACEFINDER_DATA_DIR or ~/.facefinder), else the shipped one (measured
    on LFW for the default models). Without a model id, the shipped one."""
    if model_id is not None:
        path = saved_calibration_path(model_id, data_dir)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            pass
        else:
            try:
                return _load(path, stamp)
            except (ValueError, KeyError, TypeError) as exc:  # said at once, never searched past silently
                raise FaceFinderError(
                    f"{path}: not a calibration ({exc!r}); remove it, or save one again with facefinder evaluate"
                ) from None
    return _load(CALIBRATION_FILE, 0)


@lru_cache(maxsize=8)
def _load(path: Path, stamp: int) -> Calibration:
    """A calibration file, read again only when it changes (``stamp``: its modification time)."""
    data = json.loads(path.read_text())
    return Calibration(
        model_id=data["model_id"],
        threshold=float(data["threshold"]),
        scores=np.array(data["fmr_curve"]["scores"], dtype=np.float64),
        fmr=np.array(data["fmr_curve"]["fmr"], dtype=np.float64),
        bands={k: float(v) for k, v in data["bands"].items()},
        source=data["source"],
        gallery_fit=(float(fit["a"]), float(fit["b"])) if (fit := data.get("gallery_threshold")) else None,
    )


# ----- measuring one: shared by benchmarks/accuracy.py and `facefinder evaluate --save-calibration` ----------
def saved_calibration_path(model_id: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where a calibration measured on the operator's photos is kept: <data dir>/calibrations/<model_id>.json."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", model_id)
    return resolve_data_dir(data_dir) / "calibrations" / f"{safe}.json"


def fmr_curve(impostor: np.ndarray) -> dict:
    """The share of impostor scores at or above each score from 0 to 1 in steps of 0.01."""
    grid = np.round(np.arange(0.0, 1.0001, 0.01), 2)
    ordered = np.sort(impostor)
    at_or_above = len(ordered) - np.searchsorted(ordered, grid, side="left")
    fmr = np.maximum(at_or_above, 0.5) / len(ordered)  # half a count where none was seen: an upper-ish bound
    return {"scores": grid.tolist(), "fmr": [float(f"{v:.3g}") for v in fmr], "impostor_pairs": int(len(ordered))}


def score_at_fmr(impostor: np.ndarray, fmr: float) -> float:
    """The impostor score that floor(fmr x impostors) impostors exceed (the highest when that is none)."""
    ordered = np.sort(impostor)[::-1]
    return float(ordered[int(np.floor(fmr * len(ordered)))])


def calibration_record(
    model_id: str, impostor: np.ndarray, threshold: float, measured_on: str, fpir: float, source: str
) -> dict:
    """A calibration in calibration.json's format: the FMR curve of ``impostor`` (different-person scores),
    ``threshold`` (open-set FPIR ``fpir`` on ``measured_on``) and the bands read off the curve."""
    bands = {
        "strong": max(score_at_fmr(impostor, 1e-6), threshold),
        "possible": threshold,
        "weak": min(score_at_fmr(impostor, 1e-4), threshold),
    }
    return {
        "model_id": model_id,
        "threshold": round(threshold, 4),
        "bands": {k: round(v, 4) for k, v in bands.items()},
        "band_meaning": {
            "strong": "false match rate <= 1e-6 per comparison",
            "possible": f"at or above the default threshold (open-set FPIR {fpir * 100:g}% on {measured_on})",
            "weak": "below the default threshold, false match rate <= 1e-4: only shown when --threshold is lowered",
        },
        "fmr_curve": fmr_curve(impostor),
        "source": source,
    }


def save_calibration(record: dict, data_dir: str | os.PathLike | None = None) -> Path:
    """Store ``record`` as the calibration of its model in the data directory (written whole, then renamed,
    so that a search never reads half of one); default_calibration() prefers it from then on."""
    path = saved_calibration_path(record["model_id"], data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(record, indent=2))
    os.replace(partial, path)
    return path
