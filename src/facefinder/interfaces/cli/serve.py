"""The `serve` command: the web UI and JSON API in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facefinder.errors import FaceFinderError
from facefinder.interfaces.cli.common import DatabaseUrl, console, fail, state

# The ingest options (what a server-side ingest may read, and how much room uploads may take).
ImportRoot = Annotated[
    Optional[list[Path]],
    typer.Option("--import-root", help="A server folder admins may ingest from (repeatable); default: none."),
]
ImportRootFor = Annotated[
    Optional[list[str]],
    typer.Option(
        "--import-root-for",
        metavar="COLLECTION=DIR",
        help="A server folder bound to one collection: users who may ingest into it may ingest from DIR (repeatable).",
    ),
]
UploadQuotaGb = Annotated[
    float, typer.Option(min=0, help="Room for all uploads together (<data dir>/uploads), in GiB.")
]
MaxUnpackRatio = Annotated[
    int, typer.Option(min=1, help="An uploaded archive may unpack to at most this many times its size.")
]

# Who may say where a request came from (the address rate limits and the audit log use).
ForwardedAllowIps = Annotated[
    str,
    typer.Option(
        "--forwarded-allow-ips",
        metavar="IP[,IP]",
        help="Reverse proxies (IPs or networks) whose X-Forwarded-For gives the client address; default: none.",
    ),
]


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (keep 127.0.0.1 behind a TLS proxy).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    database_url: DatabaseUrl = None,
    import_root: ImportRoot = None,
    import_root_for: ImportRootFor = None,
    upload_quota_gb: UploadQuotaGb = 20,
    max_unpack_ratio: MaxUnpackRatio = 100,
    max_upload_mb: Annotated[int, typer.Option(help="Largest request body (archive upload), in MB.")] = 512,
    max_probe_mb: Annotated[int, typer.Option(help="Largest probe photo, in MB.")] = 20,
    workers: Annotated[int, typer.Option(help="Ingest worker processes (0 = in the server process).")] = 0,
    secure_cookies: Annotated[bool, typer.Option(help="Mark session cookies Secure (when served over HTTPS).")] = False,
    forwarded_allow_ips: ForwardedAllowIps = "",
) -> None:
    """Start the web UI and JSON API (OpenAPI at /api/docs) in one process."""
    import uvicorn

    from facefinder.interfaces.http.app import MiB, ServiceConfig, create_app

    config = ServiceConfig(
        max_upload_bytes=max_upload_mb * MiB,
        max_probe_bytes=max_probe_mb * MiB,
        **_ingest_options(import_root or [], import_root_for or [], upload_quota_gb, max_unpack_ratio),
        ingest_workers=workers,
        secure_cookies=secure_cookies,
        forwarded_allow_ips=[ip.strip() for ip in forwarded_allow_ips.split(",") if ip.strip()],
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


def _ingest_options(import_root: list[Path], import_root_for: list[str], quota_gb: float, ratio: int) -> dict:
    """The ServiceConfig fields of the ingest options, checked: a folder that is not one, or a
    binding that is not COLLECTION=DIR, is one clear line before anything starts."""
    for root in import_root:
        if not root.expanduser().is_dir():
            fail(f"import-root: {root} is not a folder")
    bound: dict[str, list[Path]] = {}
    for pair in import_root_for:
        collection, _, folder = pair.partition("=")
        if not collection.strip() or not folder:
            fail(f"import-root-for: {pair!r} is not COLLECTION=DIR")
        if not Path(folder).expanduser().is_dir():
            fail(f"import-root-for: {folder} is not a folder")
        bound.setdefault(collection.strip(), []).append(Path(folder))
    return {
        "import_roots": list(import_root),
        "collection_import_roots": bound,
        "upload_quota_bytes": int(quota_gb * 1024**3),
        "max_unpack_ratio": ratio,
    }
