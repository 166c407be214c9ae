"""Shared helpers for the benchmarks: paths, machine description, percentiles, JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_LFW = (REPO_ROOT / ".." / "shared" / "data" / "lfw" / "images").resolve()
DEFAULT_GROUPS = REPO_ROOT / "src" / "facefinder" / "demo" / "gallery" / "group"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def models_dir(explicit: str | None) -> Path:
    """--models, else $FACEFINDER_MODELS_DIR, else ~/.facefinder/models (where setup.sh puts them)."""
    from facefinder.config import models_dir as resolve

    if explicit:
        return Path(explicit).expanduser().resolve()
    return resolve(Path.home() / ".facefinder")


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        sys.exit(f"error: {what} not found at {path}\n{hint}")
    return path


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def spread(items: list, limit: int | None) -> list:
    """A deterministic subset of ``limit`` items spread evenly over the (sorted) list.

    Evenly strided rather than the first N, so that a 2000-photo subset of LFW spans the whole
    alphabet of people instead of only the names starting with A.
    """
    if limit is None or limit >= len(items):
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def system_cpu_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all processes), from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """How much of the machine's CPU *other* processes used while a block ran (contention)."""

    def __enter__(self) -> "CpuWatch":
        import resource

        self._resource = resource
        self._wall, self._system, self._ours = time.perf_counter(), system_cpu_seconds(), self._own()
        return self

    def _own(self) -> float:
        r = self._resource
        me, kids = r.getrusage(r.RUSAGE_SELF), r.getrusage(r.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        ours = self._own() - self._ours
        system = system_cpu_seconds()
        others = None if system is None or self._system is None else max(0.0, system - self._system - ours)
        capacity = (os.cpu_count() or 1) * wall
        self.result = {
            "wall_s": round(wall, 3),
            "our_cpu_s": round(ours, 3),
            "other_processes_cpu_s": None if others is None else round(others, 3),
            "other_processes_share_pct": None if others is None else round(others / capacity * 100, 1),
        }


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": loadavg(),
    }
    for module in ("onnxruntime", "faiss", "numpy", "cv2", "sqlalchemy"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a version string is nice to have, never required
            info[module] = None
    try:
        import faiss

        info["faiss_omp_threads"] = faiss.omp_get_max_threads()
    except Exception:  # noqa: BLE001
        pass
    return info


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """Milliseconds: p50 / p90 / p99 / mean / min / max over samples given in seconds."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def write_json(name: str, payload: dict, explicit: str | None = None) -> Path:
    path = Path(explicit) if explicit else RESULTS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def table(rows: list[tuple], headers: tuple[str, ...] | None = None) -> str:
    """A plain fixed-width text table (no dependency on rich, so output pipes cleanly)."""
    cells = [[str(c) for c in row] for row in ([headers] if headers else []) + list(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if headers and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
