"""The `serve` command: the web UI and JSON API in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facefinder.errors import FaceFinderError
from facefinder.interfaces.cli.common import DatabaseUrl, console, fail, state


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (keep 127.0.0.1 behind a TLS proxy).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    database_url: DatabaseUrl = None,
    import_root: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--import-root", help="A server folder ingests may read from (repeatable); default: none, uploads only."
        ),
    ] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest request body (archive upload), in MB.")] = 512,
    max_probe_mb: Annotated[int, typer.Option(help="Largest probe photo, in MB.")] = 20,
    workers: Annotated[int, typer.Option(help="Ingest worker processes (0 = in the server process).")] = 0,
    secure_cookies: Annotated[bool, typer.Option(help="Mark session cookies Secure (when served over HTTPS).")] = False,
) -> None:
    """Start the web UI and JSON API (OpenAPI at /api/docs) in one process."""
    import uvicorn

    from facefinder.interfaces.http.app import MiB, ServiceConfig, create_app

    for root in import_root or []:
        if not root.expanduser().is_dir():
            fail(f"import-root: {root} is not a folder")
    config = ServiceConfig(
        max_upload_bytes=max_upload_mb * MiB,
        max_probe_bytes=max_probe_mb * MiB,
        import_roots=list(import_root or []),
        ingest_workers=workers,
        secure_cookies=secure_cookies,
    )
    try:
        app = create_app(
            state.data_dir,
            database_url or state.database_url,
            config=config,
            detector=state.detector,
            recognizer=state.recognizer,
            vectors=state.vectors,
        )
    except FaceFinderError as exc:
        fail(str(exc))
    service = app.state.service
    try:
        service.finder.pipeline  # load the models now: a missing model is one clear error, before serving
    except FaceFinderError as exc:
        fail(str(exc))
    if not service.accounts.users():
        console.print(
            "[yellow]no users yet:[/yellow] create the first admin with `facefinder users add NAME --role admin`",
            highlight=False,
        )
    console.print(f"facefinder serving on http://{host}:{port}  (API docs: /api/docs)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False, server_header=False)
