"""Ingest jobs: from a server-side path inside an import root, or from an uploaded archive or photo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from facefinder.errors import FieldError
from facefinder.interfaces.http.deps import ApiError, CanSearch, MiB, Service, ServiceDep, safe_filename
from facefinder.interfaces.http.schemas import ERRORS, IngestRequest, JobOut, job_out
from facefinder.services.server import uploads

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


def resolve_import(service: Service, raw: str) -> Path:
    """A server-side path inside one of the import roots (never outside: no traversal, no symlink escape)."""
    if not service.import_roots:
        raise ApiError(
            403,
            "forbidden",
            "server-side imports are off: start the server with --import-root DIR, or upload an archive",
            "path",
        )
    if "\x00" in raw:
        raise FieldError("path", "invalid path")
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        candidate = service.import_roots[0] / candidate
    resolved = candidate.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in service.import_roots):
        raise FieldError("path", f"must be inside an import root ({', '.join(map(str, service.import_roots))})")
    if not resolved.exists():
        raise FieldError("path", "no such file or folder inside the import roots")
    return resolved


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
    path = resolve_import(service, body.path)
    return job_out(service.jobs.start(principal, body.collection, path, str(path)))


@router.post(
    "/ingests/upload",
    response_model=JobOut,
    status_code=202,
    tags=["ingest"],
    summary="Start an ingest of an uploaded archive (.zip, .tar[.gz|.bz2|.xz]) or photo",
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
    folder = uploads.new_folder(service.finder.data_dir)  # marked in flight until its job ends
    target = folder / name
    try:
        save_upload(file, target, service.config.max_upload_bytes)
        return job_out(service.jobs.start(principal, collection, target, f"upload:{name}", upload=True))
    except BaseException:  # no job will run: what arrived is zeroed and removed now
        uploads.scrub_tree(folder)
        raise


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
