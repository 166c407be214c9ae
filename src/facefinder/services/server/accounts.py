"""Accounts: users with argon2-hashed passwords, roles, API tokens and collection grants.

Roles, deny by default:
* admin        manages accounts, collections, grants and settings; may search every collection
* investigator ingests into and searches only the collections granted to them
* auditor      reads and exports the audit log and runs reports; cannot search
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from facefinder.errors import FaceFinderError, FieldError, NotFound
from facefinder.services.audit import AuditLog
from facefinder.services.server.sessions import Sessions, revoke_user_sessions
from facefinder.storage.accounts import ApiToken, CollectionGrant, User
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Catalog, Collection

ROLES = ("admin", "investigator", "auditor")
MIN_PASSWORD_LENGTH = 10
SESSION_MAX_AGE = 8 * 3600  # seconds a browser session lasts after sign-in, unless the service says otherwise
_hasher = PasswordHasher()
_dummy: tuple[PasswordHasher, str] | None = None  # (the hasher it was made with, a hash of no one's password)


class AccessDenied(FaceFinderError):
    """The signed-in user's role or grants do not allow this."""


class AuthenticationFailed(FaceFinderError):
    """Unknown user, wrong password, disabled account or unknown token."""


class TokenRejected(AuthenticationFailed):
    """An API token that does not let anyone in, and why (for the audit log; the caller is told only 401).

    ``reason``: unknown (never issued, or revoked) or disabled (its owner's account is disabled)."""

    def __init__(self, reason: str, owner: str | None = None) -> None:
        super().__init__("unknown or revoked API token")
        self.reason, self.owner = reason, owner


class WrongPassword(FieldError):
    """The current password given to change a password is not the user's."""

    def __init__(self) -> None:
        super().__init__("current_password", "this is not your current password")


@dataclass(frozen=True)
class Principal:
    """Who is acting: what every service call that needs accountability takes."""

    id: int
    username: str
    role: str
    must_change_password: bool = False  # an admin reset the password: nothing but choosing a new one is allowed

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise AccessDenied(f"{self.username} ({self.role}) may not do this; needs {' or '.join(roles)}")


@dataclass(frozen=True)
class UserInfo:
    """A user account as the interfaces see it (never the password hash)."""

    id: int
    username: str
    role: str
    active: bool
    created_at: datetime
    must_change_password: bool = False

    @classmethod
    def of(cls, user: User) -> UserInfo:
        return cls(user.id, user.username, user.role, user.active, user.created_at, bool(user.must_change_password))


@dataclass(frozen=True)
class TokenInfo:
    """One of a user's API tokens as the interfaces see it (never its hash)."""

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenInfo:
        return cls(token.id, token.name, token.created_at, token.last_used_at)


class Accounts:
    """Users, their roles, sessions, API tokens and collection grants, in the catalog; every change is audited."""

    def __init__(self, catalog: Catalog, audit: AuditLog, session_max_age: int = SESSION_MAX_AGE) -> None:
        self.catalog, self.audit = catalog, audit
        self.sessions = Sessions(catalog, session_max_age)

    def add_user(self, username: str, password: str, role: str, by: str = "system") -> Principal:
        if role not in ROLES:
            raise FaceFinderError(f"role: must be one of {', '.join(ROLES)}, not {role!r}")
        if not username.strip():
            raise FaceFinderError("username: required")
        _check_new_password("password", password)
        with self.catalog.session() as session, session.begin():
            if session.scalar(select(User).where(User.username == username)):
                raise FaceFinderError(f"username: {username!r} is taken")
            user = User(username=username, password_hash=_hasher.hash(password), role=role)
            session.add(user)
            session.flush()
            principal = _principal_of(user)
        self.audit.record(by, "user.create", username=username, role=role)
        return principal

    def has_users(self) -> bool:
        """Whether any account exists (a fresh install has none: the sign-in page says how to make one)."""
        with self.catalog.session() as session:
            return session.scalar(select(User.id).limit(1)) is not None

    # ----- signing in ------------------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, client: str | None = None) -> Principal:
        """The account for a username and password, else AuthenticationFailed (the same message whatever
        went wrong; the audit entry says what: unknown-user, disabled or wrong-password).

        An unknown or disabled username is checked against a dummy hash, so that it takes as long as a
        wrong password: the answer's time does not tell which usernames exist."""
        with self.catalog.session() as session:
            user = session.scalar(select(User).where(User.username == username))
        where = {"client": client} if client else {}
        if user is None or not user.active:
            _verifies(_dummy_hash(), password)
            reason = "unknown-user" if user is None else "disabled"
        else:
            reason = None if _verifies(user.password_hash, password) else "wrong-password"
        if reason:
            self.audit.record(username, "login.failed", reason=reason, **where)
            raise AuthenticationFailed("wrong username or password")
        self.audit.record(username, "login", **where)
        return _principal_of(user)

    def start_session(self, principal: Principal) -> str:
        """A new browser session for a signed-in user; returns the token its cookie carries."""
        return self.sessions.start(principal.id)

    def session_principal(self, token: str) -> Principal:
        """Who a browser session belongs to; AuthenticationFailed once it was revoked, ran out, or its
        account was disabled."""
        user_id = self.sessions.user_id(token)
        if user_id is None:
            raise AuthenticationFailed("signed out, or the session ran out: sign in again")
        return self.principal(user_id)

    def end_session(self, token: str) -> bool:
        """Sign-out: revoke the session (its cookie stops working at once, wherever copies of it are)."""
        return self.sessions.revoke(token)

    # ----- passwords ---------------------------------------------------------------------------------------
    def change_password(self, principal: Principal, current: str, new: str, keep_session: str | None = None) -> int:
        """A user sets a new password, proving the current one; every other session of theirs ends (the
        one whose token is ``keep_session`` stays). Returns how many sessions ended."""
        _check_new_password("new_password", new)
        with self.catalog.session() as session, session.begin():
            user = session.get(User, principal.id)
            if user is None or not user.active:
                raise AuthenticationFailed("unknown or disabled account")
            wrong = not _verifies(user.password_hash, current)
            if not wrong:
                if _verifies(user.password_hash, new):
                    raise FieldError("new_password", "must differ from the current password")
                user.password_hash, user.must_change_password = _hasher.hash(new), False
                ended = revoke_user_sessions(session, user.id, keep=keep_session)
        if wrong:  # recorded outside the transaction above, which changed nothing
            self.audit.record(principal.username, "password.change.failed", reason="wrong-password")
            raise WrongPassword()
        self.audit.record(principal.username, "password.change", sessions_ended=ended)
        return ended

    def reset_password(self, admin: Principal, username: str) -> str:
        """An admin sets a temporary password (returned, to pass on) that the user must change at their
        next sign-in; until then they may do nothing else. Every session and API token of theirs ends:
        a reset answers a compromised account, and tokens made by whoever held it must not outlive it."""
        admin.require("admin")
        temporary = secrets.token_urlsafe(12)
        with self.catalog.session() as session, session.begin():
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                raise FaceFinderError(f"username: no user {username!r}")
            user.password_hash, user.must_change_password = _hasher.hash(temporary), True
            ended = revoke_user_sessions(session, user.id)
            tokens = session.execute(delete(ApiToken).where(ApiToken.user_id == user.id)).rowcount or 0
        self.audit.record(
            admin.username, "password.reset", username=username, sessions_ended=ended, tokens_revoked=tokens
        )
        return temporary

    # ----- API tokens and principals -----------------------------------------------------------------
    def create_token(self, owner: Principal, name: str, by: str | None = None) -> str:
        """A new API token for scripts; only its hash is stored, so it is shown this once.

        ``by`` is who makes it when that is not the owner (``facefinder users token`` run by an OS
        user): the audit entry names them as the actor and the owner as the user it is for."""
        token = "ff_" + secrets.token_urlsafe(32)
        with self.catalog.session() as session, session.begin():
            session.add(ApiToken(user_id=owner.id, name=name, token_hash=_token_hash(token)))
        self.audit.record(by or owner.username, "token.create", name=name, username=owner.username)
        return token

    def principal_for_token(self, token: str) -> Principal:
        """The owner of an API token; TokenRejected (an AuthenticationFailed, with its reason) otherwise."""
        with self.catalog.session() as session, session.begin():
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
            user = session.get(User, row.user_id) if row else None
            if row is None or user is None:
                raise TokenRejected("unknown")
            if not user.active:
                raise TokenRejected("disabled", user.username)
            row.last_used_at = utcnow()
            return _principal_of(user)

    def principal(self, user_id: int) -> Principal:
        with self.catalog.session() as session:
            user = session.get(User, user_id)
        if user is None or not user.active:
            raise AuthenticationFailed("unknown or disabled account")
        return _principal_of(user)

    def users(self) -> list[UserInfo]:
        """Every account, by username."""
        with self.catalog.session() as session:
            return [UserInfo.of(user) for user in session.scalars(select(User).order_by(User.username))]

    def user(self, username: str) -> UserInfo:
        """One account by its username (NotFound when there is none)."""
        with self.catalog.session() as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"user {username!r} does not exist")
            return UserInfo.of(user)

    def set_active(self, admin: Principal, username: str, active: bool) -> None:
        admin.require("admin")
        with self.catalog.session() as session, session.begin():
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                raise FaceFinderError(f"username: no user {username!r}")
            user.active = active
            ended = 0 if active else revoke_user_sessions(session, user.id)
        details = {"username": username, **({} if active else {"sessions_ended": ended})}
        self.audit.record(admin.username, "user.enable" if active else "user.disable", **details)

    def grant(self, admin: Principal, username: str, collection: str, allow: bool = True) -> None:
        admin.require("admin")
        with self.catalog.session() as session, session.begin():
            user = session.scalar(select(User).where(User.username == username))
            coll = session.scalar(select(Collection).where(Collection.name == collection))
            if user is None:
                raise FaceFinderError(f"username: no user {username!r}")
            if coll is None:
                raise FaceFinderError(f"collection {collection!r} does not exist")
            session.execute(
                delete(CollectionGrant).where(
                    CollectionGrant.user_id == user.id, CollectionGrant.collection_id == coll.id
                )
            )
            if allow:
                session.add(CollectionGrant(user_id=user.id, collection_id=coll.id))
        self.audit.record(
            admin.username, "grant.add" if allow else "grant.remove", username=username, collection=collection
        )

    def allowed_collections(self, principal: Principal) -> list[str]:
        """The collections this principal may search or ingest into (admins: all; auditors: none)."""
        with self.catalog.session() as session:
            if principal.role == "admin":
                return list(session.scalars(select(Collection.name).order_by(Collection.name)))
            if principal.role != "investigator":
                return []
            return list(
                session.scalars(
                    select(Collection.name)
                    .join(CollectionGrant, CollectionGrant.collection_id == Collection.id)
                    .where(CollectionGrant.user_id == principal.id)
                    .order_by(Collection.name)
                )
            )

    def require_collections(self, principal: Principal, names: list[str]) -> None:
        allowed = set(self.allowed_collections(principal))
        for name in names:
            if name not in allowed:
                raise AccessDenied(f"{principal.username} has no grant for collection {name!r}")

    def grants(self) -> dict[str, list[str]]:
        """username -> the collections granted to them (for the accounts page)."""
        with self.catalog.session() as session:
            rows = session.execute(
                select(User.username, Collection.name)
                .join(CollectionGrant, CollectionGrant.user_id == User.id)
                .join(Collection, Collection.id == CollectionGrant.collection_id)
                .order_by(Collection.name)
            ).all()
        granted: dict[str, list[str]] = {}
        for username, collection in rows:
            granted.setdefault(username, []).append(collection)
        return granted

    def tokens(self, principal: Principal) -> list[TokenInfo]:
        """This principal's own API tokens (a token is shown once, when created; only its hash is kept)."""
        with self.catalog.session() as session:
            return [
                TokenInfo.of(token)
                for token in session.scalars(
                    select(ApiToken).where(ApiToken.user_id == principal.id).order_by(ApiToken.id)
                )
            ]

    def revoke_token(self, principal: Principal, token_id: int) -> None:
        """Revoke one of one's own tokens (an admin may revoke anyone's)."""
        with self.catalog.session() as session, session.begin():
            row = session.get(ApiToken, token_id)
            if row is None or (row.user_id != principal.id and principal.role != "admin"):
                raise FaceFinderError(f"token {token_id} does not exist")
            owner = session.get(User, row.user_id)
            name = row.name
            session.delete(row)
        self.audit.record(principal.username, "token.revoke", name=name, owner=owner.username if owner else None)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _principal_of(user: User) -> Principal:
    return Principal(user.id, user.username, user.role, bool(user.must_change_password))


def _check_new_password(field_name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FieldError(field_name, f"at least {MIN_PASSWORD_LENGTH} characters")


def _verifies(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches the argon2 ``password_hash`` (a malformed hash matches nothing)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _dummy_hash() -> str:
    """A hash of a random password, made by the current hasher with its cost, to check unknown and
    disabled usernames against (made again if the hasher was swapped, as the tests do)."""
    global _dummy
    if _dummy is None or _dummy[0] is not _hasher:
        _dummy = (_hasher, _hasher.hash(secrets.token_urlsafe(16)))
    return _dummy[1]
