"""The catalog's tables for privacy: opt-out requests with their face templates, and consent records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.schema import ForeignKey
from sqlalchemy.types import Float, Integer, LargeBinary, String, Text

from facefinder.storage.base import Base, utcnow


class OptOut(Base):
    """A person's request to be left out (services/privacy/optout.py). Their photo is never stored: only templates."""

    __tablename__ = "optouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(Text, default="")  # e.g. a ticket number; never required to be a name
    channel: Mapped[str] = mapped_column(String(20))  # "admin" | "public"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100))
    erased_at: Mapped[datetime | None] = mapped_column()  # when held matches were last reviewed and erased
    erased_by: Mapped[str | None] = mapped_column(String(100))
    templates: Mapped[list["OptOutTemplate"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class OptOutTemplate(Base):
    """One face template (embedding) of an opted-out person."""

    __tablename__ = "optout_templates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    optout_id: Mapped[int] = mapped_column(ForeignKey("optouts.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(200))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, L2-normalised
    quality: Mapped[float] = mapped_column(Float)


class ConsentRecord(Base):
    """Consent behind a consented gallery: images link to it by the consent_id in their provenance."""

    __tablename__ = "consents"
    consent_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    subject: Mapped[str] = mapped_column(Text)  # who consented (a name or a reference to the paper record)
    scope: Mapped[str] = mapped_column(Text)  # to what
    given_at: Mapped[str] = mapped_column(String(64))  # when (ISO 8601, as recorded on the consent)
    collection: Mapped[str | None] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(100))
    withdrawn_at: Mapped[datetime | None] = mapped_column()
    withdrawn_by: Mapped[str | None] = mapped_column(String(100))
    withdrawal_note: Mapped[str | None] = mapped_column(Text)
