"""The default threshold follows the gallery's size (open-set FPIR 1% at any size), and every search
says, and audits, the threshold it ran at."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import lfw

from facefinder.services import search
from facefinder.services.calibration import MAX_THRESHOLD, default_calibration


def test_the_threshold_rises_with_the_gallery_and_never_falls_below_the_calibrated_one():
    shipped = default_calibration()
    assert shipped.gallery_fit is not None  # benchmarks/gallery_threshold.py measured it
    sizes = [1, 10, 1_000, 100_000, 10_000_000, 1_000_000_000]
    thresholds = [shipped.threshold_for(n) for n in sizes]
    assert thresholds == sorted(thresholds)  # more faces, a higher bar
    assert thresholds[0] == shipped.threshold and all(shipped.threshold <= t <= MAX_THRESHOLD for t in thresholds)
    assert shipped.threshold_for(10_000_000) > shipped.threshold  # a large gallery is not searched at LFW's score
    a, b = shipped.gallery_fit
    assert shipped.threshold_for(10_000_000) == pytest.approx(
        min(max(a + 7 * b, shipped.threshold), MAX_THRESHOLD), abs=1e-3
    )
    assert replace(shipped, gallery_fit=None).threshold_for(10**9) == shipped.threshold  # no fit: a fixed score
    assert replace(shipped, gallery_fit=(0.9, 0.1)).threshold_for(10**6) == MAX_THRESHOLD


def test_a_search_runs_at_the_threshold_for_its_gallery_and_audits_it(lfw_finder, monkeypatch):
    """15 faces in the gallery: a fit that puts the bar at 0.95 for them hides what 0.635 shows."""
    shipped = default_calibration()
    [plain] = lfw_finder.search(lfw("Tony_Blair", 2))
    assert plain.threshold == shipped.threshold_for(15) == shipped.threshold  # 15 faces: LFW's operating point
    assert any(c.score < 0.95 for c in plain.candidates)  # the other photos of him, below 0.95
    strict = replace(shipped, gallery_fit=(0.95 - np.log10(15) * 0.01, 0.01))  # 0.95 at 15 faces
    assert strict.threshold_for(15) == pytest.approx(0.95, abs=1e-3)
    monkeypatch.setattr(search, "default_calibration", lambda *args: strict)
    [strict_probe] = lfw_finder.search(lfw("Tony_Blair", 2), case_id="T-1", purpose="gallery threshold test")
    assert strict_probe.threshold == pytest.approx(0.95, abs=1e-3)
    kept = [c.face_id for c in plain.candidates if c.score >= strict_probe.threshold]
    assert [c.face_id for c in strict_probe.candidates] == kept and len(kept) < len(plain.candidates)
    last = lfw_finder.audit.entries(action="search", newest_first=True, limit=1)[0]
    assert json.loads(last.details)["threshold"] == strict_probe.threshold
    [chosen] = lfw_finder.search(lfw("Tony_Blair", 2), threshold=0.5)  # the user's own threshold stands
    assert chosen.threshold == 0.5 and chosen.candidates


def test_bands_and_near_misses_are_read_against_the_gallerys_threshold():
    """At a large gallery's higher threshold a score below it is never 'possible' or 'strong', and near
    misses reach only the weak band's width below it, not down to scores strangers get at that size."""
    shipped = default_calibration()
    weak, strong, base = shipped.bands["weak"], shipped.bands["strong"], shipped.threshold
    assert shipped.near_miss_floor(base) == weak  # a small gallery: the weak band, as before
    assert shipped.near_miss_floor(0.82) == pytest.approx(0.82 - (base - weak))
    assert shipped.near_miss_floor(0.5) == 0.5  # a threshold below the weak band: no near misses
    for score in (0.55, 0.7, 0.8, 0.9):  # small galleries: the fixed bands
        assert shipped.band(score, base) == shipped.band(score)
    big = shipped.threshold_for(1_000_000)
    assert big > strong  # a million faces: the bar is above the strong band's floor
    assert shipped.band(big + 0.01, big) == "strong"
    assert shipped.band(big - 0.01, big) == "weak"  # below the bar: weak, though its FMR is under 1e-6
    assert shipped.band(shipped.near_miss_floor(big) - 0.01, big) == "none"
    mid = shipped.threshold_for(50_000)
    assert base < mid < strong and shipped.band(mid, mid) == "possible" and shipped.band(mid - 0.01, mid) == "weak"
