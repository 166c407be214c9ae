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

from facefinder.errors import FaceFinderError, NotFound
from facefinder.services.audit import AuditLog
from facefinder.storage.catalog import ApiToken, Catalog, Collection, CollectionGrant, User, utcnow

ROLES = ("admin", "investigator", "auditor")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


class AccessDenied(FaceFinderError):
    """The signed-in user's role or grants do not allow this."""


class AuthenticationFailed(FaceFinderError):
    """Unknown user, wrong password, disabled account or unknown token."""


@dataclass(frozen=True)
class Principal:
    """Who is acting: what every service call that needs accountability takes."""

    id: int
    username: str
    role: str

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

    @classmethod
    def of(cls, user: User) -> UserInfo:
        return cls(user.id, user.username, user.role, user.active, user.created_at)


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
    """Users, their roles, API tokens and collection grants, in the catalog; every change is audited."""

    def __init__(self, catalog: Catalog, audit: AuditLog) -> None:
        self.catalog, self.audit = catalog, audit

    def add_user(self, username: str, password: str, role: str, by: str = "system") -> Principal:
        if role not in ROLES:
            raise FaceFinderError(f"role: must be one of {', '.join(ROLES)}, not {role!r}")
        if not username.strip():
            raise FaceFinderError("username: required")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise FaceFinderError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
        with self.catalog.session() as session, session.begin():
            if session.scalar(select(User).where(User.username == username)):
                raise FaceFinderError(f"username: {username!r} is taken")
            user = User(username=username, password_hash=_hasher.hash(password), role=role)
            session.add(user)
            session.flush()
            principal = Principal(user.id, user.username, user.role)
        self.audit.record(by, "user.create", username=username, role=role)
        return principal

    def authenticate(self, username: str, password: str) -> Principal:
        with self.catalog.session() as session:
            user = session.scalar(select(User).where(User.username == username))
        try:
            if user is None or not user.active:
                raise VerificationError()
            _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            self.audit.record(username, "login.failed")
            raise AuthenticationFailed("wrong username or password") from None
        self.audit.record(username, "login")
        return Principal(user.id, user.username, user.role)

    def create_token(self, principal: Principal, name: str) -> str:
        """A new API token for scripts; only its hash is stored, so it is shown this once."""
        token = "ff_" + secrets.token_urlsafe(32)
        with self.catalog.session() as session, session.begin():
            session.add(ApiToken(user_id=principal.id, name=name, token_hash=_token_hash(token)))
        self.audit.record(principal.username, "token.create", name=name)
        return token

    def principal_for_token(self, token: str) -> Principal:
        with self.catalog.session() as session, session.begin():
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
            user = session.get(User, row.user_id) if row else None
            if row is None or user is None or not user.active:
                raise AuthenticationFailed("unknown or revoked API token")
            row.last_used_at = utcnow()
            return Principal(user.id, user.username, user.role)

    def principal(self, user_id: int) -> Principal:
        with self.catalog.session() as session:
            user = session.get(User, user_id)
        if user is None or not user.active:
            raise AuthenticationFailed("unknown or disabled account")
        return Principal(user.id, user.username, user.role)

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
        self.audit.record(admin.username, "user.enable" if active else "user.disable", username=username)

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
