"""Browser sessions kept in the catalog, so that a session can be ended before its cookie runs out.

A signed cookie alone cannot be taken back: whoever holds a copy stays signed in until it expires.
So the cookie carries only a random token, and the catalog holds the session behind it (its user,
sign-in time, last use, and whether it was revoked). Signing out revokes it; disabling an account or
setting its password revokes all that user's sessions; a session also ends ``max_age`` seconds after
sign-in. Only the token's sha256 is stored, so a copy of the catalog holds no usable cookie.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from facefinder.storage.accounts import UserSession
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Catalog

TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often (not on every request)


def session_id(token: str) -> str:
    """The catalog id of the session whose cookie carries ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def revoke_user_sessions(session: Session, user_id: int, keep: str | None = None) -> int:
    """Revoke every live session of a user (but the one whose token is ``keep``), inside the caller's
    transaction, so that the change that calls for it (disable, new password) and the revocation commit
    together. Returns how many were revoked."""
    query = update(UserSession).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
    if keep:
        query = query.where(UserSession.id != session_id(keep))
    return session.execute(query.values(revoked_at=utcnow())).rowcount or 0


class Sessions:
    """The server-side half of browser sessions: start one, find its user, revoke it."""

    def __init__(self, catalog: Catalog, max_age: int) -> None:
        self.catalog, self.max_age = catalog, timedelta(seconds=max_age)

    def start(self, user_id: int) -> str:
        """A new session for the user; returns the token the cookie is to carry (shown nowhere else).

        Sessions past their maximum age are deleted on the way: they can never be valid again."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.catalog.session() as session, session.begin():
            session.execute(delete(UserSession).where(UserSession.created_at < now - self.max_age))
            session.add(UserSession(id=session_id(token), user_id=user_id, created_at=now, last_seen_at=now))
        return token

    def user_id(self, token: str) -> int | None:
        """The user of a live session (not revoked, not past its maximum age), or None."""
        now = utcnow()
        with self.catalog.session() as session, session.begin():
            row = session.get(UserSession, session_id(token))
            if row is None or row.revoked_at is not None or now - row.created_at > self.max_age:
                return None
            if now - row.last_seen_at >= TOUCH_EVERY:
                row.last_seen_at = now
            return row.user_id

    def revoke(self, token: str) -> bool:
        """End one session (sign-out); False when it was not live."""
        with self.catalog.session() as session, session.begin():
            query = update(UserSession).where(UserSession.id == session_id(token), UserSession.revoked_at.is_(None))
            return bool(session.execute(query.values(revoked_at=utcnow())).rowcount)

    def live(self, user_id: int) -> int:
        """How many live sessions the user has (for tests and reports)."""
        now = utcnow()
        with self.catalog.session() as session:
            return len(
                session.scalars(
                    select(UserSession.id).where(
                        UserSession.user_id == user_id,
                        UserSession.revoked_at.is_(None),
                        UserSession.created_at >= now - self.max_age,
                    )
                ).all()
            )
