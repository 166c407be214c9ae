"""The catalog: collections, images with provenance, faces, the index journal and the audit log, in SQL.

The other tables live beside their topic (storage/accounts.py, cases.py, people.py, privacy.py); importing
the ``facefinder.storage`` package registers them all, so ``Catalog`` creates every one.

SQLite through SQLAlchemy by default (one file, no server); any SQLAlchemy URL works. The catalog
is the source of truth: every face row carries its embedding, so the vector index can always be
rebuilt or replayed from it. The journal records each add and delete of a face in the same
transaction as the face rows themselves, which is what keeps the index consistent after a crash.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.schema import ForeignKey, Index, UniqueConstraint
from sqlalchemy.types import JSON, Float, Integer, LargeBinary, String, Text

from facefinder.errors import CatalogError
from facefinder.storage.base import Base, utcnow

JOURNAL_LOCK_KEY = 0x66616365  # PostgreSQL advisory lock that orders journal writes ("face")


class Collection(Base):
    """A named set of photos with one embedding model, and why it is held: purpose, legal basis, retention."""

    __tablename__ = "collections"
    __table_args__ = {"sqlite_autoincrement": True}  # a dropped collection's id (and index files) never come back
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    model_id: Mapped[str | None] = mapped_column(String(200))  # embeddings of one model per collection
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Retention policy (services/privacy/retention.py): required for every collection created since; NULL only in
    # catalogs from before, until `facefinder collections set` fills them in.
    purpose: Mapped[str | None] = mapped_column(Text)
    legal_basis: Mapped[str | None] = mapped_column(Text)
    retention_days: Mapped[int | None] = mapped_column(Integer)
    images: Mapped[list["ImageRecord"]] = relationship(
        back_populates="collection", cascade="all, delete-orphan", passive_deletes=True
    )


class ImageRecord(Base):
    """One ingested photo: where it came from (path or URI), its content hash and its provenance."""

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
    faces: Mapped[list["FaceRecord"]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )


class FaceRecord(Base):
    """One face in a photo: box, landmarks, quality, embedding and thumbnail; its id keys the vector index."""

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


class IndexCheckpoint(Base):
    """What a collection's last saved index checkpoint holds: the journal position it reflects and its token.

    Written, with the journal pruned up to ``seq``, right after the index file is saved (under the
    collection's checkpoint lock), so every process can tell when another one saved a newer checkpoint.
    """

    __tablename__ = "index_checkpoints"
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)  # every journal entry of the collection up to here is in the file
    token: Mapped[str] = mapped_column(String(64))  # names this checkpoint; changes on every save
    faces: Mapped[int] = mapped_column(Integer)
    max_face_id: Mapped[int] = mapped_column(Integer)
    saved_at: Mapped[datetime] = mapped_column(default=utcnow)


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


class IngestJobRecord(Base):
    """A server ingest job (services/server/jobs.py), kept so that the job list outlives a restart."""

    __tablename__ = "ingest_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int] = mapped_column(Integer, index=True)
    state: Mapped[str] = mapped_column(String(20))  # queued | running | done | failed | interrupted
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    job: Mapped[dict] = mapped_column(JSON)  # the rest: source, counts, report, error, its server process


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
    """A catalog-wide setting (JSON text by key): opt-out list version, case settings, secrets."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def make_engine(url: str) -> Engine:
    """An engine with the SQLite pragmas that durability and erasure need."""
    engine = create_engine(
        url,
        connect_args={"timeout": 30} if url.startswith("sqlite") else {},
        pool_pre_ping=not url.startswith("sqlite"),
    )
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the ingest writer
            # FULL: every commit is fsynced to the WAL, so a commit survives a power loss too (NORMAL loses
            # the last commits, after which an index checkpoint would claim faces the catalog lacks).
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA secure_delete=ON")  # erased faces are overwritten on disk, not just unlinked
            cursor.close()

    return engine


def add_missing_columns(engine: Engine) -> None:
    """A catalog made by an older version lacks columns added since: add them, nullable, so it still opens."""
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(engine.dialect)
                    connection.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')


class Catalog:
    """Opens (and creates) the catalog database and hands out sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            Base.metadata.create_all(self.engine)
            add_missing_columns(self.engine)
        except OperationalError as exc:  # e.g. a WAL removed from under its -shm file, a file that is not SQLite
            self.engine.dispose()
            where = self.engine.url.database if self.is_sqlite else self.engine.url.render_as_string()
            raise CatalogError(f"{where}: cannot open the catalog ({exc.orig})") from None
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self.session() as session:
            row = session.get(Setting, key)
            return row.value if row else default

    def set_setting(self, session: Session, key: str, value: object) -> None:
        session.merge(Setting(key=key, value=json.dumps(value) if not isinstance(value, str) else value))

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def lock_journal(self, session: Session) -> None:
        """Make journal sequence numbers commit in order within this transaction.

        A reader applies journal entries past the last one it saw; if entry 10 committed after a reader
        saw entry 11, entry 10 would never be applied there. SQLite has one writer at a time, so its
        order is the commit order already; PostgreSQL hands out sequence numbers before commit, so every
        transaction that writes journal entries first takes one transaction-scoped advisory lock."""
        if self.url.startswith("postgresql"):
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": JOURNAL_LOCK_KEY})

    def high_water(self, session: Session, table: str, column: str) -> int:
        """The largest id ``table.column`` has ever handed out (deleted rows included), or 0."""
        largest = session.scalar(text(f'SELECT max("{column}") FROM "{table}"')) or 0
        if self.is_sqlite:
            counter = session.scalar(text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table})
        elif self.url.startswith("postgresql"):
            counter = session.scalar(
                text(
                    f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {self._pg_sequence(session, table, column)}"
                )
            )
        else:
            counter = 0
        return max(int(largest), int(counter or 0))

    def raise_high_water(self, session: Session, table: str, column: str, value: int) -> None:
        """Make the next id ``table.column`` hands out larger than ``value`` (ids an index still holds
        must never be given to new rows)."""
        if value <= self.high_water(session, table, column):
            return
        if self.is_sqlite:
            updated = session.execute(
                text("UPDATE sqlite_sequence SET seq = :v WHERE name = :t"), {"v": value, "t": table}
            ).rowcount
            if not updated:
                session.execute(
                    text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)"), {"v": value, "t": table}
                )
        elif self.url.startswith("postgresql"):
            session.execute(text(f"SELECT setval('{self._pg_sequence(session, table, column)}', :v)"), {"v": value})

    @staticmethod
    def _pg_sequence(session: Session, table: str, column: str) -> str:
        return session.scalar(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table, "c": column})

    def integrity_problems(self) -> list[str]:
        """SQLite's own check of the database file (empty when sound); other databases check themselves."""
        if not self.is_sqlite:
            return []
        with self.engine.connect() as connection:
            rows = [row[0] for row in connection.exec_driver_sql("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def collection(self, session: Session, name: str) -> Collection | None:
        return session.scalar(select(Collection).where(Collection.name == name))

    def truncate_wal(self) -> tuple[int, int, int] | None:
        """SQLite: move the write-ahead log into catalog.db and cut catalog.db-wal to zero bytes, so old
        copies of erased rows do not linger in it. Returns SQLite's (busy, log frames, checkpointed frames):
        busy = 1 when another process's open read kept it from finishing (the next erasure retries)."""
        if not self.url.startswith("sqlite"):
            return None
        with self.engine.connect() as connection:
            return tuple(connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one())

    def close(self) -> None:
        self.engine.dispose()
