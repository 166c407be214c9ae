"""The HTTP service's shared parts: config, errors and their JSON shape, rate limits, the Service, auth, CSRF, roles.

Every endpoint but /api/health and the login checks who is calling and what their role and
collection grants allow; anything not allowed is refused (deny by default): 401 when no one is
signed in, 403 when the role or grant does not allow it (and the refusal is audited). Scripts
authenticate with an API token (``Authorization: Bearer ff_...``); the browser with a signed session
cookie that carries only a session token (the session itself is in the catalog, so signing out ends
it), and then every state-changing request must carry the session's CSRF token (``X-CSRF-Token``
header or a ``csrf_token`` form field). Failed sign-ins and rejected tokens are audited and limited
per client address (behind a trusted proxy: the address X-Forwarded-For gives). Errors always have
the shape ``{"error": {"code": ..., "message": ..., "field": ...}}``.

Route modules (and the web UI) depend on ``get_service``, ``current_principal``, ``require_role(*roles)``
or the ``ServiceDep``/``AnyUser``/``Admin``/... aliases; they raise ``ApiError`` or any ``FaceFinderError``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
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

from facefinder.errors import CatalogError, Conflict, FaceFinderError, FieldError, ImageError, NotFound
from facefinder.services.server import uploads
from facefinder.services.server.accounts import (
    ROLES,
    AccessDenied,
    Accounts,
    AuthenticationFailed,
    Principal,
    TokenRejected,
    WrongPassword,
)
from facefinder.services.server.cases import Cases
from facefinder.services.server.import_roots import ImportRoots
from facefinder.services.server.jobs import IngestJobs
from facefinder.vision.image import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from facefinder.services.engine import FaceFinder

log = logging.getLogger("facefinder.api")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SESSION_COOKIE = "ff_session"
# What a user whose password an admin reset may still do: see who they are, choose a password, sign out.
PASSWORD_CHANGE_ALLOWED = {("GET", "/api/me"), ("POST", "/api/me/password"), ("DELETE", "/api/session")}
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
    import_roots: list[Path] = field(default_factory=list)  # server folders admins may ingest from
    # --import-root-for COLLECTION=DIR: server folders bound to a collection, open to whoever may ingest into it
    collection_import_roots: dict[str, list[Path]] = field(default_factory=dict)
    upload_quota_bytes: int = 20 * 1024 * MiB  # all of <data dir>/uploads together (services/server/uploads.py)
    max_unpack_ratio: int = 100  # an uploaded archive unpacks to at most this many times its size
    session_max_age: int = 8 * 3600  # seconds a browser session lasts after sign-in
    secure_cookies: bool = False  # set when served over HTTPS (behind a TLS proxy)
    secret_key: str | None = None  # signs session cookies; default: $FACEFINDER_SECRET_KEY or one kept in the catalog
    forwarded_allow_ips: list[str] = field(default_factory=list)  # proxies (IPs, networks) whose X-Forwarded-For counts
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
    """Sliding-window counter per key, in memory (one server process).

    ``hit`` counts every attempt (searches). Sign-in counts only failures: it takes a slot with ``hit``
    before checking the password (so that many attempts at once cannot all slip under the limit) and
    gives it back with ``release`` when the password was right."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, *keys: str) -> float:
        """Count one attempt under every key; raises 429 when any key is over its limit. Returns the
        attempt's stamp (for ``release``)."""
        now = time.monotonic()
        with self._lock:
            self._refuse_if_over(keys, now)
            for key in keys:
                self._hits[key].append(now)
            if len(self._hits) > 10_000:  # forget idle keys
                for key in [k for k, v in self._hits.items() if not v or now - v[-1] > self.window]:
                    del self._hits[key]
        return now

    def release(self, stamp: float, *keys: str) -> None:
        """Take back the attempt ``hit`` counted at ``stamp`` (it did not fail)."""
        with self._lock:
            for key in keys:
                hits = self._hits.get(key)
                if hits is not None and stamp in hits:
                    hits.remove(stamp)

    def clear(self, key: str) -> None:
        """Forget every attempt under a key (a username's failures, once it signed in)."""
        with self._lock:
            self._hits.pop(key, None)

    def _refuse_if_over(self, keys: tuple[str, ...], now: float) -> None:
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


def trusted_networks(addresses: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The proxies whose X-Forwarded-For header is believed (``--forwarded-allow-ips``): IPs or networks."""
    networks = []
    for address in addresses:
        try:
            networks.append(ipaddress.ip_network(address.strip(), strict=False))
        except ValueError:
            raise FaceFinderError(f"forwarded-allow-ips: {address!r} is not an IP address or network") from None
    return networks


class Service:
    """What the routes work with, built once per app: the engine, accounts, cases, jobs, limits."""

    def __init__(self, finder: FaceFinder, config: ServiceConfig, owns_finder: bool) -> None:
        self.finder, self.config, self.owns_finder = finder, config, owns_finder
        self.store, self.audit, self.catalog = finder.store, finder.audit, finder.store.catalog
        self.accounts = Accounts(self.catalog, self.audit, config.session_max_age)
        self.imports = ImportRoots(config.import_roots, config.collection_import_roots)  # who may use which
        self.cases = Cases(
            self.store,
            lambda: finder.pipeline,
            self.accounts,
            self.audit,
            config.max_pixels,
            fenced_sources=[*self.imports.folders, uploads.uploads_dir(finder.data_dir)],
        )
        space = uploads.UploadSpace(finder.data_dir, config.upload_quota_bytes, config.max_unpack_ratio)
        self.jobs = IngestJobs(self.store, self.accounts, self.audit, self.acting_as, space=space)
        self.login_limiter = RateLimiter(*config.login_rate)
        self.search_limiter = RateLimiter(*config.search_rate)
        self.uploads_dir = uploads.uploads_dir(finder.data_dir)
        self.import_roots = [Path(r).expanduser().resolve() for r in config.import_roots]
        self.secret_key = config.secret_key or os.environ.get(SECRET_ENV) or self._stored_secret()
        self.trusted_proxies = trusted_networks(config.forwarded_allow_ips)

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


def client_address(request: Request) -> str:
    """The caller's address, for rate limits and the audit log: the peer, or, when the peer is a trusted
    proxy (``--forwarded-allow-ips``), the right-most address in X-Forwarded-For that is not a trusted
    proxy (the left-most one when all are). Entries to the left of it are the client's word, never believed."""
    peer = request.client.host if request.client else "unknown"
    trusted = get_service(request).trusted_proxies
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop if _is_ip(hop) else peer  # a proxy that wrote nonsense: its own address is all we know
    return hops[0] if hops else peer


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def session_principal(request: Request, service: Service) -> Principal | None:
    """The principal of a live browser session (one the catalog holds, not revoked, not too old), or None."""
    token = request.session.get("sid")
    if not token:
        return None
    try:
        return service.accounts.session_principal(str(token))
    except AuthenticationFailed:
        request.session.clear()
        return None


def csrf_token(request: Request) -> str:
    """This browser session's CSRF token: before sign-in a random one kept in the cookie; once signed in,
    derived from the session token with the service's key (the cookie then carries only the session token)."""
    session_token = request.session.get("sid")
    if session_token:
        key = get_service(request).secret_key.encode()
        return hmac.new(key, b"csrf:" + str(session_token).encode(), hashlib.sha256).hexdigest()
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse (403 csrf_failed) unless ``submitted`` is this session's CSRF token."""
    expected = csrf_token(request) if request.session.get("sid") else request.session.get("csrf")
    if not expected or not submitted or not secrets.compare_digest(str(expected), str(submitted)):
        raise ApiError(403, "csrf_failed", "missing or wrong CSRF token: reload the page and try again")


def sign_in(request: Request, service: Service, username: str, password: str) -> Principal:
    """Check a password and start a fresh server-side session. Failed attempts are limited per client and
    per username (a right password gives its slot back and clears the username's failures)."""
    client = client_address(request)
    keys = (f"ip:{client}", f"user:{username.lower()}")
    stamp = service.login_limiter.hit(*keys)
    principal = service.accounts.authenticate(username, password, client=client)
    service.login_limiter.release(stamp, *keys)
    service.login_limiter.clear(keys[1])
    previous = request.session.get("sid")
    if previous:  # signing in again from this browser: the session it had ends, not just its cookie
        service.accounts.end_session(str(previous))
    request.session.clear()
    request.session["sid"] = service.accounts.start_session(principal)
    return principal


def sign_out(request: Request, service: Service, principal: Principal | None) -> None:
    """End this browser's session (server-side: a copy of the cookie stops working too) and log it."""
    token = request.session.get("sid")
    if token:
        service.accounts.end_session(str(token))
    request.session.clear()
    if principal is not None:
        service.audit.record(principal.username, "logout", client=client_address(request))


def change_password(request: Request, service: Service, principal: Principal, current: str, new: str) -> int:
    """The caller sets a new password (their current one proves it is them). A wrong current password
    counts as a failed sign-in of theirs; the browser session making the change stays signed in, every
    other session of theirs ends. Returns how many ended."""
    keys = (f"ip:{client_address(request)}", f"user:{principal.username.lower()}")
    stamp = service.login_limiter.hit(*keys)
    keep = None if request.headers.get("authorization") else request.session.get("sid")
    try:
        ended = service.accounts.change_password(principal, current, new, keep_session=keep)
    except WrongPassword:
        raise
    except Exception:
        service.login_limiter.release(stamp, *keys)
        raise
    service.login_limiter.release(stamp, *keys)
    return ended


def token_principal(request: Request, service: Service, header: str) -> Principal:
    """The owner of the API token in an Authorization header. A rejected token is audited and counts as
    a failed attempt of the client's (so that no one can fill the audit log with guesses)."""
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRejected("malformed")
        return service.accounts.principal_for_token(token.strip())
    except TokenRejected as rejected:
        client = client_address(request)
        service.login_limiter.hit(f"ip:{client}")  # over the limit: a 429, and nothing more is recorded
        owner = {"username": rejected.owner} if rejected.owner else {}
        fingerprint = hashlib.sha256(token.strip().encode()).hexdigest()[:12] if token.strip() else None
        service.audit.record(
            "anonymous", "token.rejected", reason=rejected.reason, client=client, fingerprint=fingerprint, **owner
        )
        message = "use 'Authorization: Bearer <API token>'" if rejected.reason == "malformed" else str(rejected)
        raise ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": "Bearer"}) from None


def current_principal(request: Request, service: Annotated[Service, Depends(get_service)]) -> Principal:
    """Who is calling: a Bearer API token, else the browser session (401 when neither). A user whose
    password an admin reset may only change it (403 password_change_required for anything else)."""
    header = request.headers.get("authorization", "")
    if header:
        principal = token_principal(request, service, header)
    else:
        principal = session_principal(request, service)
        if principal is None:
            raise ApiError(
                401, "unauthenticated", "sign in, or send an API token", headers={"WWW-Authenticate": "Bearer"}
            )
    request.state.principal = principal
    if not header and request.method not in SAFE_METHODS:
        check_csrf(request, request.headers.get("x-csrf-token"))
    if principal.must_change_password and (request.method, request.url.path) not in PASSWORD_CHANGE_ALLOWED:
        raise ApiError(
            403,
            "password_change_required",
            "your password was reset: choose a new one first (POST /api/me/password, or the account page)",
        )
    return principal


def record_refusal(request: Request, error: ApiError) -> None:
    """Audit a 403 answer to a known caller: who, what (method and path), and why. Anonymous refusals
    (a sign-in form with a stale CSRF token) are not recorded: anyone could fill the log with them."""
    principal = getattr(request.state, "principal", None)
    if error.status != 403 or principal is None:
        return
    try:
        get_service(request).audit.record(
            principal.username,
            "access.denied",
            method=request.method,
            path=request.url.path,
            code=error.code,
            reason=error.message,
            client=client_address(request),
        )
    except Exception:  # the refusal must still be answered when the log cannot be written
        log.exception("could not audit a refusal of %s %s", request.method, request.url.path)


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
