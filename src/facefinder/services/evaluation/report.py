"""The report of `facefinder evaluate --report DIR`: report.html, its pictures and evaluation.json.

An operator hands the report to whoever decides whether the system is fit for a purpose, so it is
drawn from the JSON alone (the same figures, nothing computed twice) and stays readable offline: plain
HTML (templates/report.html), PNG pictures drawn with matplotlib's Agg renderer (no display, no global
pyplot state), the JSON beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

TEMPLATES = Path(__file__).with_name("templates")
_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


_environment.filters.update(number=_number, percent=_percent)


def write_report(directory: Path, result: dict) -> list[Path]:
    """Write the report of ``result`` (the JSON of either kind of evaluation) into ``directory``; returns
    the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    pictures: dict[str, str] = {}
    if "verification" in result:
        pictures["roc"] = _save(_roc(result["verification"]), directory / "roc.png")
        threshold = (result["identification"]["open_set"] or {}).get("threshold")
        pictures["scores"] = _save(
            _histograms(result["verification"]["histogram"], threshold), directory / "scores.png"
        )
    if "groups" in result:
        pictures["demographics"] = _save(_demographics(result), directory / "demographics.png")
    (directory / "evaluation.json").write_text(json.dumps(result, indent=2))
    page = _environment.get_template("report.html").render(result=result, pictures=pictures)
    (directory / "report.html").write_text(page)
    return [directory / name for name in ("report.html", "evaluation.json", *pictures.values())]


def _save(figure: Figure, path: Path) -> str:
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=100)
    return path.name


def _roc(verification: dict) -> Figure:
    """TAR against FMR (log scale) over every pair, with the FMRs the table reports marked."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    roc = verification["roc"]
    if roc["fmr"]:
        axes.plot(roc["fmr"], roc["tar"], color="tab:blue")
        axes.set_xscale("log")
    for row in verification["tar_at_fmr"]:
        axes.axvline(row["fmr"], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("false match rate (different-person pairs accepted)")
    axes.set_ylabel("true accept rate (same-person pairs accepted)")
    axes.set_ylim(0, 1.01)
    axes.set_title(f"ROC: {verification['all_mated_pairs']:,} mated, {verification['all_non_mated_pairs']:,} non-mated")
    axes.grid(True, which="both", alpha=0.3)
    return figure


def _histograms(histogram: dict, threshold: float | None) -> Figure:
    """Mated and non-mated scores, each as a share of its pairs (their counts differ by orders)."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    edges = np.array(histogram["edges"])
    for key, colour in (("non_mated", "tab:red"), ("mated", "tab:green")):
        counts = np.array(histogram[key], dtype=float)
        share = counts / counts.sum() if counts.sum() else counts
        axes.stairs(share, edges, fill=True, alpha=0.45, color=colour, label=key.replace("_", "-"))
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"open-set threshold {threshold:.3f}")
    axes.set_xlabel("score (cosine similarity); -1: a photo with no face")
    axes.set_ylabel("share of pairs")
    axes.legend()
    return figure


def _demographics(result: dict) -> Figure:
    """Per gender x group: the FMR at the threshold (bar to the 95% upper bound) and the scores at FMR 1e-2, 1e-3."""
    groups = result["groups"]
    names = [f"{g['gender']} {g['group']}" for g in groups]
    figure = Figure(figsize=(9, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    rows = np.arange(len(groups))
    fmr = np.array([g["fmr"] or 0.0 for g in groups])
    upper = np.array([g["fmr_upper_95"] or 0.0 for g in groups])
    left.barh(rows, fmr, color="tab:red", xerr=[np.zeros_like(fmr), upper - fmr], capsize=3)
    if result["all_pairs"]["fmr"] is not None:
        left.axvline(result["all_pairs"]["fmr"], color="black", linestyle="--", linewidth=1, label="all pairs")
        left.legend()
    left.set_yticks(rows, names)
    left.set_xlabel(f"FMR at threshold {result['threshold']:.3f} (bar: to the 95% upper bound)")
    for offset, fmr, colour in ((-0.2, "0.01", "tab:cyan"), (0.2, "0.001", "tab:blue")):
        tail = [g[f"score_at_fmr_{fmr}"] or 0.0 for g in groups]
        right.barh(rows + offset, tail, height=0.4, color=colour, label=f"score at FMR {fmr}")
    right.axvline(result["threshold"], color="black", linestyle="--", linewidth=1, label="threshold")
    right.set_xlabel("score at which the group reaches the FMR")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small")
    return figure
