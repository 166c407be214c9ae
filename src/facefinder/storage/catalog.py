"""The catalog: collections, images with provenance, faces, and the index journal, in SQL.

SQLite through SQLAlchemy by default (one file, no server); any SQLAlchemy URL works. The catalog
is the source of truth: every face row carries its embedding, so the vector index can always be
rebuilt or replayed from it. The journal records each add and delete of a face in the same
transaction as the face rows themselves, which is what keeps the index consistent after a crash.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import (
    JSON, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, create_engine, event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Collection(Base):
    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    model_id: Mapped[str | None] = mapped_column(String(200))  # embeddings of one model per collection
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    images: Mapped[list["ImageRecord"]] = relationship(back_populates="collection", cascade="all, delete-orphan",
                                                       passive_deletes=True)


class ImageRecord(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("collection_id", "sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)  # path or URI the operator ingested it from
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # Provenance, from a sidecar JSON or a CSV manifest.
    source_url: Mapped[str | None] = mapped_column(Text)
    captured_at: Mapped[str | None] = mapped_column(String(64))
    case_id: Mapped[str | None] = mapped_column(String(200))
    consent_id: Mapped[str | None] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)
    collection: Mapped[Collection] = relationship(back_populates="images")
    faces: Mapped[list["FaceRecord"]] = relationship(back_populates="image", cascade="all, delete-orphan",
                                                     passive_deletes=True)


class FaceRecord(Base):
    __tablename__ = "faces"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused: the index maps them
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    box: Mapped[list] = mapped_column(JSON)  # [x1, y1, x2, y2] in the upright photo
    landmarks: Mapped[list] = mapped_column(JSON)  # 5 x [x, y]
    detector_score: Mapped[float] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)
    quality_parts: Mapped[dict] = mapped_column(JSON)
    model_id: Mapped[str] = mapped_column(String(200))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, L2-normalised
    thumbnail: Mapped[bytes] = mapped_column(LargeBinary)  # JPEG of the aligned 112x112 crop
    image: Mapped[ImageRecord] = relationship(back_populates="faces")


class JournalEntry(Base):
    """One add or delete of a face, written in the same transaction as the face rows."""

    __tablename__ = "index_journal"
    __table_args__ = (Index("ix_journal_collection_seq", "collection_id", "seq"), {"sqlite_autoincrement": True})
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(Integer)
    face_id: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(8))  # "add" | "delete"


class IngestFailure(Base):
    """A file an ingest could not use, and why. Cleared when a later run succeeds with it."""

    __tablename__ = "ingest_failures"
    __table_args__ = (UniqueConstraint("collection_id", "source"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # admin | investigator | auditor
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
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


class AuditEntry(Base):
    """One line of the append-only, hash-chained audit log (see services/audit.py)."""

    __tablename__ = "audit_log"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[str] = mapped_column(String(40))  # ISO 8601 UTC, as hashed
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60), index=True)
    case_id: Mapped[str | None] = mapped_column(String(200), index=True)
    details: Mapped[str] = mapped_column(Text)  # canonical JSON, as hashed
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def make_engine(url: str) -> Engine:
    """An engine with the SQLite pragmas that durability and erasure need."""
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {},
                           pool_pre_ping=not url.startswith("sqlite"))
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the ingest writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: committed survives a process kill
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA secure_delete=ON")  # erased faces are overwritten on disk, not just unlinked
            cursor.close()
    return engine


class Catalog:
    """Opens (and creates) the catalog database and hands out sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self.session() as session:
            row = session.get(Setting, key)
            return row.value if row else default

    def set_setting(self, session: Session, key: str, value: object) -> None:
        session.merge(Setting(key=key, value=json.dumps(value) if not isinstance(value, str) else value))

    def collection(self, session: Session, name: str) -> Collection | None:
        return session.scalar(select(Collection).where(Collection.name == name))

    def close(self) -> None:
        self.engine.dispose()
