"""`facefinder evaluate` on the shared data: false match rates by demographic group on UTKFace, and a
sanity run of the labelled-folder evaluation on CFP (frontal and profile photos of 250 people).

Each run goes through the same service functions as the command (services/evaluation/), with the
default models and the shipped calibration's threshold, and writes its JSON (the command's --json
output plus the machine, the wall time and the load) under benchmarks/results/.

    .venv/bin/python benchmarks/evaluation.py [--only utkface|cfp] [--data ../shared/data] [--report DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import REPO_ROOT, RESULTS_DIR, CpuWatch, loadavg, machine, require_dir

from facefinder.config import data_dir
from facefinder.services.calibration import default_calibration
from facefinder.services.evaluation.demographics import evaluate_demographics
from facefinder.services.evaluation.report import write_report
from facefinder.services.evaluation.run import evaluate_folder, open_pipeline

DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


def progress(label: str):
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        if done == total or done % 400 < 16:
            print(f"  {label}: {done}/{total} photos ({time.perf_counter() - started:.0f} s)", flush=True)

    return report


def run_utkface(data: Path, pipeline) -> dict:
    folder = require_dir(data / "utkface-demographics" / "images", "UTKFace", "pass --data DIR (the shared data)")
    calibration = default_calibration(pipeline.model_id)
    return evaluate_demographics(
        folder, pipeline, calibration.threshold, f"the calibrated default ({calibration.source})", "utkface",
        progress("utkface"),
    )  # fmt: skip


def run_cfp(data: Path, pipeline) -> dict:
    folder = require_dir(data / "cfp-dev" / "images", "CFP", "pass --data DIR (the shared data)")
    return evaluate_folder(folder, pipeline, on_progress=progress("cfp")).result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared face data folder")
    parser.add_argument("--only", choices=("utkface", "cfp"), help="run one of the two")
    parser.add_argument("--report", type=Path, help="also write each HTML report into DIR/<name>/")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"error: the shared face data is not at {args.data}; pass --data DIR")
    pipeline = open_pipeline(data_dir())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for name, run, output in (
        ("utkface", run_utkface, "evaluate_utkface_demographics.json"),
        ("cfp", run_cfp, "evaluate_cfp.json"),
    ):
        if args.only not in (None, name):
            continue
        with CpuWatch() as watch:
            result = run(args.data, pipeline)
        if args.report:
            write_report(args.report / name, result)
        result["benchmark"] = {"machine": machine(), **watch.result, "loadavg_after": loadavg()}
        (RESULTS_DIR / output).write_text(json.dumps(result, indent=2))
        print(f"{name}: {watch.result['wall_s']:.0f} s, wrote {RESULTS_DIR / output}")


if __name__ == "__main__":
    main()
