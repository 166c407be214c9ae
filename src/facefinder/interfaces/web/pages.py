"""The web UI: server-rendered pages (Jinja2) over the same services as the API, plus a little plain
JavaScript (static/app.js) that calls the JSON API for actions. No front-end build.

Pages need a browser session (otherwise: redirect to /login); roles are checked exactly as in the
API, and a refused page is a 403 page. Forms carry the session's CSRF token. A user whose password an
admin reset is sent to the account page, to choose a new one, from every other page.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Callable
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from facefinder import __version__
from facefinder.errors import FaceFinderError, FieldError
from facefinder.interfaces.http.collections import collections_for
from facefinder.interfaces.http.deps import (
    ApiError,
    change_password,
    check_csrf,
    get_service,
    session_principal,
    sign_in,
    sign_out,
)
from facefinder.interfaces.http.deps import csrf_token as session_csrf_token
from facefinder.interfaces.web import admin_pages, people_pages
from facefinder.interfaces.web.audit_view import readable
from facefinder.services.audit import as_dict
from facefinder.services.calibration import default_calibration
from facefinder.services.server.accounts import AuthenticationFailed, Principal

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
HOME = {"admin": "/collections", "investigator": "/search", "auditor": "/audit"}
NAV = [  # (path, label, roles)
    ("/collections", "Collections", ("admin", "investigator", "auditor")),
    ("/search", "Search", ("admin", "investigator")),
    ("/searches", "Case searches", ("admin", "investigator", "auditor")),
    ("/audit", "Audit log", ("auditor",)),
    ("/accounts", "Accounts", ("admin",)),
    ("/privacy", "Privacy", ("admin",)),
]


class LoginRequired(Exception):
    """Raised by page dependencies when no one is signed in: answered with a redirect to /login, which
    says why when the browser had a session that has ended (``expired``)."""

    def __init__(self, expired: bool = False) -> None:
        super().__init__("sign-in required")
        self.expired = expired

    def response(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        reason = "&expired=1" if self.expired else ""
        return RedirectResponse(f"/login?next={quote(target)}{reason}", status_code=303)


class PasswordChangeRequired(LoginRequired):
    """Raised by page dependencies for a user whose password an admin reset: answered with a redirect to
    the account page, which asks for a new one (a LoginRequired, so the app's handler for it answers)."""

    def response(self, request: Request) -> Response:
        return RedirectResponse("/account", status_code=303)


def is_page_request(request: Request) -> bool:
    """Whether a request is for a web page (not the API, not a static file): its errors are HTML pages."""
    path = request.url.path
    return not (path.startswith("/api") or path.startswith("/static"))


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from its template, with the signed-in user, the CSRF token and the navigation."""
    principal = getattr(request.state, "principal", None)
    nav = [(path, label) for path, label, roles in NAV if principal and principal.role in roles]
    return templates.TemplateResponse(
        request,
        template,
        {
            "principal": principal,
            "csrf": session_csrf_token(request),
            "nav": nav,
            "path": request.url.path,
            "version": __version__,
            **context,
        },
        status_code=status_code,
    )


def html_error(request: Request, error: ApiError) -> Response:
    """An error as a page (401: the redirect to /login)."""
    if error.status == 401:
        return LoginRequired().response(request)
    if not hasattr(request.state, "principal"):
        try:
            request.state.principal = session_principal(request, get_service(request))
        except Exception:  # the error page must render even when the catalog does not answer
            request.state.principal = None
    response = render(request, "error.html", status_code=error.status, error=error)
    for key, value in (error.headers or {}).items():
        response.headers[key] = value
    return response


def page_user(request: Request) -> Principal:
    """The signed-in user of a page (a dependency; raises LoginRequired, saying whether a session ended)."""
    had_session = bool(request.session.get("sid"))
    principal = session_principal(request, get_service(request))
    if principal is None:
        raise LoginRequired(expired=had_session)
    request.state.principal = principal
    if principal.must_change_password and request.url.path not in ("/account", "/account/password"):
        raise PasswordChangeRequired()
    return principal


def page_role(*roles: str) -> Callable[[Principal], Principal]:
    """A page dependency: the signed-in user, who must hold one of ``roles`` (a 403 page otherwise)."""

    def dependency(principal: Annotated[Principal, Depends(page_user)]) -> Principal:
        principal.require(*roles)
        return principal

    return dependency


User = Annotated[Principal, Depends(page_user)]
Reader = Annotated[Principal, Depends(page_role("admin", "investigator", "auditor"))]
Searcher = Annotated[Principal, Depends(page_role("admin", "investigator"))]
Auditor = Annotated[Principal, Depends(page_role("auditor"))]
Admin = Annotated[Principal, Depends(page_role("admin"))]
router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str | None:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@router.get("/login")
def login_page(request: Request, next: str | None = None, expired: bool = False) -> Response:
    principal = session_principal(request, get_service(request))
    if principal is not None:
        return RedirectResponse(_safe_next(next) or HOME[principal.role], status_code=303)
    request.state.principal = None
    return _login_form(request, next, 200, None, expired=expired)


def _login_form(
    request: Request, next: str | None, status: int, error: str | None, username: str = "", expired: bool = False
) -> Response:
    """The sign-in page; on a fresh install (no account yet) it says how to create the first admin, and
    after a session ended (``expired``) it says so."""
    no_users = not get_service(request).accounts.has_users()
    return render(
        request,
        "login.html",
        status_code=status,
        next=_safe_next(next) or "",
        error=error,
        username=username,
        no_users=no_users,
        expired=expired,
    )


@router.post("/login")
def login_submit(
    request: Request,
    username: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    request.state.principal = None
    try:
        check_csrf(request, csrf_token)
        principal = sign_in(request, get_service(request), username, password)
    except ApiError as exc:  # too many attempts, or a stale form
        return _login_form(request, next, exc.status, f"{exc.message} (error code: {exc.code})", username)
    except AuthenticationFailed:
        return _login_form(request, next, 401, "Wrong username or password.", username)
    if principal.must_change_password:
        return RedirectResponse("/account", status_code=303)
    return RedirectResponse(_safe_next(next) or HOME[principal.role], status_code=303)


@router.post("/logout")
def logout_submit(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(request, csrf_token)
    service = get_service(request)
    sign_out(request, service, session_principal(request, service))
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def home(principal: User) -> Response:
    return RedirectResponse(HOME[principal.role], status_code=303)


@router.get("/collections")
def collections_page(request: Request, principal: Reader) -> Response:
    """The collections; for those who may ingest, the forms and their jobs. The server folders offered
    are only those this user may ingest from, per collection (services/server/import_roots.py)."""
    service = get_service(request)
    can_ingest = principal.role in ("admin", "investigator")
    allowed = service.accounts.allowed_collections(principal) if can_ingest else []
    roots = {name: [str(r) for r in service.imports.usable(principal, name)] for name in allowed}
    return render(
        request,
        "collections.html",
        collections=collections_for(principal, service),
        allowed=allowed,
        can_ingest=can_ingest,
        jobs=service.jobs.list(principal) if can_ingest else [],
        import_roots={name: found for name, found in roots.items() if found},
        any_roots=bool(service.imports),
        max_upload=service.config.max_upload_bytes,
    )


@router.get("/search")
def search_page(request: Request, principal: Searcher) -> Response:
    service = get_service(request)
    return render(
        request,
        "search.html",
        allowed=service.accounts.allowed_collections(principal),
        categories=service.cases.settings().categories,
        max_probe=service.config.max_probe_bytes,
    )


@router.get("/searches")
def searches_page(
    request: Request, principal: Reader, case_id: Annotated[str | None, Query(max_length=200)] = None
) -> Response:
    service = get_service(request)
    records = service.cases.searches(principal, case_id=case_id or None, limit=200)
    return render(request, "searches.html", searches=records, case_id=case_id or "")


@router.get("/searches/{search_id}")
def search_result_page(request: Request, search_id: int, principal: Reader) -> Response:
    """A search's results; an auditor (who sees no faces) gets its record with the lead notes and the
    audit entries about it, each linked to the audit log."""
    service = get_service(request)
    record = service.cases.get(principal, search_id)
    trail = []
    if principal.role == "auditor":
        found = service.audit.entries(case_id=record.case_id, search_id=record.id, limit=300, newest_first=True)
        trail = [as_dict(e) for e in found]
    return render(
        request,
        "result.html",
        search=record,
        faces=service.cases.can_see_faces(principal),
        trail=trail,
        readable=readable,
    )


@router.get("/searches/{search_id}/candidates/{rank}")
def candidate_page(request: Request, search_id: int, rank: int, principal: Searcher) -> Response:
    service = get_service(request)
    details = service.cases.candidate_details(principal, search_id, rank)
    record, candidate = service.cases.candidate(principal, search_id, rank)
    return render(
        request, "candidate.html", search=record, c=candidate, details=details, calibration=default_calibration()
    )


@router.get("/audit")
def audit_page(
    request: Request,
    principal: Auditor,
    action: Annotated[str | None, Query(max_length=60)] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
    case_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    search_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
) -> Response:
    """The audit log, filtered as the API filters it (an action or the start of one; dates checked: a
    bad one is said, with its field, instead of an empty list), each entry's details in words."""
    service = get_service(request)
    filters = {"action": action, "actor": actor, "case_id": case_id, "since": since, "until": until}
    filters = {k: (v or "").strip() or None for k, v in filters.items()}
    error = None
    try:
        query = {**{k: v for k, v in filters.items() if k != "action"}, "action_prefix": filters["action"]}
        found = service.audit.entries(**query, search_id=search_id, limit=300, newest_first=True)
        entries = [as_dict(e) for e in found]
    except FieldError as exc:
        entries, error = [], exc
    shown = {**filters, "search_id": str(search_id) if search_id else None}
    return render(
        request,
        "audit.html",
        status_code=400 if error else 200,
        entries=entries,
        filters={k: v or "" for k, v in shown.items()},
        filter_error=str(error).split(": ", 1)[-1] if error else None,
        error_field=error.field if error else None,
        actions=service.audit.actions(),
        readable=readable,
        problems=service.audit.verify(),
        head=service.audit.head(),
        query="&".join(f"{k}={quote(v)}" for k, v in shown.items() if v),
    )


@router.get("/accounts")
def accounts_page(request: Request, principal: Admin) -> Response:
    service = get_service(request)
    return render(
        request,
        "accounts.html",
        users=service.accounts.users(),
        grants=service.accounts.grants(),
        collections=[c.name for c in service.finder.collections()],
        settings=service.cases.settings(),
    )


@router.get("/account")
def account_page(request: Request, principal: User, changed: bool = False) -> Response:
    return _account(request, principal, 200, message="Your password was changed." if changed else None)


def _account(
    request: Request, principal: Principal, status: int, message: str | None = None, error: str | None = None
) -> Response:
    """The account page: tokens, collections, and the password form (with what the last change did)."""
    service = get_service(request)
    return render(
        request,
        "account.html",
        status_code=status,
        tokens=service.accounts.tokens(principal),
        collections=service.accounts.allowed_collections(principal),
        message=message,
        password_error=error,
    )


@router.post("/account/password")
def password_submit(
    request: Request,
    principal: User,
    current_password: Annotated[str, Form(max_length=1000)] = "",
    new_password: Annotated[str, Form(max_length=1000)] = "",
    new_password_again: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Change one's own password from the account page (the form's answer to a reset, too)."""
    check_csrf(request, csrf_token)
    if new_password != new_password_again:
        return _account(request, principal, 400, error="The two new passwords differ.")
    try:
        change_password(request, get_service(request), principal, current_password, new_password)
    except ApiError as exc:  # too many wrong current passwords
        return _account(request, principal, exc.status, error=exc.message)
    except FaceFinderError as exc:
        label = {"current_password": "Current password", "new_password": "New password"}.get(getattr(exc, "field", ""))
        reason = str(exc).split(": ", 1)[-1]
        return _account(request, principal, 400, error=f"{label}: {reason}." if label else str(exc))
    return RedirectResponse("/account?changed=1", status_code=303)


@router.get("/favicon.ico")
def favicon() -> Response:
    """The site's icon (browsers ask for it on every page, the public opt-out form's too)."""
    return FileResponse(
        HERE / "static" / "favicon.ico", media_type="image/x-icon", headers={"Cache-Control": "max-age=86400"}
    )


def mount_web(app: FastAPI) -> None:
    """Add the pages (the admin and people pages too, handed this module's renderer and sign-in check) and /static."""
    app.include_router(router)
    app.include_router(admin_pages.install(render, page_user))
    app.include_router(people_pages.install(render, page_user))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    templates.env.filters["ago"] = _ago
    templates.env.filters["short"] = lambda s, n=12: (s or "")[:n]
    templates.env.globals["now"] = time.time


def _ago(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") + " UTC" if value else ""
