"""Errors a user can meet, each naming the file or field it is about."""

from __future__ import annotations

import errno


class FaceFinderError(Exception):
    """Base class: every error facefinder raises on purpose."""


class ImageError(FaceFinderError):
    """An input file could not be used as a photo.

    ``reason`` is one of: ``not-an-image``, ``corrupt``, ``truncated``, ``too-large``,
    ``unreadable``, ``bad-sidecar``, ``bad-manifest``, ``symlink-loop``, ``symlink-escape`` (a server
    job's file whose links lead out of its import root: never read); for videos also ``not-a-video``,
    ``unsupported-codec`` and ``too-long`` (vision/video.py). It is stable and documented,
    so reports and scripts can group by it.
    """

    def __init__(self, source: str, reason: str, detail: str = "") -> None:
        self.source, self.reason, self.detail = source, reason, detail
        super().__init__(f"{source}: {reason}" + (f" ({detail})" if detail else ""))


class ModelError(FaceFinderError):
    """A model file is missing, fails its checksum, or has a shape we cannot use."""


class CatalogError(FaceFinderError):
    """The catalog was asked for something it does not hold (unknown collection, face...)."""


class MissingPolicy(CatalogError):
    """A new collection without its whole policy. ``missing`` names the fields (``purpose``,
    ``legal_basis``, ``retention_days``), so that each interface can name them as its users know
    them (a CLI flag, a JSON field)."""

    def __init__(self, collection: str, missing: tuple[str, ...]) -> None:
        self.collection, self.missing = collection, tuple(missing)
        super().__init__(
            f"collection {collection!r}: a collection needs a purpose, a legal basis and a retention "
            f"period; missing {', '.join(self.missing)}"
        )

    def __reduce__(self) -> tuple:
        return type(self), (self.collection, self.missing)  # whole again in another process (ingest workers)


class NotFound(FaceFinderError):
    """The record asked for does not exist, or is not visible to the one asking."""


class Conflict(FaceFinderError):
    """The request clashes with the state of a record (a taken name, a lead already confirmed...)."""


class DiskFullError(FaceFinderError):
    """The disk (or quota) holding the data directory ran out of space during a write.

    An ingest stops at once with the count it stored: every photo is written in one transaction, so
    a re-run skips what is stored and resumes without duplicates once space is freed.
    """

    def __init__(self, where: object, stored: int | None = None, doing: str = "") -> None:
        self.where, self.stored = str(where), stored
        if stored is not None:
            message = f"disk full at {where}: {stored} photos stored, re-run to resume"
        else:
            message = f"disk full at {where}: {doing or 'nothing more could be written'}; free space and retry"
        super().__init__(message)


_DISK_FULL_TEXT = (
    "database or disk is full",
    "no space left on device",
    "disk quota exceeded",
    "could not extend file",
)  # SQLite, OS (also inside FAISS/Milvus messages), PostgreSQL


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it wraps or was raised while handling, says the disk is full:
    SQLite (``database or disk is full``), the OS (ENOSPC, EDQUOT), PostgreSQL (``could not extend
    file``), whichever layer re-raised it (SQLAlchemy keeps the driver's error in ``orig``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc).lower() for text in _DISK_FULL_TEXT):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def find_disk_full(exc: BaseException | None) -> DiskFullError | None:
    """The DiskFullError in ``exc``'s chain, if any (a later error may have been raised on top of it)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class FieldError(FaceFinderError):
    """A request field is missing or invalid; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(f"{field_name}: {message}")
