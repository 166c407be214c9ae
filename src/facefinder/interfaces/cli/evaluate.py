"""The `evaluate` command: how accurate the models in use are on labelled photos the operator holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from facefinder.config import data_dir as resolve_data_dir
from facefinder.errors import FaceFinderError
from facefinder.interfaces.cli.common import engine, errors, fail, print_table, progress, say, state
from facefinder.services.evaluation.demographics import SCHEMES


def evaluate(
    folder: Annotated[
        Path, typer.Argument(help="FOLDER/<person>/<photos> (photos anywhere under each person's folder).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    report: Annotated[
        Optional[Path], typer.Option("--report", help="Write report.html, its PNG pictures and evaluation.json here.")
    ] = None,
    distractors: Annotated[
        Optional[Path], typer.Option(help="A folder of photos of other people: every face in them joins the gallery.")
    ] = None,
    fpir: Annotated[
        float, typer.Option(help="The open-set false positive identification rate to set the threshold at.")
    ] = 0.01,
    save_calibration: Annotated[
        bool,
        typer.Option(
            "--save-calibration", help="Keep the measured threshold and FMR curve as this model's calibration."
        ),
    ] = False,
    demographics: Annotated[
        Optional[str],
        typer.Option(help="'utkface': FOLDER is a flat folder of UTKFace-named photos; FMR by gender and group."),
    ] = None,
    threshold: Annotated[
        Optional[float],
        typer.Option(help="With --demographics: the score that counts as a match [default: calibrated]."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random non-mated pairs.")] = 0,
) -> None:
    """Measure verification, 1:N search (or, with --demographics, false match rates by group) on labelled photos.

    Photos in which no face is found count as misses. Nothing is stored, except the calibration
    with --save-calibration (logged in the audit log)."""
    if not 0 < fpir < 1:
        fail(f"--fpir {fpir}: must be between 0 and 1")
    if demographics and (distractors or save_calibration):
        fail("--demographics measures false match rates only: it takes no --distractors or --save-calibration")
    if demographics and demographics not in SCHEMES:
        fail(f"--demographics {demographics!r}: known schemes are {', '.join(SCHEMES)}")
    if threshold is not None and not demographics:
        fail("--threshold is for --demographics; a labelled folder's threshold is measured at --fpir")
    if demographics:
        result = _demographics(folder, demographics, threshold)
    else:
        result = _labelled(folder, distractors, fpir, seed, save_calibration)
    if report:
        from facefinder.services.evaluation.report import write_report

        write_report(report, result)
        say(f"report: {report / 'report.html'}")
    if as_json:
        print(json.dumps(result, indent=2))
    elif demographics:
        _print_demographics(result)
    else:
        _print_labelled(result)
    if result.get("calibration_error"):
        fail(result["calibration_error"])


def _pipeline():
    from facefinder.services.evaluation.run import open_pipeline

    return open_pipeline(resolve_data_dir(state.data_dir), state.detector, state.recognizer)


def _labelled(folder: Path, distractors: Optional[Path], fpir: float, seed: int, save: bool) -> dict:
    from facefinder.services.evaluation.run import calibration_from, evaluate_folder, store_calibration

    with errors(), progress() as bar:
        task = bar.add_task("embedding", total=None, faces="", rate="")
        evaluation = evaluate_folder(
            folder,
            _pipeline(),
            distractors,
            fpir,
            seed,
            lambda done, total: bar.update(task, completed=done, total=total),
        )
        result = evaluation.result
        result["calibration_saved"] = None
        if save:
            try:
                record = calibration_from(evaluation, fpir)
            except FaceFinderError as exc:  # the figures are still shown; the exit status says it failed
                result["calibration_error"] = str(exc)
                return result
            with engine() as ff:
                result["calibration_saved"] = str(store_calibration(ff, record))
            say(f"calibration for {record['model_id']} saved: {result['calibration_saved']}")
    return result


def _demographics(folder: Path, scheme: str, threshold: Optional[float]) -> dict:
    from facefinder.services.calibration import default_calibration
    from facefinder.services.evaluation.demographics import evaluate_demographics

    with errors(), progress() as bar:
        pipeline = _pipeline()
        if threshold is None:
            calibration = default_calibration(pipeline.model_id, resolve_data_dir(state.data_dir))
            threshold, source = calibration.threshold, f"the calibrated default ({calibration.source})"
            if calibration.model_id != pipeline.model_id:
                say(f"warning: no calibration for {pipeline.model_id}: the threshold is {calibration.model_id}'s")
        else:
            source = "--threshold"
        task = bar.add_task("embedding", total=None, faces="", rate="")
        return evaluate_demographics(
            folder,
            pipeline,
            threshold,
            source,
            scheme,
            lambda done, total: bar.update(task, completed=done, total=total),
        )


def _print_labelled(result: dict) -> None:
    """The headline figures as one table on stdout, and what they cannot say on stderr."""
    v, ident = result["verification"], result["identification"]
    table = Table("figure", "value", title=f"{result['folder']} ({result['model_id']})", title_justify="left")
    table.add_row("photos / people", f"{result['photos']} / {result['people']}")
    table.add_row("no face found / unreadable (misses)", f"{result['no_face']} / {result['unreadable']}")
    if v["accuracy_mean"] is not None:
        table.add_row(
            f"verification accuracy, {v['folds']}-fold",
            f"{v['accuracy_mean']:.2%} ± {v['accuracy_std']:.2%} ({v['mated_pairs']} + {v['non_mated_pairs']} pairs)",
        )
    for row in v["tar_at_fmr"]:
        value = "not measured" if row["tar"] is None else f"{row['tar']:.2%} (threshold {row['threshold']:.3f})"
        table.add_row(f"TAR at FMR {row['fmr']:g}", value)
    if ident["closed_set"]:
        closed = ident["closed_set"]
        table.add_row("rank-1 / rank-10", f"{closed['rank1']:.2%} / {closed['rank10']:.2%}")
    if ident["open_set"]:
        open_set = ident["open_set"]
        measured = "" if open_set["fpir_measured"] else " (FPIR not measured)"
        table.add_row(f"threshold at FPIR {open_set['fpir']:g}", f"{open_set['threshold']:.3f}{measured}")
        table.add_row("FNIR at that threshold", f"{open_set['fnir']:.2%}")
    print_table(table)
    for note in result["notes"]:
        say(f"note: {note}")


def _print_demographics(result: dict) -> None:
    """The per-group table on stdout."""
    table = Table(
        "gender",
        "group",
        "faces",
        "pairs",
        "false matches",
        "FMR",
        "95% upper",
        "score at FMR 1e-2",
        "score at FMR 1e-3",
        title=f"FMR at threshold {result['threshold']:.3f}, {result['model_id']}",
        title_justify="left",
    )
    rows = [(g["gender"], g["group"], g) for g in result["groups"]]
    rows += [
        (name, "", result[key])
        for name, key in (
            ("within groups", "within_groups"),
            ("across groups", "across_groups"),
            ("all pairs", "all_pairs"),
        )
    ]
    for first, second, rate in rows:
        table.add_row(
            first,
            second,
            str(rate.get("faces", "")),
            f"{rate['pairs']:,}",
            str(rate["false_matches"]),
            "-" if rate["fmr"] is None else f"{rate['fmr']:.2e}",
            "-" if rate["fmr_upper_95"] is None else f"{rate['fmr_upper_95']:.2e}",
            *(
                "" if rate.get(key) is None else f"{rate[key]:.3f}"
                for key in ("score_at_fmr_0.01", "score_at_fmr_0.001")
            ),
        )
    print_table(table)
    for note in result["notes"]:
        say(f"note: {note}")
