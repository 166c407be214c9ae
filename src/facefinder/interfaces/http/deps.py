"""The HTTP service's shared parts: config, errors and their JSON shape, rate limits, the Service, auth, CSRF, roles.

Every endpoint but /api/health and the login checks who is calling and what their role and
collection grants allow; anything not allowed is refused (deny by default): 401 when no one is
signed in, 403 when the role or grant does not allow it. Scripts authenticate with an API token
(``Authorization: Bearer ff_...``); the browser with a signed session cookie, and then every
state-changing request must carry the session's CSRF token (``X-CSRF-Token`` header or a
``csrf_token`` form field). Errors always have the shape
``{"error": {"code": ..., "message": ..., "field": ...}}``.

Route modules (and the web UI) depend on ``get_service``, ``current_principal``, ``require_role(*roles)``
or the ``ServiceDep``/``AnyUser``/``Admin``/... aliases; they raise ``ApiError`` or any ``FaceFinderError``.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable

from fastapi import Depends, Request

from facefinder.errors import CatalogError, Conflict, FieldError, ImageError, NotFound
from facefinder.services.server import uploads
from facefinder.services.server.accounts import ROLES, AccessDenied, Accounts, AuthenticationFailed, Principal
from facefinder.services.server.cases import Cases
from facefinder.services.server.jobs import IngestJobs
from facefinder.vision.image import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from facefinder.services.engine import FaceFinder

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SESSION_COOKIE = "ff_session"
SECRET_SETTING = "session_secret"
SECRET_ENV = "FACEFINDER_SECRET_KEY"
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

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers

    def body(self) -> dict:
        """The JSON error body: ``{"error": {"code", "message", "field"}}``."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal",
}
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
        return ApiError(
            status,
            code,
            f"{exc.reason}" + (f": {exc.detail}" if exc.detail else ""),
            getattr(exc, "field", None) or "photo",
        )
    if isinstance(exc, FieldError):
        return ApiError(400, "bad_request", message, exc.field)
    if isinstance(exc, NotFound) or "does not exist" in message or message.startswith("username: no user"):
        return ApiError(404, "not_found", message, field_name if not isinstance(exc, NotFound) else None)
    if (
        isinstance(exc, Conflict)
        or "is taken" in message
        or "already exists" in message
        or (isinstance(exc, CatalogError) and " holds " in message)
    ):
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
                    raise ApiError(
                        429,
                        "rate_limited",
                        f"too many attempts; try again in {retry} s",
                        headers={"Retry-After": str(retry)},
                    )
            for key in keys:
                self._hits[key].append(now)
            if len(self._hits) > 10_000:  # forget idle keys
                for key in [k for k, v in self._hits.items() if not v or now - v[-1] > self.window]:
                    del self._hits[key]


class Service:
    """What the routes work with, built once per app: the engine, accounts, cases, jobs, limits."""

    def __init__(self, finder: FaceFinder, config: ServiceConfig, owns_finder: bool) -> None:
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

    def acting_as(self, who: Principal | str) -> FaceFinder:
        """The engine, auditing under this user (a shallow copy: the same store, models and log)."""
        return self.finder.acting_as(who.username if isinstance(who, Principal) else who)

    def close(self) -> None:
        """Stop the ingest jobs; close the engine when this service opened it."""
        self.jobs.close()
        if self.owns_finder:
            self.finder.close()


# ----- dependencies ----------------------------------------------------------------------------------
def get_service(request: Request) -> Service:
    """The app's Service (a dependency)."""
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
    """Refuse (403 csrf_failed) unless ``submitted`` is this session's CSRF token."""
    expected = request.session.get("csrf")
    if not expected or not submitted or not secrets.compare_digest(str(expected), str(submitted)):
        raise ApiError(403, "csrf_failed", "missing or wrong CSRF token: reload the page and try again")


def sign_in(request: Request, service: Service, username: str, password: str) -> Principal:
    """Check a password (rate-limited per client and per username) and start a fresh session."""
    client = request.client.host if request.client else "unknown"
    service.login_limiter.hit(f"ip:{client}", f"user:{username.lower()}")
    principal = service.accounts.authenticate(username, password)
    request.session.clear()
    request.session.update(uid=principal.id, login_at=int(time.time()), csrf=secrets.token_urlsafe(32))
    return principal


def current_principal(request: Request, service: Annotated[Service, Depends(get_service)]) -> Principal:
    """Who is calling: a Bearer API token, else the browser session (401 when neither)."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthenticated",
                "use 'Authorization: Bearer <API token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = service.accounts.principal_for_token(token.strip())
        request.state.principal = principal
        return principal
    principal = session_principal(request, service)
    if principal is None:
        raise ApiError(401, "unauthenticated", "sign in, or send an API token", headers={"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS:
        check_csrf(request, request.headers.get("x-csrf-token"))
    request.state.principal = principal
    return principal


def require_role(*roles: str) -> Callable[[Principal], Principal]:
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


def safe_filename(name: str | None) -> str:
    """The last part of an uploaded file's name, reduced to safe characters (at most 100)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return base[-100:] or "upload"
