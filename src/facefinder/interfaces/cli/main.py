"""The `facefinder` Typer app: the global options, one line for a full disk, and every command group registered."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from facefinder.config import DATA_DIR_ENV, DEVICE_ENV
from facefinder.errors import is_disk_full
from facefinder.interfaces.cli import (
    audit,
    check,
    collection,
    delete,
    evaluate,
    models,
    people,
    people_search,  # noqa: F401  (registers `people search` in the people group)
    photos,
    privacy,
    serve,
    users,
)
from facefinder.interfaces.cli.common import console, disk_full_message, state


class _App(typer.Typer):
    """The CLI: a full disk met by any command is one line and exit status 2, never a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            console.print(f"[red]error:[/red] {disk_full_message(exc)}", highlight=False, soft_wrap=True)
            sys.exit(2)


app = _App(
    help="facefinder: self-hosted, accountable face search.", no_args_is_help=True, pretty_exceptions_enable=False
)


@app.callback()
def main(
    data_dir: Annotated[
        Optional[Path],
        typer.Option(envvar=DATA_DIR_ENV, help="Where the catalog, index and models live [default: ~/.facefinder]."),
    ] = None,
    detector: Annotated[
        Optional[str], typer.Option(help="An SCRFD-style ONNX detector to use instead of BlazeFace.")
    ] = None,
    recognizer: Annotated[
        Optional[str], typer.Option(help="An ArcFace-style ONNX recognizer to use instead of MobileFaceNet.")
    ] = None,
    database_url: Annotated[
        Optional[str],
        typer.Option(
            envvar="FACEFINDER_DATABASE_URL",
            help="A PostgreSQL catalog (postgresql+psycopg://...) instead of <data dir>/catalog.db.",
        ),
    ] = None,
    vectors: Annotated[
        Optional[str],
        typer.Option(
            envvar="FACEFINDER_VECTORS",
            help="Where vectors live: 'faiss' (files under the data dir) or milvus://host:19530/namespace.",
        ),
    ] = None,
    device: Annotated[
        Optional[str],
        typer.Option(envvar=DEVICE_ENV, help="Where the models run: cpu (default) or cuda (needs facefinder[gpu])."),
    ] = None,
) -> None:
    # no docstring: the app's help above is the one `facefinder --help` shows
    if device:  # the models read it when they load, in this process and in ingest's workers
        os.environ[DEVICE_ENV] = device
    state.data_dir, state.detector, state.recognizer = data_dir, detector, recognizer
    state.database_url, state.vectors = database_url, vectors


def _register(app: typer.Typer) -> None:
    """Every command and group, in the order `facefinder --help` lists them."""
    for command in (
        photos.ingest,
        photos.search,
        check.check,
        photos.failures,
        photos.demo,
        evaluate.evaluate,
        privacy.purge,
        serve.serve,
    ):
        app.command()(command)
    for group, name in (
        (models.models_app, "models"),
        (delete.delete_app, "delete"),
        (collection.collections_app, "collections"),
        (people.people_app, "people"),
        (privacy.optout_app, "optout"),
        (privacy.consent_app, "consent"),
        (privacy.privacy_app, "privacy"),
        (users.users_app, "users"),
        (audit.audit_app, "audit"),
    ):
        app.add_typer(group, name=name)


_register(app)
