"""The Pydantic models of the JSON API (requests, responses, the error shape) and the converters that fill them."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, Field

from facefinder.services.server.uploads import display_name

if TYPE_CHECKING:
    from facefinder.services.privacy.service import Erasure
    from facefinder.services.search import Match
    from facefinder.services.server.accounts import UserInfo
    from facefinder.services.server.jobs import IngestJob
    from facefinder.services.server.records import CaseRecord, Lead


# ----- the error shape -------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(
        description="Stable machine-readable code: unauthenticated, forbidden, csrf_failed, "
        "not_found, conflict, invalid, bad_request, bad_image, too_large, "
        "rate_limited, method_not_allowed, internal"
    )
    message: str
    field: str | None = Field(None, description="The request field the error is about, when there is one")


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 422, 429)}
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG image"}}


# ----- accounts, collections, ingest, search, audit ---------------------------------------------------
Name = Annotated[str, Field(min_length=1, max_length=200)]
# Catalog ids are 32-bit integers in PostgreSQL; a larger one cannot name anything.
DbId = Annotated[int, PathParam(ge=1, le=2_147_483_647)]
Rank = Annotated[int, PathParam(ge=1, le=100_000)]
# The catalog stores naive UTC times; the API says so (RFC 3339 with an offset).
UtcDatetime = Annotated[datetime, AfterValidator(lambda d: d if d.tzinfo else d.replace(tzinfo=timezone.utc))]


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    active: bool
    created_at: UtcDatetime
    grants: list[str]


class SessionOut(BaseModel):
    user: UserOut
    csrf_token: str = Field(description="Send as X-CSRF-Token with every state-changing request of this session")


class MeOut(BaseModel):
    id: int
    username: str
    role: str
    collections: list[str] = Field(description="Collections this user may search and ingest into")
    categories: list[str] = Field(description="Search purpose categories")


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$")
    password: str = Field(min_length=10, max_length=1000)
    role: Literal["admin", "investigator", "auditor"]


class UserUpdate(BaseModel):
    active: bool


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1000)
    new_password: str = Field(min_length=10, max_length=1000)


class PasswordChanged(BaseModel):
    changed: bool
    sessions_ended: int = Field(description="Your other browser sessions, signed out by the change")


class PasswordReset(BaseModel):
    username: str
    temporary_password: str = Field(
        description="Shown once: pass it on; the user must choose a new password at their next sign-in"
    )


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class TokenOut(BaseModel):
    id: int
    name: str
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None


class TokenCreated(BaseModel):
    name: str
    token: str = Field(description="Shown once: only its hash is kept")


class CollectionCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^/\\\x00-\x1f]+$")
    description: str = Field("", max_length=2000)
    purpose: str = Field(min_length=1, max_length=2000, description="Why the photos are held")
    legal_basis: str = Field(min_length=1, max_length=2000, description="The legal basis for holding them")
    retention_days: int = Field(ge=1, le=36500, description="Days each photo is kept before purge erases it")


class CollectionOut(BaseModel):
    name: str
    description: str
    purpose: str | None = None
    legal_basis: str | None = None
    retention_days: int | None = None
    model_id: str | None
    images: int
    faces: int
    failures: int


class FailureOut(BaseModel):
    source: str
    reason: str
    detail: str


class IngestRequest(BaseModel):
    collection: Name
    path: str = Field(min_length=1, max_length=4096, description="A folder, archive or photo inside an import root")


class JobOut(BaseModel):
    id: str
    owner: str
    collection: str
    source: str
    state: Literal["queued", "running", "done", "failed", "interrupted"] = Field(
        description="interrupted: the server stopped before the job ended (ingest again to finish it)"
    )
    done: int
    total: int
    faces: int
    failures: int
    report: dict | None
    error: str | None
    created_at: str
    finished_at: str | None
    ingested: int = Field(0, description="Photos stored (once the job is done)")
    duplicates: int = Field(0, description="Photos the collection held already: skipped, nothing kept")
    photos_without_faces: int = Field(0, description="Photos stored in which no face was found")


class DeletedOut(BaseModel):
    deleted: str
    faces: int | None = None


class SettingsOut(BaseModel):
    categories: list[str]
    probe_retention_days: int = Field(description="Days a probe photo is kept with its search; 0 = never kept")


class SettingsUpdate(BaseModel):
    categories: list[Annotated[str, Field(max_length=100)]] | None = Field(None, max_length=100)
    probe_retention_days: int | None = Field(None, ge=0, le=3650)


class CandidateOut(BaseModel):
    rank: int
    face_id: int
    image_id: int
    collection: str
    score: float = Field(description="Cosine similarity, -1..1")
    false_match_rate: float = Field(description="Share of different-person pairs scoring at least this high")
    band: str = Field(description="strong / possible / weak")
    status: Literal["candidate", "proposed", "confirmed", "not_a_match", "near_miss"] = Field(
        description="candidate; a lead proposed, then confirmed by a second person; not_a_match (closed, with "
        "a note); near_miss (below the threshold, shown because near misses were asked for: never a lead)"
    )
    proposed_by: str | None
    proposed_at: UtcDatetime | None
    proposed_note: str | None
    confirmed_by: str | None
    confirmed_at: UtcDatetime | None
    confirmed_note: str | None
    erased_at: UtcDatetime | None = Field(
        None, description="When the candidate's face was erased; its thumbnail is then a placeholder saying so"
    )
    not_a_match_by: str | None = Field(None, description="Who marked it not a match")
    not_a_match_at: UtcDatetime | None = None
    not_a_match_note: str | None = Field(None, description="Why it is not a match (required)")
    withheld: bool = Field(
        False,
        description="The face is still held but its person opted out and the erasure is under review: it is not "
        "shown (a placeholder) and cannot be a lead. Unlike erased_at, nothing was erased yet",
    )
    video_time: float | None = Field(
        None, description="A face from a video: when it was seen, in seconds from the start of the video"
    )
    track: dict[str, float] | None = Field(
        None, description="A face from a video: its face track's span, {start, end} in seconds"
    )


class ProbeSearchOut(BaseModel):
    search_id: int
    face: int = Field(description="Which face of the probe photo that search searched (0-based)")


class SamePersonOut(BaseModel):
    number: int = Field(description="1.. as declared; its thumbnail: /api/searches/{id}/same-person/{number}/thumbnail")
    probe_sha256: str
    face: int
    box: list[float]
    quality: float
    erased_at: UtcDatetime | None = Field(None, description="When its person was erased (a placeholder then)")
    withheld: bool = Field(False, description="Its person opted out and the erasure is under review")


class SearchOut(BaseModel):
    id: int
    at: UtcDatetime
    username: str
    case_id: str
    purpose: str
    category: str
    probe_sha256: str
    probe_face: int
    probe_box: list[float]
    probe_quality: float
    probe_video_time: float | None = Field(
        None, description="A video probe: when the searched face (its track's best) was seen, in seconds"
    )
    probe_kept: bool = Field(description="Whether the probe photo itself is kept (per the retention setting)")
    probe_erased_at: UtcDatetime | None = Field(
        None, description="When the probe's person was erased: the probe thumbnail is then a placeholder saying so"
    )
    collections: list[str]
    top_k: int
    threshold: float
    model_id: str
    candidates: list[CandidateOut]
    probe_withheld: bool = Field(
        False,
        description="The probe face's person opted out and the erasure is under review: its thumbnail is withheld",
    )
    probe_searches: list[ProbeSearchOut] = Field(
        [],
        description="The searches of this probe photo's faces (same sha256) for this case that you may read, this "
        "one included, by face then id: the faces of a group photo searched together, or one after the other",
    )
    same_person: list[SamePersonOut] = Field(
        [], description="A fused search: the other probe faces declared to show the same person (empty otherwise)"
    )


class LeadNote(BaseModel):
    note: str = Field("", max_length=4000)


class ResultOut(BaseModel):
    search_id: int
    case_id: str
    candidate: CandidateOut
    available: bool = Field(
        description="False when the face is not shown: erased (candidate.erased_at), or withheld while its "
        "person's opt-out is reviewed (candidate.withheld)"
    )
    source: str | None = None
    width: int | None = None
    height: int | None = None
    box: list[float] | None = None
    quality: float | None = None
    sha256: str | None = None
    ingested_at: str | None = None
    provenance: dict[str, str | None] | None = None


class AuditEntryOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    case_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditProblem(BaseModel):
    entry_id: int
    problem: str


class AuditHead(BaseModel):
    id: int
    hash: str


class AuditVerifyOut(BaseModel):
    ok: bool
    entries: int
    problems: list[AuditProblem]
    head: AuditHead


# ----- privacy -----------------------------------------------------------------------------------------
class MatchOut(BaseModel):
    face_id: int
    score: float
    false_match_rate: float
    collection: str
    image_id: int
    source: str
    box: list[float]
    quality: float
    provenance: dict[str, str | None]


class PersonMatchesOut(BaseModel):
    probe_sha256: str
    threshold: float
    matches: list[MatchOut]


class ErasureOut(BaseModel):
    faces: int = Field(description="Faces erased")
    images: int = Field(description="Photos erased (rows and provenance)")
    face_ids: list[int]
    image_ids: list[int]


class FaceIds(BaseModel):
    face_ids: list[int] | None = Field(
        None, description="Erase only these listed faces (after review); null: every face that matches now"
    )


class OptOutCreated(BaseModel):
    id: int
    templates: int
    matches: list[MatchOut] = Field(
        description="Faces held now that match: hidden from search at once; review, then POST .../erase"
    )


class OptOutOut(BaseModel):
    id: int
    reference: str
    channel: str
    created_at: Any
    created_by: str
    templates: int
    erased_at: Any | None
    erased_by: str | None


class PublicOptOutOut(BaseModel):
    received: bool
    reference: str = Field(description="Quote this to the operator to follow up")
    message: str


class ConsentIn(BaseModel):
    consent_id: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=1000, description="Who consented")
    scope: str = Field(min_length=1, max_length=4000, description="To what")
    given_at: str = Field(min_length=4, max_length=64, description="When (ISO 8601)")
    collection: str | None = Field(None, max_length=200)


class ConsentOut(BaseModel):
    consent_id: str
    subject: str
    scope: str
    given_at: str
    collection: str | None
    recorded_at: Any
    recorded_by: str
    withdrawn_at: Any | None
    withdrawn_by: str | None
    withdrawal_note: str | None
    images: int


class Withdrawal(BaseModel):
    note: str | None = Field(None, max_length=4000)


class PurgeIn(BaseModel):
    dry_run: bool = False


class PublicForm(BaseModel):
    enabled: bool


class StatusOut(BaseModel):
    threshold: float
    threshold_false_match_rate: float
    optouts: int
    public_optout_form: bool
    collections_without_retention: list[str]


# ----- converters ------------------------------------------------------------------------------------
def user_out(user: UserInfo, grants: dict[str, list[str]]) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        role=user.role,
        active=user.active,
        created_at=user.created_at,
        grants=grants.get(user.username, []),
    )


def candidate_out(c: Lead) -> CandidateOut:
    return CandidateOut.model_validate(c, from_attributes=True)


def search_out(s: CaseRecord) -> SearchOut:
    return SearchOut.model_validate(s, from_attributes=True)


def job_out(job: IngestJob) -> JobOut:
    return JobOut(**job.as_dict())


def matches_out(matches: list[Match], data_dir: Path | str | None = None) -> list[MatchOut]:
    """Matches as the API shows them: with ``data_dir``, an uploaded photo's source by its upload's name."""
    out = [MatchOut(**m.to_dict()) for m in matches]
    if data_dir is not None:
        for m in out:
            m.source = display_name(m.source, data_dir)
    return out


def erasure_out(erasure: Erasure) -> ErasureOut:
    return ErasureOut(
        faces=erasure.faces, images=erasure.images, face_ids=erasure.face_ids, image_ids=erasure.image_ids
    )
