"""The HTTP service: a JSON API (OpenAPI at /api/openapi.json, docs at /api/docs) and the web UI.

    app = create_app("~/.facefinder")                       # embedded SQLite
    app = create_app(catalog_url="postgresql+psycopg://...") # the same app on PostgreSQL

Every endpoint but /api/health and the login checks who is calling and what their role and
collection grants allow; anything not allowed is refused (deny by default): 401 when no one is
signed in, 403 when the role or grant does not allow it. Scripts authenticate with an API token
(``Authorization: Bearer ff_...``); the browser with a signed session cookie, and then every
state-changing request must carry the session's CSRF token (``X-CSRF-Token`` header or a
``csrf_token`` form field). Errors always have the shape
``{"error": {"code": ..., "message": ..., "field": ...}}``.

Reusable dependencies for other routers (e.g. ``interfaces/api_privacy.py``): ``get_service``,
``current_principal``, ``require_role(*roles)``; raise ``ApiError`` or any ``FaceFinderError``.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from facefinder import __version__
from facefinder.errors import CatalogError, Conflict, FaceFinderError, ImageError, NotFound
from facefinder.services.accounts import ROLES, AccessDenied, Accounts, AuthenticationFailed, Principal
from facefinder.services.audit import as_dict as audit_as_dict, export_csv
from facefinder.services.cases import Cases, FieldError
from facefinder.services.jobs import IngestJobs
from facefinder.services import uploads
from facefinder.storage.catalog import CaseCandidate, CaseSearch
from facefinder.vision.image import DEFAULT_MAX_PIXELS

log = logging.getLogger("facefinder.api")

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SESSION_COOKIE = "ff_session"
SECRET_SETTING = "session_secret"
SECRET_ENV = "FACEFINDER_SECRET_KEY"
UPLOAD_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".jpg", ".jpeg", ".png", ".webp",
                   ".bmp", ".tif", ".tiff", ".gif")
MiB = 1024 * 1024


# ----- configuration -------------------------------------------------------------------------------
@dataclass
class ServiceConfig:
    """Limits and switches of one running service (``facefinder serve`` options map onto these)."""

    max_upload_bytes: int = 512 * MiB  # any request body (archives are the big ones)
    max_probe_bytes: int = 20 * MiB  # one probe photo
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb guard for probes and shown photos
    login_rate: tuple[int, float] = (10, 300.0)  # attempts per window (seconds), per client and per username
    search_rate: tuple[int, float] = (30, 60.0)  # probe analyses + searches per window, per user
    import_roots: list[Path] = field(default_factory=list)  # server-side folders ingests may read from
    session_max_age: int = 8 * 3600  # seconds a browser session lasts after sign-in
    secure_cookies: bool = False  # set when served over HTTPS (behind a TLS proxy)
    secret_key: str | None = None  # signs session cookies; default: $FACEFINDER_SECRET_KEY or one kept in the catalog
    ingest_workers: int = 0  # 0: ingest in the server process, sharing its loaded models


# ----- errors ----------------------------------------------------------------------------------------
class ApiError(Exception):
    """An error with an HTTP status and the stable JSON shape."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code: unauthenticated, forbidden, csrf_failed, "
                                  "not_found, conflict, invalid, bad_request, bad_image, too_large, "
                                  "rate_limited, method_not_allowed, internal")
    message: str
    field: str | None = Field(None, description="The request field the error is about, when there is one")


class ErrorResponse(BaseModel):
    error: ErrorDetail


STATUS_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "too_large",
                415: "unsupported_media_type", 422: "invalid", 429: "rate_limited", 500: "internal"}
_FIELD_PREFIX = re.compile(r"^([a-z_]{2,40}): ")


def api_error_for(exc: Exception) -> ApiError:
    """Map a service exception onto an HTTP status and error code."""
    if isinstance(exc, ApiError):
        return exc
    message = str(exc)
    field_name = getattr(exc, "field", None)
    if field_name is None:
        match = _FIELD_PREFIX.match(message)
        field_name = match.group(1) if match else None
    if isinstance(exc, AuthenticationFailed):
        return ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, AccessDenied):
        return ApiError(403, "forbidden", message)
    if isinstance(exc, ImageError):  # its message starts with the file's name, never a field's: "photo"
        status, code = (413, "too_large") if exc.reason == "too-large" else (400, "bad_image")
        return ApiError(status, code, f"{exc.reason}" + (f": {exc.detail}" if exc.detail else ""),
                        getattr(exc, "field", None) or "photo")
    if isinstance(exc, FieldError):
        return ApiError(400, "bad_request", message, exc.field)
    if isinstance(exc, NotFound) or "does not exist" in message or message.startswith("username: no user"):
        return ApiError(404, "not_found", message, field_name if not isinstance(exc, NotFound) else None)
    if isinstance(exc, Conflict) or "is taken" in message or "already exists" in message or (
            isinstance(exc, CatalogError) and " holds " in message):
        return ApiError(409, "conflict", message, field_name)
    return ApiError(400, "bad_request", message, field_name)


# ----- the service objects ---------------------------------------------------------------------------
class RateLimiter:
    """Sliding-window counter per key, in memory (one server process)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, *keys: str) -> None:
        """Count one attempt under every key; raises 429 when any key is over its limit."""
        now = time.monotonic()
        with self._lock:
            for key in keys:
                hits = self._hits[key]
                while hits and now - hits[0] > self.window:
                    hits.popleft()
                if len(hits) >= self.limit:
                    retry = max(1, int(self.window - (now - hits[0])) + 1)
                    raise ApiError(429, "rate_limited", f"too many attempts; try again in {retry} s",
                                   headers={"Retry-After": str(retry)})
            for key in keys:
                self._hits[key].append(now)
            if len(self._hits) > 10_000:  # forget idle keys
                for key in [k for k, v in self._hits.items() if not v or now - v[-1] > self.window]:
                    del self._hits[key]


class Service:
    """What the routes work with, built once per app: the engine, accounts, cases, jobs, limits."""

    def __init__(self, finder, config: ServiceConfig, owns_finder: bool) -> None:
        self.finder, self.config, self.owns_finder = finder, config, owns_finder
        self.store, self.audit, self.catalog = finder.store, finder.audit, finder.store.catalog
        self.accounts = Accounts(self.catalog, self.audit)
        self.cases = Cases(self.store, lambda: finder.pipeline, self.accounts, self.audit, config.max_pixels)
        self.jobs = IngestJobs(self.store, self.accounts, self.audit, self.acting_as)
        self.login_limiter = RateLimiter(*config.login_rate)
        self.search_limiter = RateLimiter(*config.search_rate)
        self.uploads_dir = uploads.uploads_dir(finder.data_dir)
        self.import_roots = [Path(r).expanduser().resolve() for r in config.import_roots]
        self.secret_key = config.secret_key or os.environ.get(SECRET_ENV) or self._stored_secret()

    def _stored_secret(self) -> str:
        secret = self.catalog.get_setting(SECRET_SETTING)
        if secret is None:
            with self.catalog.session() as session, session.begin():
                self.catalog.set_setting(session, SECRET_SETTING, secrets.token_urlsafe(48))
            secret = self.catalog.get_setting(SECRET_SETTING)
        return secret

    def acting_as(self, who: Principal | str):
        """The engine, auditing under this user (a shallow copy: the same store, models and log)."""
        view = copy.copy(self.finder)
        view.actor = who.username if isinstance(who, Principal) else who
        if hasattr(view, "_privacy"):
            view._privacy = None  # bound to the engine it was made for: make a fresh one for this actor
        return view

    def close(self) -> None:
        self.jobs.close()
        if self.owns_finder:
            self.finder.close()


# ----- dependencies ----------------------------------------------------------------------------------
def get_service(request: Request) -> Service:
    return request.app.state.service


def session_principal(request: Request, service: Service) -> Principal | None:
    """The principal of a valid browser session, or None."""
    session = request.session
    user_id, login_at = session.get("uid"), session.get("login_at", 0)
    if user_id is None:
        return None
    if time.time() - float(login_at) > service.config.session_max_age:
        session.clear()
        return None
    try:
        return service.accounts.principal(int(user_id))
    except (AuthenticationFailed, ValueError, TypeError):
        session.clear()
        return None


def csrf_token(request: Request) -> str:
    """This browser session's CSRF token (created on first use, also before sign-in)."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get("csrf")
    if not expected or not submitted or not secrets.compare_digest(str(expected), str(submitted)):
        raise ApiError(403, "csrf_failed", "missing or wrong CSRF token: reload the page and try again")


def current_principal(request: Request, service: Annotated[Service, Depends(get_service)]) -> Principal:
    """Who is calling: a Bearer API token, else the browser session (401 when neither)."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthenticated", "use 'Authorization: Bearer <API token>'",
                           headers={"WWW-Authenticate": "Bearer"})
        principal = service.accounts.principal_for_token(token.strip())
        request.state.principal = principal
        return principal
    principal = session_principal(request, service)
    if principal is None:
        raise ApiError(401, "unauthenticated", "sign in, or send an API token",
                       headers={"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS:
        check_csrf(request, request.headers.get("x-csrf-token"))
    request.state.principal = principal
    return principal


def require_role(*roles: str):
    """A dependency: the current principal, who must hold one of ``roles`` (403 otherwise)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        principal.require(*roles)
        return principal

    dependency.__name__ = f"require_{'_or_'.join(roles)}"
    return dependency


ServiceDep = Annotated[Service, Depends(get_service)]
AnyUser = Annotated[Principal, Depends(current_principal)]
Admin = Annotated[Principal, Depends(require_role("admin"))]
CanSearch = Annotated[Principal, Depends(require_role("admin", "investigator"))]
Reader = Annotated[Principal, Depends(require_role("admin", "investigator", "auditor"))]
Auditor = Annotated[Principal, Depends(require_role("auditor"))]


# ----- models ----------------------------------------------------------------------------------------
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
    state: Literal["queued", "running", "done", "failed"]
    done: int
    total: int
    faces: int
    failures: int
    report: dict | None
    error: str | None
    created_at: str
    finished_at: str | None


class DeletedOut(BaseModel):
    deleted: str
    faces: int | None = None


class SettingsOut(BaseModel):
    categories: list[str]
    probe_retention_days: int = Field(description="Days a probe photo is kept with its search; 0 = never kept")


class SettingsUpdate(BaseModel):
    categories: list[Annotated[str, Field(max_length=100)]] | None = Field(None, max_length=100)
    probe_retention_days: int | None = Field(None, ge=0, le=3650)


class ProbeFaceOut(BaseModel):
    face: int
    box: list[float]
    quality: float


class ProbeOut(BaseModel):
    probe_id: str = Field(description="Refer to this probe in POST /api/searches (held in memory for 30 min)")
    sha256: str
    width: int
    height: int
    faces: list[ProbeFaceOut]


class SearchRequest(BaseModel):
    probe_id: str = Field(min_length=1, max_length=100)
    face: int = Field(0, ge=0, le=10_000, description="Which face of the probe to search")
    case_id: str = Field(min_length=1, max_length=200, description="Case number")
    purpose: str = Field(min_length=1, max_length=2000, description="Why this search is run")
    category: str = Field(min_length=1, max_length=100, description="One of the configured categories")
    collections: list[Name] | None = Field(None, max_length=100, description="Default: every granted collection")
    top_k: int = Field(10, ge=1, le=100)
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="Default: the calibrated threshold")


class CandidateOut(BaseModel):
    rank: int
    face_id: int
    image_id: int
    collection: str
    score: float = Field(description="Cosine similarity, -1..1")
    false_match_rate: float = Field(description="Share of different-person pairs scoring at least this high")
    band: str = Field(description="strong / possible / weak")
    status: Literal["candidate", "proposed", "confirmed"]
    proposed_by: str | None
    proposed_at: UtcDatetime | None
    proposed_note: str | None
    confirmed_by: str | None
    confirmed_at: UtcDatetime | None
    confirmed_note: str | None
    erased_at: UtcDatetime | None = Field(None, description="When the candidate's face was erased; its thumbnail "
                                                            "is then a placeholder saying so")


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
    probe_kept: bool = Field(description="Whether the probe photo itself is kept (per the retention setting)")
    probe_erased_at: UtcDatetime | None = Field(None, description="When the probe's person was erased: the probe "
                                                                  "thumbnail is then a placeholder saying so")
    collections: list[str]
    top_k: int
    threshold: float
    model_id: str
    candidates: list[CandidateOut]


class LeadNote(BaseModel):
    note: str = Field("", max_length=4000)


class ResultOut(BaseModel):
    search_id: int
    case_id: str
    candidate: CandidateOut
    available: bool = Field(description="False when the face has since been erased from the catalog")
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


def user_out(user, grants: dict[str, list[str]]) -> UserOut:
    return UserOut(id=user.id, username=user.username, role=user.role, active=user.active,
                   created_at=user.created_at, grants=grants.get(user.username, []))


def candidate_out(c: CaseCandidate) -> CandidateOut:
    return CandidateOut(rank=c.rank, face_id=c.face_id, image_id=c.image_id, collection=c.collection, score=c.score,
                        false_match_rate=c.false_match_rate, band=c.band, status=c.status,
                        proposed_by=c.proposed_by, proposed_at=c.proposed_at, proposed_note=c.proposed_note,
                        confirmed_by=c.confirmed_by, confirmed_at=c.confirmed_at, confirmed_note=c.confirmed_note,
                        erased_at=c.erased_at)


def search_out(s: CaseSearch) -> SearchOut:
    return SearchOut(id=s.id, at=s.at, username=s.username, case_id=s.case_id, purpose=s.purpose,
                     category=s.category, probe_sha256=s.probe_sha256, probe_face=s.probe_face,
                     probe_box=s.probe_box, probe_quality=s.probe_quality, probe_kept=s.probe_photo is not None,
                     probe_erased_at=s.probe_erased_at,
                     collections=s.collections, top_k=s.top_k, threshold=s.threshold, model_id=s.model_id,
                     candidates=[candidate_out(c) for c in s.candidates])


JPEG = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG image"}}


def jpeg(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


# ----- API routes -----------------------------------------------------------------------------------
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 422, 429)}
router = APIRouter(prefix="/api", responses=ERRORS)


@router.get("/health", tags=["service"], summary="Liveness (no sign-in needed)")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


# -- sign-in and tokens
@router.post("/session", response_model=SessionOut, tags=["accounts"], summary="Sign in (sets the session cookie)")
def login(body: LoginRequest, request: Request, service: ServiceDep) -> SessionOut:
    principal = sign_in(request, service, body.username, body.password)
    grants = service.accounts.grants()
    user = next(u for u in service.accounts.users() if u.id == principal.id)
    return SessionOut(user=user_out(user, grants), csrf_token=request.session["csrf"])


def sign_in(request: Request, service: Service, username: str, password: str) -> Principal:
    """Check a password (rate-limited per client and per username) and start a fresh session."""
    client = request.client.host if request.client else "unknown"
    service.login_limiter.hit(f"ip:{client}", f"user:{username.lower()}")
    principal = service.accounts.authenticate(username, password)
    request.session.clear()
    request.session.update(uid=principal.id, login_at=int(time.time()), csrf=secrets.token_urlsafe(32))
    return principal


@router.delete("/session", tags=["accounts"], summary="Sign out")
def logout(request: Request, principal: AnyUser, service: ServiceDep) -> dict[str, bool]:
    request.session.clear()
    service.audit.record(principal.username, "logout")
    return {"signed_out": True}


@router.get("/me", response_model=MeOut, tags=["accounts"], summary="Who am I, what may I search")
def me(principal: AnyUser, service: ServiceDep) -> MeOut:
    return MeOut(id=principal.id, username=principal.username, role=principal.role,
                 collections=service.accounts.allowed_collections(principal),
                 categories=service.cases.settings().categories)


@router.get("/tokens", response_model=list[TokenOut], tags=["accounts"], summary="My API tokens")
def list_tokens(principal: AnyUser, service: ServiceDep) -> list[TokenOut]:
    return [TokenOut(id=t.id, name=t.name, created_at=t.created_at, last_used_at=t.last_used_at)
            for t in service.accounts.tokens(principal)]


@router.post("/tokens", response_model=TokenCreated, status_code=201, tags=["accounts"],
             summary="Create an API token for myself (shown once)")
def create_token(body: TokenCreate, principal: AnyUser, service: ServiceDep) -> TokenCreated:
    return TokenCreated(name=body.name, token=service.accounts.create_token(principal, body.name))


@router.delete("/tokens/{token_id}", tags=["accounts"], summary="Revoke one of my tokens (admins: anyone's)")
def revoke_token(token_id: DbId, principal: AnyUser, service: ServiceDep) -> dict[str, int]:
    service.accounts.revoke_token(principal, token_id)
    return {"revoked": token_id}


# -- accounts (admin)
@router.get("/users", response_model=list[UserOut], tags=["accounts"], summary="All users with their grants")
def list_users(admin: Admin, service: ServiceDep) -> list[UserOut]:
    grants = service.accounts.grants()
    return [user_out(u, grants) for u in service.accounts.users()]


@router.post("/users", response_model=UserOut, status_code=201, tags=["accounts"], summary="Create a user")
def create_user(body: UserCreate, admin: Admin, service: ServiceDep) -> UserOut:
    principal = service.accounts.add_user(body.username, body.password, body.role, by=admin.username)
    user = next(u for u in service.accounts.users() if u.id == principal.id)
    return user_out(user, {})


def _user(service: Service, username: str):
    user = next((u for u in service.accounts.users() if u.username == username), None)
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    return user


@router.patch("/users/{username}", response_model=UserOut, tags=["accounts"], summary="Enable or disable a user")
def update_user(username: str, body: UserUpdate, admin: Admin, service: ServiceDep) -> UserOut:
    _user(service, username)
    if username == admin.username and not body.active:
        raise ApiError(409, "conflict", "you cannot disable your own account", "active")
    service.accounts.set_active(admin, username, body.active)
    return user_out(_user(service, username), service.accounts.grants())


@router.put("/users/{username}/grants/{collection}", response_model=UserOut, tags=["accounts"],
            summary="Grant a user a collection")
def add_grant(username: str, collection: str, admin: Admin, service: ServiceDep) -> UserOut:
    service.accounts.grant(admin, username, collection, allow=True)
    return user_out(_user(service, username), service.accounts.grants())


@router.delete("/users/{username}/grants/{collection}", response_model=UserOut, tags=["accounts"],
               summary="Take a collection grant away")
def remove_grant(username: str, collection: str, admin: Admin, service: ServiceDep) -> UserOut:
    service.accounts.grant(admin, username, collection, allow=False)
    return user_out(_user(service, username), service.accounts.grants())


# -- settings (admin)
@router.get("/settings", response_model=SettingsOut, tags=["settings"], summary="Search categories, retention")
def get_settings(admin: Admin, service: ServiceDep) -> SettingsOut:
    s = service.cases.settings()
    return SettingsOut(categories=s.categories, probe_retention_days=s.probe_retention_days)


@router.put("/settings", response_model=SettingsOut, tags=["settings"], summary="Change categories or retention")
def put_settings(body: SettingsUpdate, admin: Admin, service: ServiceDep) -> SettingsOut:
    s = service.cases.update_settings(admin, body.categories, body.probe_retention_days)
    return SettingsOut(categories=s.categories, probe_retention_days=s.probe_retention_days)


# -- collections
def collections_for(principal: Principal, service: Service) -> list[CollectionOut]:
    infos = service.store.collections()
    if principal.role == "investigator":
        allowed = set(service.accounts.allowed_collections(principal))
        infos = [c for c in infos if c.name in allowed]
    return [CollectionOut(name=c.name, description=c.description, purpose=getattr(c, "purpose", None),
                          legal_basis=getattr(c, "legal_basis", None), retention_days=getattr(c, "retention_days", None),
                          model_id=c.model_id, images=c.images, faces=c.faces, failures=c.failures) for c in infos]


@router.get("/collections", response_model=list[CollectionOut], tags=["collections"],
            summary="Collections with counts (investigators: the granted ones)")
def list_collections(principal: Reader, service: ServiceDep) -> list[CollectionOut]:
    return collections_for(principal, service)


@router.post("/collections", response_model=CollectionOut, status_code=201, tags=["collections"],
             summary="Create an empty collection")
def create_collection(body: CollectionCreate, admin: Admin, service: ServiceDep) -> CollectionOut:
    name = body.name.strip()
    if not name:
        raise FieldError("name", "a name is required")
    if any(c.name == name for c in service.store.collections()):
        raise ApiError(409, "conflict", f"collection {name!r} already exists", "name")
    service.acting_as(admin).create_collection(name, purpose=body.purpose, legal_basis=body.legal_basis,
                                               retention_days=body.retention_days, description=body.description)
    return next(c for c in collections_for(admin, service) if c.name == name)


@router.delete("/collections/{name}", response_model=DeletedOut, tags=["collections"],
               summary="Erase a collection and every face in it")
def delete_collection(name: str, admin: Admin, service: ServiceDep) -> DeletedOut:
    service.acting_as(admin).delete_collection(name)
    return DeletedOut(deleted=f"collection {name}")


@router.get("/collections/{name}/failures", response_model=list[FailureOut], tags=["collections"],
            summary="Files an ingest could not use, and why")
def collection_failures(name: str, principal: CanSearch, service: ServiceDep) -> list[FailureOut]:
    service.store.collection(name)
    service.accounts.require_collections(principal, [name])
    return [FailureOut(source=f.source, reason=f.reason, detail=f.detail) for f in service.finder.failures(name)]


@router.delete("/images/{image_id}", response_model=DeletedOut, tags=["collections"],
               summary="Erase one photo and its faces")
def delete_image(image_id: DbId, admin: Admin, service: ServiceDep) -> DeletedOut:
    faces = service.acting_as(admin).delete_image(image_id)
    return DeletedOut(deleted=f"image {image_id}", faces=faces)


@router.delete("/faces/{face_id}", response_model=DeletedOut, tags=["collections"], summary="Erase one face")
def delete_face(face_id: DbId, admin: Admin, service: ServiceDep) -> DeletedOut:
    if not service.acting_as(admin).delete_face(face_id):
        raise NotFound(f"face {face_id} does not exist")
    return DeletedOut(deleted=f"face {face_id}", faces=1)


# -- ingest
def resolve_import(service: Service, raw: str) -> Path:
    """A server-side path inside one of the import roots (never outside: no traversal, no symlink escape)."""
    if not service.import_roots:
        raise ApiError(403, "forbidden", "server-side imports are off: start the server with --import-root DIR, "
                                         "or upload an archive", "path")
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


def job_out(job) -> JobOut:
    return JobOut(**job.as_dict())


@router.get("/ingests", response_model=list[JobOut], tags=["ingest"], summary="Ingest jobs (own; admins: all)")
def list_ingests(principal: CanSearch, service: ServiceDep) -> list[JobOut]:
    return [job_out(j) for j in service.jobs.list(principal)]


@router.post("/ingests", response_model=JobOut, status_code=202, tags=["ingest"],
             summary="Start an ingest from a server-side path inside an import root")
def start_ingest(body: IngestRequest, principal: CanSearch, service: ServiceDep) -> JobOut:
    service.store.collection(body.collection)
    service.accounts.require_collections(principal, [body.collection])
    path = resolve_import(service, body.path)
    return job_out(service.jobs.start(principal, body.collection, path, str(path)))


def safe_filename(name: str | None) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return base[-100:] or "upload"


@router.post("/ingests/upload", response_model=JobOut, status_code=202, tags=["ingest"],
             summary="Start an ingest of an uploaded archive (.zip, .tar[.gz|.bz2|.xz]) or photo")
def upload_ingest(collection: Annotated[str, Form(min_length=1, max_length=200)],
                  file: Annotated[UploadFile, File(description="An archive or one photo")],
                  principal: CanSearch, service: ServiceDep) -> JobOut:
    service.store.collection(collection)
    service.accounts.require_collections(principal, [collection])
    name = safe_filename(file.filename)
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        raise FieldError("file", f"upload an archive or a photo ({', '.join(UPLOAD_SUFFIXES)})")
    folder = uploads.new_folder(service.finder.data_dir)  # marked in flight until its job ends
    target = folder / name
    try:
        written = 0
        with open(target, "wb") as out:
            while chunk := file.file.read(MiB):
                written += len(chunk)
                if written > service.config.max_upload_bytes:
                    raise ApiError(413, "too_large",
                                   f"uploads are capped at {service.config.max_upload_bytes:,} bytes", "file")
                out.write(chunk)
        if written == 0:
            raise FieldError("file", "the upload is empty")
        return job_out(service.jobs.start(principal, collection, target, f"upload:{name}", upload=True))
    except BaseException:  # no job will run: what arrived is zeroed and removed now
        uploads.scrub_tree(folder)
        raise


@router.get("/ingests/{job_id}", response_model=JobOut, tags=["ingest"], summary="Progress of an ingest job")
def get_ingest(job_id: str, principal: CanSearch, service: ServiceDep) -> JobOut:
    return job_out(service.jobs.get(principal, job_id))


# -- case-bound search
@router.post("/probes", response_model=ProbeOut, status_code=201, tags=["search"],
             summary="Upload a probe photo: the faces found in it (the photo is not stored)")
def create_probe(photo: Annotated[UploadFile, File(description="The probe photo")], principal: CanSearch,
                 service: ServiceDep) -> ProbeOut:
    service.search_limiter.hit(f"user:{principal.id}")
    data = photo.file.read(service.config.max_probe_bytes + 1)
    if len(data) > service.config.max_probe_bytes:
        raise ApiError(413, "too_large", f"a probe photo is capped at {service.config.max_probe_bytes:,} bytes",
                       "photo")
    probe = service.cases.analyze_probe(principal, data, safe_filename(photo.filename))
    return ProbeOut(probe_id=probe.id, sha256=probe.sha256, width=probe.width, height=probe.height,
                    faces=[ProbeFaceOut(face=i, box=f.box, quality=f.quality) for i, f in enumerate(probe.faces)])


@router.get("/probes/{probe_id}/faces/{face}/thumbnail", response_class=Response, responses=JPEG, tags=["search"],
            summary="The aligned crop of one face of my probe")
def probe_face_thumbnail(probe_id: str, face: int, principal: CanSearch, service: ServiceDep) -> Response:
    probe = service.cases.probes.get(principal, probe_id)
    if not 0 <= face < len(probe.faces):
        raise NotFound(f"probe {probe_id} has no face {face}")
    return jpeg(probe.faces[face].thumbnail)


@router.post("/searches", response_model=SearchOut, status_code=201, tags=["search"],
             summary="Search one probe face for a case: recorded, audited, returns ranked leads")
def create_search(body: SearchRequest, principal: CanSearch, service: ServiceDep) -> SearchOut:
    service.search_limiter.hit(f"user:{principal.id}")
    record = service.cases.search(principal, body.probe_id, body.face, body.case_id, body.purpose, body.category,
                                  body.collections, body.top_k, body.threshold)
    return search_out(record)


@router.get("/searches", response_model=list[SearchOut], tags=["search"],
            summary="Search records I may read, newest first")
def list_searches(principal: Reader, service: ServiceDep,
                  case_id: Annotated[str | None, Query(max_length=200)] = None,
                  username: Annotated[str | None, Query(max_length=100)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[SearchOut]:
    return [search_out(s) for s in service.cases.searches(principal, case_id, username, limit, offset)]


@router.get("/searches/{search_id}", response_model=SearchOut, tags=["search"], summary="One search record")
def get_search(search_id: DbId, principal: Reader, service: ServiceDep) -> SearchOut:
    return search_out(service.cases.get(principal, search_id))


@router.get("/searches/{search_id}/probe/thumbnail", response_class=Response, responses=JPEG, tags=["search"],
            summary="The searched probe face (a placeholder once its person was erased)")
def search_probe_thumbnail(search_id: DbId, principal: CanSearch, service: ServiceDep) -> Response:
    return jpeg(service.cases.probe_thumbnail(principal, search_id))


@router.get("/searches/{search_id}/candidates/{rank}", response_model=ResultOut, tags=["search"],
            summary="Open a result: the candidate and its provenance (audited as a view)")
def get_result(search_id: DbId, rank: Rank, principal: CanSearch, service: ServiceDep) -> ResultOut:
    details = service.cases.candidate_details(principal, search_id, rank)
    record, candidate = service.cases.candidate(principal, search_id, rank)
    return ResultOut(search_id=search_id, case_id=record.case_id, candidate=candidate_out(candidate), **details)


@router.get("/searches/{search_id}/candidates/{rank}/thumbnail", response_class=Response, responses=JPEG,
            tags=["search"], summary="The candidate's face (a placeholder once it was erased or opted out)")
def candidate_thumbnail(search_id: DbId, rank: Rank, principal: CanSearch, service: ServiceDep) -> Response:
    return jpeg(service.cases.candidate_thumbnail(principal, search_id, rank))


@router.get("/searches/{search_id}/candidates/{rank}/photo", response_class=Response, responses=JPEG,
            tags=["search"], summary="The candidate's source photo with the face boxed (audited as a view)")
def candidate_photo(search_id: DbId, rank: Rank, principal: CanSearch, service: ServiceDep) -> Response:
    return jpeg(service.cases.candidate_photo(principal, search_id, rank))


@router.post("/searches/{search_id}/candidates/{rank}/propose", response_model=CandidateOut, tags=["search"],
             summary="Propose a candidate as a lead (a second person confirms)")
def propose_lead(search_id: DbId, rank: Rank, body: LeadNote, principal: CanSearch,
                 service: ServiceDep) -> CandidateOut:
    return candidate_out(service.cases.propose(principal, search_id, rank, body.note))


@router.post("/searches/{search_id}/candidates/{rank}/confirm", response_model=CandidateOut, tags=["search"],
             summary="Confirm a proposed lead, with a note (never the proposer: two-person rule)")
def confirm_lead(search_id: DbId, rank: Rank, body: LeadNote, principal: CanSearch,
                 service: ServiceDep) -> CandidateOut:
    return candidate_out(service.cases.confirm(principal, search_id, rank, body.note))


# -- audit (auditors)
def audit_filters(action: Annotated[str | None, Query(max_length=60)] = None,
                  actor: Annotated[str | None, Query(max_length=100)] = None,
                  case_id: Annotated[str | None, Query(max_length=200)] = None,
                  since: Annotated[str | None, Query(max_length=40, description="ISO 8601 (UTC), inclusive")] = None,
                  until: Annotated[str | None, Query(max_length=40, description="ISO 8601 (UTC), inclusive")] = None,
                  ) -> dict[str, str | None]:
    return {"action": action or None, "actor": actor or None, "case_id": case_id or None,
            "since": since or None, "until": until or None}


AuditFilters = Annotated[dict, Depends(audit_filters)]


@router.get("/audit", response_model=list[AuditEntryOut], tags=["audit"],
            summary="Audit entries, newest first, filtered")
def audit_entries(auditor: Auditor, service: ServiceDep, filters: AuditFilters,
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> list[dict]:
    return [audit_as_dict(e) for e in service.audit.entries(**filters, limit=limit, newest_first=True)]


@router.get("/audit/export", tags=["audit"], response_class=Response,
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
            summary="Export filtered entries as CSV or JSON (the export is itself audited)")
def audit_export(auditor: Auditor, service: ServiceDep, filters: AuditFilters,
                 format: Annotated[Literal["csv", "json"], Query()] = "csv") -> Response:
    entries = service.audit.entries(**filters)
    service.audit.record(auditor.username, "audit.export", format=format, entries=len(entries),
                         filters={k: v for k, v in filters.items() if v})
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if format == "json":
        body, media = json.dumps([audit_as_dict(e) for e in entries], indent=1), "application/json"
    else:
        body, media = export_csv(entries), "text/csv; charset=utf-8"
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="facefinder-audit-{stamp}.{format}"'})


@router.get("/audit/verify", response_model=AuditVerifyOut, tags=["audit"],
            summary="Check the hash chain: every edited, removed or reordered entry")
def audit_verify(auditor: Auditor, service: ServiceDep) -> AuditVerifyOut:
    problems = service.audit.verify()
    head = service.audit.head()
    return AuditVerifyOut(ok=not problems, entries=len(service.audit.entries()),
                          problems=[AuditProblem(entry_id=p.entry_id, problem=p.problem) for p in problems],
                          head=AuditHead(**head))


@router.get("/audit/head", response_model=AuditHead, tags=["audit"],
            summary="The last entry's id and hash: record it elsewhere to pin the log")
def audit_head(auditor: Auditor, service: ServiceDep) -> AuditHead:
    return AuditHead(**service.audit.head())


# ----- middleware ------------------------------------------------------------------------------------
class BodyLimit:
    """Refuses request bodies over a cap: by Content-Length up front, else while streaming."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = True
            if too_big:
                return await self._refuse(scope, send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope, send) -> None:
        error = ApiError(413, "too_large", f"request bodies are capped at {self.max_bytes:,} bytes")
        response = JSONResponse(error.body(), status_code=413, headers={"Connection": "close"})
        await response(scope, _empty_receive, send)


class _BodyTooLarge(Exception):
    pass


async def _empty_receive():
    return {"type": "http.disconnect"}


class SecurityHeaders:
    """Conservative headers on every response: no framing, no sniffing, scripts and styles from us only."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                     b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    ]

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope.get("path", "").startswith("/api/docs")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for key, value in self.HEADERS:
                    if key not in present and not (docs and key == b"content-security-policy"):
                        headers.append((key, value))
                if b"cache-control" not in present and scope.get("path", "").startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


# ----- the app -----------------------------------------------------------------------------------------
def create_app(data_dir: str | os.PathLike | None = None, catalog_url: str | None = None, *,
               config: ServiceConfig | None = None, finder=None, models_dir: str | os.PathLike | None = None,
               detector: str | None = None, recognizer: str | None = None, vectors: str | None = None) -> FastAPI:
    """The service on ``data_dir`` (default: $FACEFINDER_DATA_DIR or ~/.facefinder), its catalog in
    SQLite there or at ``catalog_url`` (e.g. ``postgresql+psycopg://user:pw@host/db``), its vectors in
    FAISS files there or in Milvus (``vectors="milvus://host:19530/namespace"``).

    ``finder`` serves an already open FaceFinder instead (its models stay loaded; tests use this).
    """
    from facefinder.services.engine import FaceFinder

    config = config or ServiceConfig()
    owns = finder is None
    if finder is None:
        finder = FaceFinder(data_dir, models_dir=models_dir, detector=detector, recognizer=recognizer,
                            catalog_url=catalog_url, vectors=vectors, workers=config.ingest_workers)
    service = Service(finder, config, owns_finder=owns)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.cases.purge_expired_probes()
        yield
        service.close()

    app = FastAPI(
        title="facefinder", version=__version__, lifespan=lifespan,
        description="Accountable face search. Results are investigative leads, never an identification. "
                    "Authenticate with `Authorization: Bearer <API token>` (create one with "
                    "`facefinder users token` or POST /api/tokens). Errors: "
                    "`{\"error\": {\"code\", \"message\", \"field\"}}`.",
        openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None,
    )
    app.state.service = service
    app.include_router(router)
    try:  # the privacy features' router, when that module is there
        api_privacy = importlib.import_module("facefinder.interfaces.api_privacy")
    except ModuleNotFoundError as exc:
        if exc.name != "facefinder.interfaces.api_privacy":
            raise
    else:
        if getattr(api_privacy, "router", None) is not None:
            app.include_router(api_privacy.router)
    from facefinder.interfaces.web.pages import mount_web

    mount_web(app)
    _install_error_handlers(app)
    app.add_middleware(SessionMiddleware, secret_key=service.secret_key, session_cookie=SESSION_COOKIE,
                       max_age=config.session_max_age, same_site="strict", https_only=config.secure_cookies)
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    from facefinder.interfaces.web.pages import LoginRequired, html_error, is_page_request

    def respond(request: Request, error: ApiError) -> Response:
        if is_page_request(request):
            return html_error(request, error)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return respond(request, exc)

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError):
        # The database refused a value (PostgreSQL: a NUL character in text, a number out of range).
        return respond(request, ApiError(400, "bad_request", "a value in the request cannot be stored or "
                                                             "compared (a NUL character, a number out of range)"))

    @app.exception_handler(FaceFinderError)
    async def _facefinder_error(request: Request, exc: FaceFinderError):
        return respond(request, api_error_for(exc))

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired):
        return exc.response(request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404:
            message = "no such endpoint or record"
        return respond(request, ApiError(exc.status_code, code, message, headers=getattr(exc, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        location = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header", "cookie")]
        field_name = ".".join(location) or None
        message = str(first.get("msg", "invalid request"))
        if field_name:
            message = f"{field_name}: {message}"
        return respond(request, ApiError(422, "invalid", message, field_name))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return respond(request, ApiError(500, "internal", "internal error (logged on the server)"))
