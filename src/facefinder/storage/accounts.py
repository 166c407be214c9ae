"""The catalog's tables for who may use the service: users, their browser sessions, API tokens and grants."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.schema import ForeignKey
from sqlalchemy.types import Integer, String

from facefinder.storage.base import Base, utcnow


class User(Base):
    """A service account: username, password hash, role, and whether it may sign in."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # admin | investigator | auditor
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by an admin's password reset: until the user picks a new password, the service lets them do nothing
    # else. NULL (a catalog from before this column) means no.
    must_change_password: Mapped[bool | None] = mapped_column(default=False)


class UserSession(Base):
    """A browser session, kept server-side so that signing out, a disabled account or a new password ends it.

    The signed cookie carries only the session's random token; ``id`` is its sha256, so a copy of the
    catalog holds no cookie that could be replayed.
    """

    __tablename__ = "user_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token in the cookie
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)  # sign-in; the session ends session_max_age later
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()  # signed out, or ended by a disable or password change


class ApiToken(Base):
    """A script's bearer token for a user; only its hash is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the token; the token is shown once
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()


class CollectionGrant(Base):
    """An investigator may ingest into and search only the collections granted to them."""

    __tablename__ = "collection_grants"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
