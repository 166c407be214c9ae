"""Paths, constants and small helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

import facefinder

TESTS_DIR = Path(__file__).resolve().parent
DATA = TESTS_DIR / "data"
LFW = DATA / "lfw"
DEMO = Path(facefinder.__file__).resolve().parent / "demo"
GALLERY = DEMO / "gallery"
PROBES = DEMO / "probes"
GROUP = GALLERY / "group"
GROUP_FACES = {
    "sample1.jpg": 3,
    "sample2.jpg": 3,
    "sample3.jpg": 3,
    "sample4.jpg": 4,
    "sample5.jpg": 5,
    "sample6.jpg": 4,
}
LFW_PEOPLE = sorted(p.name for p in LFW.iterdir() if p.is_dir())
# Every new collection needs a purpose, a legal basis and a retention period (services/privacy/retention.py).
POLICY = {"purpose": "facefinder tests", "legal_basis": "test photos under the MIT licence", "retention_days": 30}
POLICY_ARGS = ["--purpose", POLICY["purpose"], "--legal-basis", POLICY["legal_basis"], "--retention-days", "30"]


def lfw(person: str, number: int) -> Path:
    return LFW / person / f"{person}_{number:04d}.jpg"


def cli_command() -> list[str]:
    """How to run the installed CLI in a subprocess: the venv's `facefinder` script, else -m."""
    script = Path(sys.executable).with_name("facefinder")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "facefinder.interfaces.cli"]


def box_iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def save_jpeg(array: np.ndarray, path: Path, quality: int = 95, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=quality, **kwargs)
    return path


def open_finder(data_dir: Path, pipeline=None, **kwargs):
    """A FaceFinder on ``data_dir`` that ingests in-process and reuses the session's loaded models."""
    from facefinder import FaceFinder

    kwargs.setdefault("workers", 0)
    ff = FaceFinder(data_dir, **kwargs)
    if pipeline is not None:
        ff._pipeline = pipeline  # models load once per session instead of once per FaceFinder
    return ff
