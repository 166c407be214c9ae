"""The admin pages of the web UI, and the page of one ingest job.

* ``/collections/{name}`` (admins): the collection's policy and counts, its photos page by page with
  their faces' thumbnails (all, or only those without a face), its failed files with their reasons,
  erasing a photo, and erasing the whole collection behind a typed confirmation;
* ``/privacy`` (admins): erasure by person (find by photo, review the matches, erase the chosen ones),
  the opt-out list (add, review, erase, remove), consent records (record, withdraw), the retention
  purge (a dry run first) and the subject access report (a download);
* ``/ingests/{id}`` (admins, and the investigator who started it): what an ingest job did: photos
  stored, duplicates, photos without a face, and each failed file with its reason and detail.

Reading is done here, through the services; every action is a call of static/admin.js to the JSON
API (``/api/collections``, ``/api/images``, ``/api/privacy``...), which audits it. Browsing a
collection is audited too (services/server/browse.py).

pages.py registers this module and hands it its renderer and sign-in check (``install``): this
module cannot import pages.py, which imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from facefinder.errors import NotFound
from facefinder.interfaces.http.collections import collections_for
from facefinder.interfaces.http.deps import get_service
from facefinder.services.server import browse
from facefinder.services.server.accounts import Principal

router = APIRouter(include_in_schema=False)
PAGE = 24  # photos per page
FAILURES_PAGE = 50  # failed files per page
_web: dict[str, Callable[..., Any]] = {}


def install(render: Callable[..., Response], page_user: Callable[[Request], Principal]) -> APIRouter:
    """Take pages.py's renderer (base layout, navigation, CSRF token) and its check of the signed-in
    user (a redirect to the sign-in page, or to a forced password change); returns the router."""
    _web.update(render=render, page_user=page_user)
    return router


def _user(request: Request) -> Principal:
    return _web["page_user"](request)


def _admin(request: Request) -> Principal:
    principal = _user(request)
    principal.require("admin")
    return principal


def _ingester(request: Request) -> Principal:
    principal = _user(request)
    principal.require("admin", "investigator")
    return principal


Admin = Annotated[Principal, Depends(_admin)]
Ingester = Annotated[Principal, Depends(_ingester)]
Offset = Annotated[int, Query(ge=0, le=2_147_483_647)]


@router.get("/collections/{name}")
def collection_page(
    request: Request,
    name: str,
    admin: Admin,
    offset: Offset = 0,
    without_faces: bool = False,
    failures_from: Offset = 0,
) -> Response:
    """One collection: its photos with their faces (paged), its failed files (paged), erasure."""
    service = get_service(request)
    info = next((c for c in collections_for(admin, service) if c.name == name), None)
    if info is None:
        raise NotFound(f"collection {name!r} does not exist")
    page = browse.photos(service.store, service.audit, admin, name, offset, PAGE, without_faces)
    failures = browse.shown_failures(service.store, name)
    return _web["render"](
        request,
        "admin_collection.html",
        c=info,
        page=page,
        without_faces=without_faces,
        failures=failures[failures_from : failures_from + FAILURES_PAGE],
        failures_total=len(failures),
        failures_from=failures_from,
        failures_page=FAILURES_PAGE,
    )


@router.get("/privacy")
def privacy_page(request: Request, admin: Admin) -> Response:
    """Erasure by person, the opt-out list, consent records, the purge and subject access."""
    service = get_service(request)
    privacy = service.acting_as(admin).privacy
    return _web["render"](
        request,
        "admin_privacy.html",
        threshold=privacy.threshold,
        public_form=privacy.public_optout_enabled(),
        optouts=privacy.optout_list(),
        consents=privacy.consents(),
        collections=[c.name for c in service.store.collections()],
        unmanaged=[c.name for c in service.store.collections() if not c.retention_days],
        max_photo=service.config.max_probe_bytes,
    )


@router.get("/ingests/{job_id}")
def job_page(request: Request, job_id: str, principal: Ingester) -> Response:
    """What an ingest job did, file by file where something went wrong."""
    service = get_service(request)
    job = service.jobs.get(principal, job_id)
    no_face, no_face_total = browse.without_faces(service.store, job) if job.collection_id else ([], 0)
    report = job.report or {}
    return _web["render"](
        request,
        "ingest_job.html",
        job=job,
        report=report,
        failures=report.get("failures", []),
        no_face=no_face,
        no_face_total=no_face_total,
    )
