"""Sign-in and sign-out, my password and API tokens, user accounts, grants and password resets (admin), and
the search settings (admin)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request

from facefinder.interfaces.http.deps import (
    Admin,
    AnyUser,
    ApiError,
    Service,
    ServiceDep,
    change_password,
    csrf_token,
    sign_in,
    sign_out,
)
from facefinder.interfaces.http.schemas import (
    ERRORS,
    DbId,
    LoginRequest,
    MeOut,
    PasswordChange,
    PasswordChanged,
    PasswordReset,
    SessionOut,
    SettingsOut,
    SettingsUpdate,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    user_out,
)

if TYPE_CHECKING:
    from facefinder.services.server.accounts import UserInfo

router = APIRouter(prefix="/api", responses=ERRORS)


def _user(service: Service, username: str) -> UserInfo:
    """A user by name; a 404 when there is none."""
    return service.accounts.user(username)


# -- sign-in and tokens
@router.post("/session", response_model=SessionOut, tags=["accounts"], summary="Sign in (sets the session cookie)")
def login(body: LoginRequest, request: Request, service: ServiceDep) -> SessionOut:
    principal = sign_in(request, service, body.username, body.password)
    user = user_out(_user(service, principal.username), service.accounts.grants())
    return SessionOut(user=user, csrf_token=csrf_token(request))


@router.delete("/session", tags=["accounts"], summary="Sign out")
def logout(request: Request, principal: AnyUser, service: ServiceDep) -> dict[str, bool]:
    sign_out(request, service, principal)
    return {"signed_out": True}


@router.get("/me", response_model=MeOut, tags=["accounts"], summary="Who am I, what may I search")
def me(principal: AnyUser, service: ServiceDep) -> MeOut:
    return MeOut(
        id=principal.id,
        username=principal.username,
        role=principal.role,
        collections=service.accounts.allowed_collections(principal),
        categories=service.cases.settings().categories,
    )


@router.post(
    "/me/password",
    response_model=PasswordChanged,
    tags=["accounts"],
    summary="Change my password (my other sessions are signed out)",
)
def change_my_password(
    body: PasswordChange, request: Request, principal: AnyUser, service: ServiceDep
) -> PasswordChanged:
    ended = change_password(request, service, principal, body.current_password, body.new_password)
    return PasswordChanged(changed=True, sessions_ended=ended)


@router.get("/tokens", response_model=list[TokenOut], tags=["accounts"], summary="My API tokens")
def list_tokens(principal: AnyUser, service: ServiceDep) -> list[TokenOut]:
    return [
        TokenOut(id=t.id, name=t.name, created_at=t.created_at, last_used_at=t.last_used_at)
        for t in service.accounts.tokens(principal)
    ]


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    tags=["accounts"],
    summary="Create an API token for myself (shown once)",
)
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
    return user_out(_user(service, principal.username), {})


@router.patch("/users/{username}", response_model=UserOut, tags=["accounts"], summary="Enable or disable a user")
def update_user(username: str, body: UserUpdate, admin: Admin, service: ServiceDep) -> UserOut:
    _user(service, username)
    if username == admin.username and not body.active:
        raise ApiError(409, "conflict", "you cannot disable your own account", "active")
    service.accounts.set_active(admin, username, body.active)
    return user_out(_user(service, username), service.accounts.grants())


@router.post(
    "/users/{username}/password",
    response_model=PasswordReset,
    tags=["accounts"],
    summary="Reset a user's password to a temporary one they must change at next sign-in",
)
def reset_password(username: str, admin: Admin, service: ServiceDep) -> PasswordReset:
    return PasswordReset(username=username, temporary_password=service.accounts.reset_password(admin, username))


@router.put(
    "/users/{username}/grants/{collection}",
    response_model=UserOut,
    tags=["accounts"],
    summary="Grant a user a collection",
)
def add_grant(username: str, collection: str, admin: Admin, service: ServiceDep) -> UserOut:
    service.accounts.grant(admin, username, collection, allow=True)
    return user_out(_user(service, username), service.accounts.grants())


@router.delete(
    "/users/{username}/grants/{collection}",
    response_model=UserOut,
    tags=["accounts"],
    summary="Take a collection grant away",
)
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
