"""What a similarity score means: its false match rate, a verbal band, and the match threshold.

Cosine scores are not probabilities. We report, for each candidate, the estimated *false match
rate* (FMR) at its score: the fraction of different-person comparisons that score at least as high,
measured on LFW by `benchmarks/accuracy.py`, which writes `calibration.json` beside this file.
Against a gallery of N faces a stranger is expected to produce about FMR x N candidates above that
score, so scores are read together with gallery size. Results are investigative leads, never an
identification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")

# Erasure by person, opt-out and subject access match a person's face against what is held at the score
# where the measured false match rate falls to 2.5e-6 per comparison (about 0.69 for the default models;
# the search threshold, 0.635, sits near 5e-6). Stricter than search, because the opt-out list multiplies
# comparisons: each face ingested or returned is compared with every opted-out template, so with 1,000
# people on the list about 1,000 x 2.5e-6 = 0.25% of other people's faces would be withheld. Stricter still
# costs recall fast (LFW pairs: ~84% of same-person pairs reach 0.69, ~53% reach the 1e-6 score, 0.78).
# README, "Privacy and compliance", explains the trade-off.
PRIVACY_FMR = 2.5e-6


@dataclass(frozen=True)
class Calibration:
    """One recognizer's score calibration: score -> false match rate, the default threshold and the bands."""

    model_id: str
    threshold: float  # default "is this a match at all": open-set FPIR 1% on the LFW 1:N benchmark
    scores: np.ndarray  # ascending cosine scores ...
    fmr: np.ndarray  # ... and the impostor fraction at or above each
    bands: dict[str, float]  # band name -> lowest score in it, best band first
    source: str

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

    def band(self, score: float) -> str:
        for name, lowest in self.bands.items():
            if score >= lowest:
                return name
        return "none"


@lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    data = json.loads(CALIBRATION_FILE.read_text())
    return Calibration(
        model_id=data["model_id"],
        threshold=float(data["threshold"]),
        scores=np.array(data["fmr_curve"]["scores"], dtype=np.float64),
        fmr=np.array(data["fmr_curve"]["fmr"], dtype=np.float64),
        bands={k: float(v) for k, v in data["bands"].items()},
        source=data["source"],
    )
