"""Photo commands: `ingest`, `search`, `failures`, and `demo` (which runs the first two on the sample photos)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.table import Table

from facefinder.config import data_dir as resolve_data_dir
from facefinder.config import models_dir as resolve_models_dir
from facefinder.errors import FaceFinderError
from facefinder.interfaces.cli.common import (
    console,
    engine,
    errors,
    fail,
    print_table,
    progress,
    reading,
    short_path,
    state,
)

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
DEMO_POLICY = {
    "purpose": "demonstration of facefinder on its bundled sample photos",
    "legal_basis": "sample photos published under the MIT licence (see demo/README.md)",
    "retention_days": 30,
}


def ingest(
    path: Annotated[
        str, typer.Argument(help="A folder (recursive), a .zip / .tar(.gz) archive, one photo, or s3://bucket/prefix.")
    ],
    collection: Annotated[
        str,
        typer.Option(
            "--collection",
            "-c",
            help="Collection to add the photos to (a new one needs --purpose, --legal-basis and --retention-days).",
        ),
    ],
    manifest: Annotated[
        Optional[Path], typer.Option(help="CSV manifest with a 'path' column and provenance fields.")
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(help="Worker processes [default: one per core; 0 = in-process].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    purpose: Annotated[
        Optional[str], typer.Option(help="Why the photos are held (required for a new collection).")
    ] = None,
    legal_basis: Annotated[
        Optional[str], typer.Option(help="The legal basis for holding them (required for a new collection).")
    ] = None,
    retention_days: Annotated[
        Optional[int],
        typer.Option(
            min=1, help="Days each photo is kept before `facefinder purge` erases it (required for a new collection)."
        ),
    ] = None,
    ray: Annotated[
        Optional[str],
        typer.Option(
            help="Analyze on a Ray cluster: 'local' (start one here), 'auto' (this machine's cluster) or ray://head:10001."
        ),
    ] = None,
) -> None:
    """Detect, align, embed and store every face in PATH. Re-run after a crash to resume."""
    with errors(), engine(workers) as ff, progress() as bar:
        report = ff.ingest(
            path,
            collection,
            str(manifest) if manifest else None,
            _progress_updater(bar),
            purpose=purpose,
            legal_basis=legal_basis,
            retention_days=retention_days,
            ray=ray,
        )
    _print_ingest_report(report, as_json)


def _progress_updater(bar: Any) -> Callable[[Any], None]:
    """An ingest progress callback that moves ``bar``, with the photo rate once it means something."""
    task = bar.add_task("ingest", total=None, faces=0, rate="")

    def update(p: Any) -> None:
        elapsed = bar.tasks[task].elapsed or 0
        rate = f"{p.done / elapsed:.1f} photos/s" if elapsed > 0.5 else ""
        bar.update(task, completed=p.done, total=p.total, faces=p.faces, rate=rate)

    return update


def _print_ingest_report(report: Any, as_json: bool = False) -> None:
    """The report as JSON (with the photo rate), or as a summary line and a table of the files that failed."""
    if as_json:
        data = asdict(report)
        data["photos_per_second"] = round(report.photos_per_second, 2)
        print(json.dumps(data, indent=2))
        return
    console.print(
        f"[bold]{report.collection}[/bold]: {report.ingested} photos ingested, {report.faces} faces, "
        f"{report.duplicates} duplicates skipped, {len(report.failures)} failed, "
        f"{report.photos_without_faces} without a face; {report.seconds:.1f} s "
        f"({report.photos_per_second:.1f} photos/s)",
        highlight=False,
    )
    if report.opted_out or report.consent_withdrawn:
        console.print(
            f"skipped {report.opted_out} faces on the opt-out list ({report.opted_out_photos} photos "
            f"entirely) and {report.consent_withdrawn} photos whose consent was withdrawn",
            highlight=False,
        )
    if report.failures:
        table = Table("file", "reason", "detail", title="Files that failed")
        table.columns[0].overflow = "fold"  # the whole path, wrapped, rather than cut short
        for f in report.failures:
            table.add_row(f.source, f.reason, f.detail)
        console.print(table)


def search(
    photos: Annotated[list[Path], typer.Argument(help="Probe photos, or folders of them.")],
    collection: Annotated[
        Optional[list[str]],
        typer.Option("--collection", "-c", help="Search only this collection (repeatable) [default: all]."),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=1000, help="Candidates per probe face.")] = 10,
    threshold: Annotated[
        Optional[float], typer.Option(help="Lowest score reported as a candidate [default: calibrated, see README].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines: one record per probe face.")] = False,
    case: Annotated[Optional[str], typer.Option(help="Case number, written to the audit log.")] = None,
    purpose: Annotated[Optional[str], typer.Option(help="Why this search is run, written to the audit log.")] = None,
    same_person: Annotated[
        bool,
        typer.Option("--same-person", help="PHOTOS all show one person: search them together, as one probe."),
    ] = False,
) -> None:
    """Find every face like the ones in PHOTOS, ranked. Results are leads, not identifications."""
    matched = False
    try:
        with reading() as ff:  # the audit log is written per probe face; nothing else needs space
            for record in ff.iter_search(photos, collection, top_k, threshold, case, purpose, same_person):
                if as_json:
                    print(json.dumps(record.to_dict()), flush=True)
                else:
                    _print_probe(record)
                    matched = matched or record.match
    except FaceFinderError as exc:
        fail(str(exc))
    if matched:
        console.print(
            "score: cosine similarity; FMR: the measured share of different-person pairs that score "
            "this high. These are leads, not identifications.",
            highlight=False,
        )


def _where(path: str, video_time: float | None) -> str:
    """A file, and for a face from a video the moment it was seen: ``file @ mm:ss``."""
    if video_time is None:
        return short_path(path)
    minutes, seconds = divmod(int(video_time), 60)
    return f"{short_path(path)} @ {minutes:02d}:{seconds:02d}"


def _print_probe(record: Any) -> None:
    if record.error:
        console.print(f"[bold]{short_path(record.probe)}[/bold]: [yellow]{record.error}[/yellow]", highlight=False)
        return
    if record.box is None:  # --same-person: several photos searched as one
        title = " + ".join(short_path(p) for p in record.probe.split(" + ")) + " (one person, searched together)"
    else:
        probe = _where(record.probe, getattr(record, "video_time", None))  # a video probe: when the face was seen
        title = f"{probe} face {record.face} at {[round(v) for v in record.box]} (quality {record.quality:.2f})"
    if not record.candidates:
        console.print(f"[bold]{title}[/bold]: no match", highlight=False)
        return
    if not record.match:  # only near misses: a hard probe face (low quality or turned)
        title += ": no match at the threshold; near misses shown (a hard probe face): more likely strangers"
    table = Table("#", "score", "band", "FMR", "collection", "source", "face id", title=title, title_justify="left")
    table.columns[5].overflow = "fold"
    for c in record.candidates:
        table.add_row(
            str(c.rank),
            f"{c.score:.3f}",
            f"{c.band} (near miss)" if getattr(c, "near_miss", False) else c.band,
            f"{c.false_match_rate:.1e}",
            c.collection,
            _where(c.source, c.video_time),
            str(c.face_id),
        )
    print_table(table)


def failures(collection: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Files an ingest into COLLECTION could not use, and why."""
    with reading() as ff:
        rows = [{"source": f.source, "reason": f.reason, "detail": f.detail} for f in ff.failures(collection)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("file", "reason", "detail")
    for r in rows:
        table.add_row(r["source"], r["reason"], r["detail"])
    print_table(table)


def demo() -> None:
    """Fetch the models if needed, ingest the bundled sample gallery, search its probe photos."""
    from facefinder.vision.models import fetch_models, missing_models

    folder = resolve_models_dir(resolve_data_dir(state.data_dir))
    if missing_models(folder):
        fetch_models(folder, log=lambda m: console.print(m, highlight=False))
    gallery, probes = DEMO_DIR / "gallery", DEMO_DIR / "probes"
    console.print(f"[bold]1. ingest[/bold] {gallery} -> collection 'demo'", highlight=False)
    ingest(gallery, "demo", None, None, False, **DEMO_POLICY)
    console.print(f"[bold]2. search[/bold] each photo in {probes}", highlight=False)
    search([probes], ["demo"], 3, None, False, "demo", "facefinder demo")
