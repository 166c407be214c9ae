"""Case-bound search: probe photos, searches and their records, candidates, leads (propose, confirm,
not a match); the probe and search request schemas are here, the record's in schemas.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from facefinder.errors import NotFound
from facefinder.interfaces.http.deps import ApiError, CanSearch, Reader, ServiceDep, safe_filename
from facefinder.interfaces.http.schemas import (
    ERRORS,
    JPEG,
    CandidateOut,
    DbId,
    LeadNote,
    Name,
    Rank,
    ResultOut,
    SearchOut,
    candidate_out,
    search_out,
)

if TYPE_CHECKING:
    from facefinder.services.server.probes import Probe

router = APIRouter(prefix="/api", responses=ERRORS)


class ProbeFaceOut(BaseModel):
    """One face found in a probe photo."""

    face: int
    box: list[float]
    quality: float
    video_time: float | None = Field(None, description="A video probe: when this face (its track's best) was seen")


class ProbeOut(BaseModel):
    """An analysed probe photo, held in memory for its uploader."""

    probe_id: str = Field(description="Refer to this probe in POST /api/searches (held in memory for 30 min)")
    sha256: str
    width: int
    height: int
    faces: list[ProbeFaceOut]


class SamePersonIn(BaseModel):
    """One more face declared to show the same person as the searched probe face."""

    probe_id: str = Field(min_length=1, max_length=100, description="One of my held probes (this one or another)")
    face: int = Field(0, ge=0, le=10_000, description="Which face of that probe")


class SearchRequest(BaseModel):
    """A case search of a held probe face."""

    probe_id: str = Field(min_length=1, max_length=100)
    face: int = Field(0, ge=0, le=10_000, description="Which face of the probe to search")
    case_id: str = Field(min_length=1, max_length=200, description="Case number")
    purpose: str = Field(min_length=1, max_length=2000, description="Why this search is run")
    category: str = Field(min_length=1, max_length=100, description="One of the configured categories")
    collections: list[Name] | None = Field(None, max_length=100, description="Default: every granted collection")
    top_k: int = Field(10, ge=1, le=100)
    threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Default: the calibrated threshold for the faces in the collections searched (it rises with their number)",
    )
    faces: list[Annotated[int, Field(ge=0, le=10_000)]] | None = Field(
        None,
        max_length=100,
        description="Several faces of the probe to search at once, one search record each (`face` is then "
        "not used); the answer is the first face's search, whose `probe_searches` lists them all",
    )
    near_misses: bool = Field(
        False,
        description="Also return the candidates below the threshold, down to the weak band, as near misses "
        "(status `near_miss`: shown, never leads)",
    )
    same_person: list[SamePersonIn] | None = Field(
        None,
        max_length=100,
        description="More faces (of my held probes) declared to show the same person as `face`: one search on "
        "their fused template, each candidate scored by the mean of its cosines to all of them (at most 10; "
        "not with `faces`)",
    )


def jpeg(data: bytes) -> Response:
    """A JPEG answer that no cache keeps."""
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.post(
    "/probes",
    response_model=ProbeOut,
    status_code=201,
    tags=["search"],
    summary="Upload a probe photo: the faces found in it (the photo is not stored)",
)
def create_probe(
    photo: Annotated[UploadFile, File(description="The probe photo")], principal: CanSearch, service: ServiceDep
) -> ProbeOut:
    service.search_limiter.hit(f"user:{principal.id}")
    data = photo.file.read(service.config.max_probe_bytes + 1)
    if len(data) > service.config.max_probe_bytes:
        raise ApiError(
            413, "too_large", f"a probe photo or video is capped at {service.config.max_probe_bytes:,} bytes", "photo"
        )
    return probe_out(service.cases.analyze_probe(principal, data, safe_filename(photo.filename)))


def probe_out(probe: Probe) -> ProbeOut:
    return ProbeOut(
        probe_id=probe.id,
        sha256=probe.sha256,
        width=probe.width,
        height=probe.height,
        faces=[
            ProbeFaceOut(face=i, box=f.box, quality=f.quality, video_time=f.video_time)
            for i, f in enumerate(probe.faces)
        ],
    )


@router.get(
    "/probes/{probe_id}",
    response_model=ProbeOut,
    tags=["search"],
    summary="One of my probes again, while it is held: its faces (e.g. to pick another face after a search)",
)
def get_probe(probe_id: str, principal: CanSearch, service: ServiceDep) -> ProbeOut:
    return probe_out(service.cases.probes.get(principal, probe_id))


@router.get(
    "/probes/{probe_id}/faces/{face}/thumbnail",
    response_class=Response,
    responses=JPEG,
    tags=["search"],
    summary="The aligned crop of one face of my probe",
)
def probe_face_thumbnail(probe_id: str, face: int, principal: CanSearch, service: ServiceDep) -> Response:
    probe = service.cases.probes.get(principal, probe_id)
    if not 0 <= face < len(probe.faces):
        raise NotFound(f"probe {probe_id} has no face {face}")
    return jpeg(probe.faces[face].thumbnail)


@router.post(
    "/searches",
    response_model=SearchOut,
    status_code=201,
    tags=["search"],
    summary="Search one probe face for a case: recorded, audited, returns ranked leads",
)
def create_search(body: SearchRequest, principal: CanSearch, service: ServiceDep) -> SearchOut:
    for _ in body.faces or [body.face]:  # each face searched is a search
        service.search_limiter.hit(f"user:{principal.id}")
    record = service.cases.search(
        principal,
        body.probe_id,
        body.face,
        body.case_id,
        body.purpose,
        body.category,
        body.collections,
        body.top_k,
        body.threshold,
        faces=body.faces,
        near_misses=body.near_misses,
        same_person=[(s.probe_id, s.face) for s in body.same_person] if body.same_person is not None else None,
    )
    return search_out(record)


@router.get(
    "/searches", response_model=list[SearchOut], tags=["search"], summary="Search records I may read, newest first"
)
def list_searches(
    principal: Reader,
    service: ServiceDep,
    case_id: Annotated[str | None, Query(max_length=200)] = None,
    username: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[SearchOut]:
    return [search_out(s) for s in service.cases.searches(principal, case_id, username, limit, offset)]


@router.get("/searches/{search_id}", response_model=SearchOut, tags=["search"], summary="One search record")
def get_search(search_id: DbId, principal: Reader, service: ServiceDep) -> SearchOut:
    return search_out(service.cases.get(principal, search_id))


@router.get(
    "/searches/{search_id}/probe/thumbnail",
    response_class=Response,
    responses=JPEG,
    tags=["search"],
    summary="The searched probe face (a placeholder once its person was erased)",
)
def search_probe_thumbnail(search_id: DbId, principal: CanSearch, service: ServiceDep) -> Response:
    return jpeg(service.cases.probe_thumbnail(principal, search_id))


@router.get(
    "/searches/{search_id}/same-person/{number}/thumbnail",
    response_class=Response,
    responses=JPEG,
    tags=["search"],
    summary="One more probe face of a fused search (a placeholder once its person was erased)",
)
def search_same_person_thumbnail(search_id: DbId, number: Rank, principal: CanSearch, service: ServiceDep) -> Response:
    return jpeg(service.cases.same_person_thumbnail(principal, search_id, number))


@router.get(
    "/searches/{search_id}/candidates/{rank}",
    response_model=ResultOut,
    tags=["search"],
    summary="Open a result: the candidate and its provenance (audited as a view)",
)
def get_result(search_id: DbId, rank: Rank, principal: CanSearch, service: ServiceDep) -> ResultOut:
    details = service.cases.candidate_details(principal, search_id, rank)
    record, candidate = service.cases.candidate(principal, search_id, rank)
    return ResultOut(search_id=search_id, case_id=record.case_id, candidate=candidate_out(candidate), **details)


@router.get(
    "/searches/{search_id}/candidates/{rank}/thumbnail",
    response_class=Response,
    responses=JPEG,
    tags=["search"],
    summary="The candidate's face (a placeholder once it was erased or opted out)",
)
def candidate_thumbnail(search_id: DbId, rank: Rank, principal: CanSearch, service: ServiceDep) -> Response:
    return jpeg(service.cases.candidate_thumbnail(principal, search_id, rank))


@router.get(
    "/searches/{search_id}/candidates/{rank}/photo",
    response_class=Response,
    responses=JPEG,
    tags=["search"],
    summary="The candidate's source photo with the face boxed (audited as a view)",
)
def candidate_photo(search_id: DbId, rank: Rank, principal: CanSearch, service: ServiceDep) -> Response:
    return jpeg(service.cases.candidate_photo(principal, search_id, rank))


@router.get(
    "/searches/{search_id}/candidates/{rank}/clip",
    response_class=Response,
    responses={200: {"content": {"video/mp4": {}}, "description": "An H.264 MP4 clip"}},
    tags=["search"],
    summary="A candidate from a video: the clip from a few seconds before its face was seen (audited as a view)",
)
def candidate_clip(search_id: DbId, rank: Rank, principal: CanSearch, service: ServiceDep) -> Response:
    clip = service.cases.candidate_clip(principal, search_id, rank)
    return Response(clip, media_type="video/mp4", headers={"Cache-Control": "private, no-store"})


@router.post(
    "/searches/{search_id}/candidates/{rank}/propose",
    response_model=CandidateOut,
    tags=["search"],
    summary="Propose a candidate as a lead (a second person confirms)",
)
def propose_lead(
    search_id: DbId, rank: Rank, body: LeadNote, principal: CanSearch, service: ServiceDep
) -> CandidateOut:
    return candidate_out(service.cases.propose(principal, search_id, rank, body.note))


@router.post(
    "/searches/{search_id}/candidates/{rank}/confirm",
    response_model=CandidateOut,
    tags=["search"],
    summary="Confirm a proposed lead, with a note (never the proposer: two-person rule)",
)
def confirm_lead(
    search_id: DbId, rank: Rank, body: LeadNote, principal: CanSearch, service: ServiceDep
) -> CandidateOut:
    return candidate_out(service.cases.confirm(principal, search_id, rank, body.note))


@router.post(
    "/searches/{search_id}/candidates/{rank}/not-a-match",
    response_model=CandidateOut,
    tags=["search"],
    summary="Close a candidate or lead as not a match, with a required note (the proposer withdrawing it, or anyone "
    "else who may act on the search)",
)
def lead_not_a_match(
    search_id: DbId, rank: Rank, body: LeadNote, principal: CanSearch, service: ServiceDep
) -> CandidateOut:
    return candidate_out(service.cases.not_a_match(principal, search_id, rank, body.note))
