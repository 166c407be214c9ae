"""The HTTP app: create_app (routers, web UI, error handlers) and the body-limit and security-header middlewares.

    app = create_app("~/.facefinder")                       # embedded SQLite
    app = create_app(catalog_url="postgresql+psycopg://...") # the same app on PostgreSQL

A JSON API (OpenAPI at /api/openapi.json, docs at /api/docs) and the web UI in one app.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facefinder import __version__
from facefinder.errors import FaceFinderError
from facefinder.interfaces.http import (
    accounts,
    audit,
    collections,
    ingest,
    people,
    people_review,
    people_search,
    privacy,
    search,
)
from facefinder.interfaces.http.deps import (
    SESSION_COOKIE,
    STATUS_CODES,
    ApiError,
    MiB,
    Service,
    ServiceConfig,
    api_error_for,
    record_refusal,
)
from facefinder.interfaces.http.schemas import ERRORS
from facefinder.interfaces.web.pages import LoginRequired, html_error, is_page_request, mount_web
from facefinder.services.engine import FaceFinder

__all__ = ["MiB", "ServiceConfig", "create_app"]  # what `facefinder serve` and embedding code need

log = logging.getLogger("facefinder.api")
DESCRIPTION = (
    "Accountable face search. Results are investigative leads, never an identification. "
    "Authenticate with `Authorization: Bearer <API token>` (create one with "
    "`facefinder users token` or POST /api/tokens). Errors: "
    '`{"error": {"code", "message", "field"}}`.'
)

health_router = APIRouter(prefix="/api", responses=ERRORS)


@health_router.get("/health", tags=["service"], summary="Liveness (no sign-in needed)")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


# Included in this order (the order routes are matched in).
ROUTERS = [
    health_router,
    accounts.router,
    collections.router,
    ingest.router,
    search.router,
    people.router,
    people_review.router,
    people_search.router,
    audit.router,
    privacy.router,
]


# ----- the app -----------------------------------------------------------------------------------------
def create_app(
    data_dir: str | os.PathLike | None = None,
    catalog_url: str | None = None,
    *,
    config: ServiceConfig | None = None,
    finder: FaceFinder | None = None,
    models_dir: str | os.PathLike | None = None,
    detector: str | None = None,
    recognizer: str | None = None,
    vectors: str | None = None,
) -> FastAPI:
    """The service on ``data_dir`` (default: $FACEFINDER_DATA_DIR or ~/.facefinder), its catalog in
    SQLite there or at ``catalog_url`` (e.g. ``postgresql+psycopg://user:pw@host/db``), its vectors in
    FAISS files there or in Milvus (``vectors="milvus://host:19530/namespace"``).

    ``finder`` serves an already open FaceFinder instead (its models stay loaded; tests use this).
    """
    config = config or ServiceConfig()
    owns = finder is None
    if finder is None:
        finder = FaceFinder(
            data_dir,
            models_dir=models_dir,
            detector=detector,
            recognizer=recognizer,
            catalog_url=catalog_url,
            vectors=vectors,
            workers=config.ingest_workers,
        )
    service = Service(finder, config, owns_finder=owns)
    app = FastAPI(
        title="facefinder",
        version=__version__,
        lifespan=lifespan_of(service),
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.service = service
    for router in ROUTERS:
        app.include_router(router)
    mount_web(app)
    install_error_handlers(app)
    app.add_middleware(
        SessionMiddleware,
        secret_key=service.secret_key,
        session_cookie=SESSION_COOKIE,
        max_age=config.session_max_age,
        same_site="strict",
        https_only=config.secure_cookies,
    )
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    return app


def lifespan_of(service: Service) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: purge expired probe photos at start, close the service at the end."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.cases.purge_expired_probes()
        yield
        service.close()

    return lifespan


# ----- error handlers ----------------------------------------------------------------------------------
def respond(request: Request, error: ApiError) -> Response:
    """An error as the JSON shape, or as an HTML page for a web page's request (a 403 is audited first)."""
    record_refusal(request, error)
    if is_page_request(request):
        return html_error(request, error)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def on_api_error(request: Request, exc: ApiError) -> Response:
    return respond(request, exc)


async def on_data_error(request: Request, exc: DataError) -> Response:
    # The database refused a value (PostgreSQL: a NUL character in text, a number out of range).
    return respond(
        request,
        ApiError(
            400,
            "bad_request",
            "a value in the request cannot be stored or compared (a NUL character, a number out of range)",
        ),
    )


async def on_facefinder_error(request: Request, exc: FaceFinderError) -> Response:
    return respond(request, api_error_for(exc))


async def on_login_required(request: Request, exc: LoginRequired) -> Response:
    return exc.response(request)


async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        message = "no such endpoint or record"
    return respond(request, ApiError(exc.status_code, code, message, headers=getattr(exc, "headers", None)))


async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    location = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header", "cookie")]
    field_name = ".".join(location) or None
    message = str(first.get("msg", "invalid request"))
    if field_name:
        message = f"{field_name}: {message}"
    return respond(request, ApiError(422, "invalid", message, field_name))


async def on_internal(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return respond(request, ApiError(500, "internal", "internal error (logged on the server)"))


ERROR_HANDLERS = {
    ApiError: on_api_error,
    DataError: on_data_error,
    FaceFinderError: on_facefinder_error,
    LoginRequired: on_login_required,
    StarletteHTTPException: on_http_error,
    RequestValidationError: on_invalid,
    Exception: on_internal,
}


def install_error_handlers(app: FastAPI) -> None:
    """Every error answers in the JSON shape (or as an HTML page for the web UI)."""
    for exc_class, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(exc_class, handler)


# ----- middleware ------------------------------------------------------------------------------------
class BodyLimit:
    """Refuses request bodies over a cap: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = ApiError(413, "too_large", f"request bodies are capped at {self.max_bytes:,} bytes")
        response = JSONResponse(error.body(), status_code=413, headers={"Connection": "close"})
        await response(scope, _empty_receive, send)


class _BodyTooLarge(Exception):
    pass


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


class SecurityHeaders:
    """Conservative headers on every response: no framing, no sniffing, scripts and styles from us only."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
            b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope.get("path", "").startswith("/api/docs")

        async def with_headers(message: Message) -> None:
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
