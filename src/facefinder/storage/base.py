"""The declarative base every catalog table derives from, and the one clock they stamp rows with (naive UTC)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.orm import DeclarativeBase


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    """The catalog's tables (SQLite by default, PostgreSQL for a shared catalog)."""
