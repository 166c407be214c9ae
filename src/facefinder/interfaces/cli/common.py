"""What every command group shares: global state, the engine, one-line errors, consoles, options and printers."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from facefinder.config import data_dir as resolve_data_dir
from facefinder.errors import (
    DiskFullError,
    FaceFinderError,
    MissingPolicy,
    find_disk_full,
    is_disk_full,
)

if TYPE_CHECKING:
    from facefinder.services.engine import FaceFinder

DATABASE_URL_ENV = "FACEFINDER_DATABASE_URL"

console = Console(stderr=True)  # messages, progress and errors; tables and JSON go to stdout


class State:
    """The global options (`facefinder --data-dir ... COMMAND`), set by the app's callback."""

    data_dir: Optional[Path] = None
    database_url: Optional[str] = None
    vectors: Optional[str] = None
    detector: Optional[str] = None
    recognizer: Optional[str] = None


state = State()


class ServiceOptions:
    """The `--database-url` given to `users` or `audit` (their own option, next to the global one)."""

    database_url: Optional[str] = None


service_options = ServiceOptions()

# ----- options shared by several commands --------------------------------------------------------------
DatabaseUrl = Annotated[
    Optional[str],
    typer.Option(
        "--database-url",
        envvar=DATABASE_URL_ENV,
        help="SQLAlchemy URL of the catalog (e.g. postgresql+psycopg://user@host/db) [default: <data dir>/catalog.db].",
    ),
]
FaceOpt = Annotated[
    Optional[int],
    typer.Option("--face", help="Which face in the photo is the person (0-based), when it shows several."),
]
ThresholdOpt = Annotated[
    Optional[float],
    typer.Option(
        help="Lowest score that counts as the person [default: the strict privacy threshold, see docs/privacy.md]."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
# A catalog id (face, image, person, opt-out): 32-bit in PostgreSQL, so a larger one names nothing and is
# refused as a bad value (exit 2) before the database is asked.
CatalogId = Annotated[int, typer.Argument(min=1, max=2_147_483_647)]
YesOpt = Annotated[bool, typer.Option("--yes", help="Do not ask to confirm.")]
FaceIdsOpt = Annotated[
    Optional[list[int]], typer.Option("--face-id", help="Erase only these listed faces (repeatable), after review.")
]


# ----- errors ------------------------------------------------------------------------------------------
def fail(message: str) -> NoReturn:
    """Print one error line (never wrapped) and exit with status 2."""
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def disk_full_message(exc: BaseException) -> str:
    """The line for a full disk: the DiskFullError raised for it (an ingest's says how many photos
    it stored), even when closing the store failed on top of it; else one naming the data dir."""
    found = find_disk_full(exc)
    return str(found or DiskFullError(resolve_data_dir(state.data_dir)))


@contextmanager
def errors() -> Iterator[None]:
    """A FaceFinderError, or a full disk wherever it surfaces (catalog, index files, audit log), as one
    line and exit status 2."""
    try:
        yield
    except MissingPolicy as exc:
        flags = ", ".join("--" + name.replace("_", "-") for name in exc.missing)
        fail(
            f"collection {exc.collection!r}: a collection needs a purpose, a legal basis and a retention period; "
            f"missing {flags}"
        )
    except FaceFinderError as exc:
        fail(disk_full_message(exc) if is_disk_full(exc) else str(exc))
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        fail(disk_full_message(exc))


# ----- the engine and the catalog's URL ----------------------------------------------------------------
def engine(workers: Optional[int] = None) -> FaceFinder:
    """The FaceFinder for the global options; a bad --vectors or --database-url is one line, whatever the command."""
    from facefinder.services.engine import FaceFinder

    with errors():
        return FaceFinder(
            state.data_dir,
            detector=state.detector,
            recognizer=state.recognizer,
            workers=workers,
            catalog_url=state.database_url,
            vectors=state.vectors,
        )


@contextmanager
def reading() -> Iterator[FaceFinder]:
    """The engine for a command that only reads (collections, failures, search), with one-line errors. On a
    full disk, the index checkpoint that closing it may try to save is skipped: the catalog's journal
    still holds what it would have saved, and the answer needs no space."""
    ff = engine()
    with errors():
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


def local_actor() -> str:
    """Who local commands act as in the audit log: whoever can run them on the data directory already
    holds the whole catalog."""
    return f"local:{getpass.getuser()}"


def catalog_url() -> str:
    """The URL of the catalog that `users` and `audit` open alone (no index, no models): their own
    --database-url, else the global one, else catalog.db in the data directory (made if missing)."""
    url = service_options.database_url or state.database_url
    if not url:
        folder = resolve_data_dir(state.data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{folder / 'catalog.db'}"
    return url


def confirm(question: str, yes: bool) -> None:
    """Ask on stderr before something that cannot be undone, unless --yes was given; no is exit status 1."""
    if not yes and not typer.confirm(question, err=True):
        raise typer.Exit(1)


# ----- output ------------------------------------------------------------------------------------------
def say(message: str) -> None:
    """One message line on stderr, never wrapped or highlighted."""
    console.print(message, highlight=False, soft_wrap=True)


def progress() -> Progress:
    """The ingest's progress bar (on stderr, shown only on a terminal)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[faces]} faces"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rate]}"),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


def short_path(path: str) -> str:
    """A path relative to the working directory when it is below it, for readable tables."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def matches_table(matches: Sequence[Any], title: str) -> None:
    """The faces held that match a person (erasure, opt-out review), as a table on stderr."""
    table = Table("face", "score", "collection", "image", "source", title=title, title_justify="left")
    table.columns[4].overflow = "fold"
    for m in matches:
        table.add_row(str(m.face_id), f"{m.score:.3f}", m.collection, str(m.image_id), m.source)
    Console(stderr=True).print(table)


def print_table(table: Table) -> None:
    """A table on stdout."""
    Console().print(table)
