"""Ingest jobs: from a server-side path inside an import root, or from an uploaded archive or photo.

Who may use which server folder is services/server/import_roots.py (unbound roots: admins; a root
bound to a collection: whoever may ingest into it, into it only); how much room uploads take is
services/server/uploads.py (``UploadSpace``: 507 once the uploads folder's quota is used up).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from facefinder.errors import FieldError
from facefinder.interfaces.http.deps import ApiError, CanSearch, MiB, Service, ServiceDep, safe_filename
from facefinder.interfaces.http.schemas import ERRORS, ErrorResponse, IngestRequest, JobOut, job_out
from facefinder.services.server import uploads
from facefinder.services.server.accounts import Principal
from facefinder.services.server.import_roots import ImportForbidden, ImportTarget

UPLOAD_SUFFIXES = (
    ".zip",
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tar.xz",
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".gif",
)

router = APIRouter(prefix="/api", responses=ERRORS)


def resolve_import(service: Service, principal: Principal, collection: str, raw: str) -> ImportTarget:
    """A server-side path inside an import root this principal may use for ``collection`` (never
    outside: no traversal; the job is then confined to that root, so no symlink escape either)."""
    try:
        return service.imports.resolve(principal, collection, raw)
    except ImportForbidden as exc:
        raise ApiError(403, "forbidden", str(exc), "path") from None


@router.get("/ingests", response_model=list[JobOut], tags=["ingest"], summary="Ingest jobs (own; admins: all)")
def list_ingests(principal: CanSearch, service: ServiceDep) -> list[JobOut]:
    return [job_out(j) for j in service.jobs.list(principal)]


@router.post(
    "/ingests",
    response_model=JobOut,
    status_code=202,
    tags=["ingest"],
    summary="Start an ingest from a server-side path inside an import root",
)
def start_ingest(body: IngestRequest, principal: CanSearch, service: ServiceDep) -> JobOut:
    service.store.collection(body.collection)
    service.accounts.require_collections(principal, [body.collection])
    target = resolve_import(service, principal, body.collection, body.path)
    return job_out(service.jobs.start(principal, body.collection, target.path, str(target.path), root=target.root))


@router.post(
    "/ingests/upload",
    response_model=JobOut,
    status_code=202,
    tags=["ingest"],
    summary="Start an ingest of an uploaded archive (.zip, .tar[.gz|.bz2|.xz]) or photo",
    responses={507: {"model": ErrorResponse, "description": "The uploads folder's quota is used up"}},
)
def upload_ingest(
    collection: Annotated[str, Form(min_length=1, max_length=200)],
    file: Annotated[UploadFile, File(description="An archive or one photo")],
    principal: CanSearch,
    service: ServiceDep,
) -> JobOut:
    service.store.collection(collection)
    service.accounts.require_collections(principal, [collection])
    name = safe_filename(file.filename)
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        raise FieldError("file", f"upload an archive or a photo ({', '.join(UPLOAD_SUFFIXES)})")
    try:
        with service.jobs.space.claim(_size(file)):  # held while it is written; then it counts as used
            folder = uploads.new_folder(service.finder.data_dir, name)  # in flight until its job ends
            try:
                save_upload(file, folder / name, service.config.max_upload_bytes)
                return job_out(service.jobs.start(principal, collection, folder / name, f"upload:{name}", upload=True))
            except BaseException:  # no job will run: what arrived is zeroed and removed now
                uploads.scrub_tree(folder)
                raise
    except uploads.QuotaExceeded as exc:
        raise ApiError(507, "insufficient_storage", str(exc), "file") from None


def _size(file: UploadFile) -> int:
    """The uploaded file's size (it has arrived whole, spooled by the server, before the route runs)."""
    file.file.seek(0, os.SEEK_END)
    size = file.file.tell()
    file.file.seek(0)
    return size


def save_upload(file: UploadFile, target: Path, cap: int) -> None:
    """Write the uploaded file to ``target``, at most ``cap`` bytes (413 beyond; 400 when empty)."""
    written = 0
    with open(target, "wb") as out:
        while chunk := file.file.read(MiB):
            written += len(chunk)
            if written > cap:
                raise ApiError(413, "too_large", f"uploads are capped at {cap:,} bytes", "file")
            out.write(chunk)
    if written == 0:
        raise FieldError("file", "the upload is empty")


@router.get("/ingests/{job_id}", response_model=JobOut, tags=["ingest"], summary="Progress of an ingest job")
def get_ingest(job_id: str, principal: CanSearch, service: ServiceDep) -> JobOut:
    return job_out(service.jobs.get(principal, job_id))
