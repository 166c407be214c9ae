"""The privacy endpoints (``/api/privacy``): erasure by person, opt-out, consent, purge, subject access.

Admins only, except the public opt-out form (``/api/privacy/public/optout``), which is off until an
admin switches it on (``PUT /api/privacy/public-optout`` or ``facefinder privacy public-optout on``).
Every call is written to the audit log under the caller's name (services/privacy/service.py).

Photos (of a person to find, opt out or report on) are sent as the raw request body, e.g.
``curl --data-binary @me.jpg -H 'Content-Type: image/jpeg'``: the server reads them into memory,
makes the face template and never writes the photo anywhere.
"""

from __future__ import annotations

import secrets
import threading
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from facefinder.errors import FaceFinderError
from facefinder.interfaces.http.deps import (
    Admin,
    ApiError,
    RateLimiter,
    Service,
    ServiceDep,
    client_address,
    get_service,
)
from facefinder.interfaces.http.schemas import (
    ConsentIn,
    ConsentOut,
    DbId,
    ErasureOut,
    FaceIds,
    MatchOut,
    OptOutCreated,
    OptOutOut,
    PersonMatchesOut,
    PublicForm,
    PublicOptOutOut,
    PurgeIn,
    StatusOut,
    Withdrawal,
    erasure_out,
    matches_out,
)
from facefinder.interfaces.web import documents
from facefinder.services.calibration import PRIVACY_FMR
from facefinder.services.privacy.service import Erasure

router = APIRouter(prefix="/api/privacy", tags=["privacy"])
PUBLIC_RATE = (5, 3600.0)  # public opt-out submissions per client address per hour


class ListedOut(MatchOut):
    """A face of the expanded list (services/privacy/expansion.py): a match, with why it is listed."""

    reason: str = Field(description="direct | face (it matches listed faces) | person (grouped with listed faces)")
    via: int | None = Field(None, description="The listed face (face) or person (person) that brought it in")
    link: float | None = Field(None, description="The score against that face (face)")
    support: int = Field(description="How many listed faces (face) or listed members (person) back it")
    step: int = Field(description="The round of growth that listed it; 0 for direct matches")


class ExpandedOut(BaseModel):
    """Step 1 of erasure by person, expanded: the list for review."""

    probe_sha256: str
    threshold: float
    matches: list[ListedOut]


def listed_out(matches: list, service: Service) -> list[ListedOut]:
    """An expanded list as the API shows it (uploads by their name, as ``matches_out`` does)."""
    shown = {m.face_id: m.source for m in matches_out(matches, service.finder.data_dir)}
    return [ListedOut(**{**m.to_dict(), "source": shown[m.face_id]}) for m in matches]


# ----- helpers -----------------------------------------------------------------------------------------
async def photo_body(request: Request, service: Service) -> bytes:
    """The raw request body as a photo, in memory only, capped like a probe photo."""
    limit = service.config.max_probe_bytes
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"a photo is capped at {limit:,} bytes", "photo")
        chunks.append(chunk)
    if not size:
        raise ApiError(
            400, "bad_request", "photo: send the photo as the request body (e.g. Content-Type: image/jpeg)", "photo"
        )
    return b"".join(chunks)


_limiters: dict[int, RateLimiter] = {}
_limiters_lock = threading.Lock()


def public_limiter(service: Service) -> RateLimiter:
    """The public form's rate limiter of this service."""
    with _limiters_lock:
        return _limiters.setdefault(id(service), RateLimiter(*PUBLIC_RATE))


# ----- status and settings ----------------------------------------------------------------------------
@router.get("/status", response_model=StatusOut, summary="Privacy threshold, opt-out list size, public form")
def status(admin: Admin, service: ServiceDep) -> StatusOut:
    privacy = service.acting_as(admin).privacy
    return StatusOut(
        threshold=privacy.threshold,
        threshold_false_match_rate=PRIVACY_FMR,
        optouts=len(privacy.optout_list()),
        public_optout_form=privacy.public_optout_enabled(),
        collections_without_retention=[c.name for c in service.store.collections() if not c.retention_days],
    )


@router.put("/public-optout", response_model=PublicForm, summary="Switch the public opt-out form on or off")
def set_public_optout(body: PublicForm, admin: Admin, service: ServiceDep) -> PublicForm:
    service.acting_as(admin).privacy.set_public_optout(body.enabled)
    return body


# ----- erasure by person --------------------------------------------------------------------------------
@router.post(
    "/persons/find",
    response_model=PersonMatchesOut,
    summary="Step 1 of erasure by person: the faces held that match the photo (body: the photo)",
)
async def find_person(
    request: Request,
    admin: Admin,
    service: ServiceDep,
    face: Annotated[int | None, Query(ge=0, description="Which face, if several")] = None,
    threshold: Annotated[float | None, Query(ge=-1, le=1)] = None,
) -> PersonMatchesOut:
    data = await photo_body(request, service)
    found = await run_in_threadpool(service.acting_as(admin).privacy.find_person, data, face, None, threshold)
    return PersonMatchesOut(
        probe_sha256=found.probe_sha256,
        threshold=found.threshold,
        matches=matches_out(found.matches, service.finder.data_dir),
    )


@router.post(
    "/persons/expand",
    response_model=ExpandedOut,
    summary="Step 1, reaching the whole person: every face likely theirs, each with why (body: the photo)",
)
async def expand_person(
    request: Request,
    admin: Admin,
    service: ServiceDep,
    face: Annotated[int | None, Query(ge=0, description="Which face, if several")] = None,
    threshold: Annotated[float | None, Query(ge=-1, le=1)] = None,
) -> ExpandedOut:
    data = await photo_body(request, service)
    privacy = service.acting_as(admin).privacy
    found = await run_in_threadpool(lambda: privacy.find_person(data, face, None, threshold, expand=True))
    return ExpandedOut(
        probe_sha256=found.probe_sha256, threshold=found.threshold, matches=listed_out(found.matches, service)
    )


@router.post(
    "/persons/erase",
    response_model=ErasureOut,
    summary="Step 2: erase the confirmed faces of the person in the photo (body: the same photo)",
)
async def erase_person(
    request: Request,
    admin: Admin,
    service: ServiceDep,
    face_id: Annotated[list[int], Query(min_length=1, description="The confirmed face ids")],
    face: Annotated[int | None, Query(ge=0)] = None,
    threshold: Annotated[float | None, Query(ge=-1, le=1)] = None,
    expand: Annotated[bool, Query(description="The face ids come from /persons/expand")] = False,
) -> ErasureOut:
    data = await photo_body(request, service)
    privacy = service.acting_as(admin).privacy

    def work() -> Erasure:
        found = privacy.find_person(data, face, None, threshold, expand=expand)
        return privacy.erase_person(found, face_id)

    return erasure_out(await run_in_threadpool(work))


# ----- opt-out --------------------------------------------------------------------------------------------
@router.post(
    "/optouts",
    response_model=OptOutCreated,
    status_code=201,
    summary="Put a person on the opt-out list (body: their photo; only the template is kept)",
)
async def add_optout(
    request: Request,
    admin: Admin,
    service: ServiceDep,
    reference: Annotated[str, Query(max_length=200)] = "",
    face: Annotated[int | None, Query(ge=0)] = None,
) -> OptOutCreated:
    data = await photo_body(request, service)
    result = await run_in_threadpool(service.acting_as(admin).privacy.optout_add, [data], reference, "admin", face)
    return OptOutCreated(
        id=result.id, templates=result.templates, matches=matches_out(result.matches, service.finder.data_dir)
    )


@router.get("/optouts", response_model=list[OptOutOut], summary="The opt-out list")
def list_optouts(admin: Admin, service: ServiceDep) -> list[OptOutOut]:
    return [OptOutOut(**vars(o)) for o in service.acting_as(admin).privacy.optout_list()]


@router.get(
    "/optouts/{optout_id}/matches",
    response_model=list[MatchOut],
    summary="The faces held now that match an opt-out (for review)",
)
def optout_matches(optout_id: DbId, admin: Admin, service: ServiceDep) -> list[MatchOut]:
    return matches_out(service.acting_as(admin).privacy.optout_matches(optout_id), service.finder.data_dir)


@router.get(
    "/optouts/{optout_id}/expanded",
    response_model=list[ListedOut],
    summary="Every face held likely the opted-out person's, each with why (for review)",
)
def optout_expanded(optout_id: DbId, admin: Admin, service: ServiceDep) -> list[ListedOut]:
    return listed_out(service.acting_as(admin).privacy.optout_matches(optout_id, expand=True), service)


@router.post(
    "/optouts/{optout_id}/erase",
    response_model=ErasureOut,
    summary="Erase the held faces that match an opt-out (all, or the reviewed face_ids); with expand=true, "
    "the confirmed face_ids of .../expanded, whose templates then join the opt-out's",
)
def erase_optout(
    optout_id: DbId,
    body: FaceIds,
    admin: Admin,
    service: ServiceDep,
    expand: Annotated[bool, Query(description="The face ids come from .../expanded")] = False,
) -> ErasureOut:
    if expand and not body.face_ids:
        raise ApiError(400, "bad_request", "face_ids: with expand, list the faces a reviewer confirmed", "face_ids")
    return erasure_out(service.acting_as(admin).privacy.optout_erase(optout_id, body.face_ids, expand=expand))


@router.delete(
    "/optouts/{optout_id}",
    response_model=dict[str, int],
    summary="Take a person off the opt-out list (request withdrawn, or a submission rejected)",
)
def remove_optout(
    optout_id: DbId, admin: Admin, service: ServiceDep, note: Annotated[str, Query(max_length=2000)] = ""
) -> dict[str, int]:
    service.acting_as(admin).privacy.optout_remove(optout_id, note)
    return {"removed": optout_id}


# ----- the public opt-out form (off unless switched on) ------------------------------------------------
def _public_enabled(service: Service) -> None:
    if not service.finder.privacy.public_optout_enabled():
        raise ApiError(404, "not_found", "the public opt-out form is not enabled on this server")


@router.post(
    "/public/optout",
    response_model=PublicOptOutOut,
    status_code=202,
    summary="Public: ask to be left out (body: a photo of only you). Off unless enabled.",
)
async def public_optout(request: Request) -> PublicOptOutOut:
    service = get_service(request)
    _public_enabled(service)
    public_limiter(service).hit(f"ip:{client_address(request)}")
    data = await photo_body(request, service)
    reference = "public-" + secrets.token_hex(6)
    privacy = service.acting_as("public-form").privacy
    try:
        await run_in_threadpool(privacy.optout_add, [data], reference, "public", None)
    except FaceFinderError as exc:
        message = str(exc)
        if "faces found" in message:
            message = "the photo shows more than one face: send a photo of only you"
        elif "no face found" in message:
            message = "no face was found in the photo: send a clear, front-facing photo of you"
        raise ApiError(400, "bad_image", message, "photo") from None
    # Nothing is said about what is held: the answer is the same whether or not the person is in a collection.
    return PublicOptOutOut(
        received=True,
        reference=reference,
        message="Your face template is on the opt-out list and your photo was not kept. "
        "Faces of you that are held will be reviewed and erased.",
    )


@router.get("/public/optout", response_class=HTMLResponse, summary="Public: the opt-out form (when enabled)")
def public_optout_page(request: Request) -> HTMLResponse:
    _public_enabled(get_service(request))
    return HTMLResponse(documents.public_optout_html())


@router.get("/public/optout.js", response_class=Response, include_in_schema=False)
def public_optout_script(request: Request) -> Response:
    _public_enabled(get_service(request))
    return Response(documents.public_optout_script(), media_type="text/javascript")


# ----- consent -------------------------------------------------------------------------------------------
@router.get("/consents", response_model=list[ConsentOut], summary="Consent records, with the photos under each")
def list_consents(admin: Admin, service: ServiceDep) -> list[ConsentOut]:
    return [ConsentOut(**{k: v for k, v in vars(c).items()}) for c in service.acting_as(admin).privacy.consents()]


@router.post("/consents", response_model=ConsentOut, status_code=201, summary="Record a consent")
def add_consent(body: ConsentIn, admin: Admin, service: ServiceDep) -> ConsentOut:
    privacy = service.acting_as(admin).privacy
    privacy.consent_record(body.consent_id, body.subject, body.scope, body.given_at, body.collection)
    [record] = privacy.consents(body.consent_id.strip())
    return ConsentOut(**vars(record))


@router.post(
    "/consents/{consent_id}/withdraw",
    response_model=ErasureOut,
    summary="Record a withdrawal and erase every photo under the consent",
)
def withdraw_consent(consent_id: str, body: Withdrawal, admin: Admin, service: ServiceDep) -> ErasureOut:
    return erasure_out(service.acting_as(admin).privacy.consent_withdraw(consent_id, body.note))


# ----- retention ------------------------------------------------------------------------------------------
@router.post("/purge", summary="Erase every photo past its collection's retention period (or a dry run)")
def purge(body: PurgeIn, admin: Admin, service: ServiceDep) -> dict:
    return service.acting_as(admin).privacy.purge(dry_run=body.dry_run).to_dict()


# ----- subject access -------------------------------------------------------------------------------------
@router.post(
    "/access",
    summary="Subject access: what is held on the person in the photo (body: the photo); "
    "the calling admin approves it. format=html for the readable report",
    responses={200: {"content": {"application/json": {}, "text/html": {}}}},
)
async def subject_access(
    request: Request,
    admin: Admin,
    service: ServiceDep,
    face: Annotated[int | None, Query(ge=0)] = None,
    format: Annotated[str, Query(pattern="^(json|html)$")] = "json",
) -> Response:
    data = await photo_body(request, service)
    privacy = service.acting_as(admin).privacy
    report = await run_in_threadpool(privacy.subject_access, data, admin.username, face)
    if format == "html":
        return HTMLResponse(documents.access_report_html(report))
    return JSONResponse(report)
