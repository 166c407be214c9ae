"""Looking through a collection as an admin: its photos page by page, each with its faces, and a face's
thumbnail; and what an ingest job stored without a face.

Admins curate collections (they erase a photo, a face, a whole collection), so they need to see what
is held outside a case search. That is still a look at people's faces: each look is audited, once per
user and look in a 10-minute window (``OncePer``, as the views of case records are):
``collection.browse`` names the collection, the page and the photos listed; ``collection.faces.view``
is written at the first face thumbnail fetched in a collection. Faces on the opt-out list are marked,
so that the admin reviews and erases them on the privacy page; a source under uploads/ is shown by
its upload's name (``uploads.display_name``), never its server path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import exists, func, or_, select

from facefinder.errors import NotFound
from facefinder.services.audit import AuditLog, OncePer
from facefinder.services.privacy.optout import screen_for
from facefinder.services.server import uploads
from facefinder.services.server.accounts import Principal
from facefinder.storage.catalog import FaceRecord, ImageRecord
from facefinder.storage.store import PROVENANCE_FIELDS, FaceStore

VIEWS = OncePer()  # (catalog, user, action, key) claimed in the last 10 minutes
MAX_PAGE = 200  # photos per page at most


@dataclass
class FaceView:
    """One face of a listed photo: where it is, how good, and whether it is on the opt-out list."""

    face_id: int
    box: list[float]
    quality: float
    opted_out: bool


@dataclass
class PhotoView:
    """One photo of a collection as an admin sees it: its shown source, size, provenance and faces."""

    image_id: int
    source: str
    sha256: str
    width: int
    height: int
    ingested_at: datetime
    provenance: dict[str, str | None]
    faces: list[FaceView] = field(default_factory=list)


@dataclass
class PhotoPage:
    """A page of a collection's photos, oldest first, and how many there are in all."""

    collection: str
    total: int
    offset: int
    limit: int
    photos: list[PhotoView]


def photos(
    store: FaceStore,
    audit: AuditLog,
    principal: Principal,
    collection: str,
    offset: int = 0,
    limit: int = 50,
    without_faces: bool = False,
) -> PhotoPage:
    """A page of the collection's photos with their faces (``without_faces``: only the photos in
    which no face was found); audited as ``collection.browse``."""
    principal.require("admin")
    coll = store.collection(collection)
    offset, limit = max(0, offset), max(1, min(limit, MAX_PAGE))
    query = select(ImageRecord).where(ImageRecord.collection_id == coll.id)
    if without_faces:
        query = query.where(~exists().where(FaceRecord.image_id == ImageRecord.id))
    with store.catalog.session() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        images = list(session.scalars(query.order_by(ImageRecord.id).offset(offset).limit(limit)))
        faces = session.execute(
            select(FaceRecord.id, FaceRecord.image_id, FaceRecord.box, FaceRecord.quality)
            .add_columns(FaceRecord.embedding, FaceRecord.model_id)
            .where(FaceRecord.image_id.in_([i.id for i in images]))
            .order_by(FaceRecord.id)
        ).all()
    listed = [_photo(image, store) for image in images]
    by_id = {p.image_id: p for p in listed}
    for face, opted in zip(faces, _opted_out(store, faces)):
        by_id[face.image_id].faces.append(FaceView(face.id, list(face.box), face.quality, opted))
    _view(
        audit,
        store,
        principal,
        "collection.browse",
        (collection, offset, limit, without_faces),
        collection=collection,
        offset=offset,
        limit=limit,
        without_faces=without_faces,
        image_ids=[p.image_id for p in listed],
    )
    return PhotoPage(collection, total, offset, limit, listed)


def face_thumbnail(store: FaceStore, audit: AuditLog, principal: Principal, face_id: int) -> bytes:
    """A held face's 112x112 crop, for an admin (a collection's page, a privacy review); the first
    one fetched in a collection within the window is audited as ``collection.faces.view``."""
    principal.require("admin")
    rows = store.faces([face_id])
    if face_id not in rows:
        raise NotFound(f"face {face_id} does not exist")
    face, image, collection = rows[face_id]
    _view(
        audit,
        store,
        principal,
        "collection.faces.view",
        (collection,),
        collection=collection,
        face_id=face_id,
        image_id=image.id,
    )
    return face.thumbnail


def without_faces(store: FaceStore, job: Any, limit: int = 500) -> tuple[list[str], int]:
    """The photos an ingest job (``IngestJob``) stored in which no face was found, by their shown
    names (at most ``limit``), and how many there are; those erased since are gone from it."""
    scope = str(job.scope)
    started = _naive(job.created_at) - timedelta(seconds=1)
    ended = _naive(job.finished_at) + timedelta(seconds=1) if job.finished_at else None
    query = select(ImageRecord.source).where(
        ImageRecord.collection_id == job.collection_id,
        ImageRecord.ingested_at >= started,
        ~exists().where(FaceRecord.image_id == ImageRecord.id),
        or_(
            ImageRecord.source == scope,
            ImageRecord.source.startswith(scope.rstrip(os.sep) + os.sep, autoescape=True),
            ImageRecord.source.startswith(scope + "!", autoescape=True),
        ),
    )
    if ended is not None:
        query = query.where(ImageRecord.ingested_at <= ended)
    with store.catalog.session() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        sources = list(session.scalars(query.order_by(ImageRecord.source).limit(limit)))
    return [uploads.display_name(s, store.data_dir) for s in sources], total


# ----- helpers ------------------------------------------------------------------------------------
def _photo(image: ImageRecord, store: FaceStore) -> PhotoView:
    return PhotoView(
        image.id,
        uploads.display_name(image.source, store.data_dir),
        image.sha256,
        image.width,
        image.height,
        image.ingested_at.replace(tzinfo=timezone.utc),
        {k: getattr(image, k) for k in PROVENANCE_FIELDS},
    )


def _opted_out(store: FaceStore, faces: list) -> list[bool]:
    """Per face row (with its embedding and model): whether it matches the opt-out list."""
    flags = [False] * len(faces)
    screen = screen_for(store.catalog)
    for model_id in {f.model_id for f in faces}:
        rows = [i for i, f in enumerate(faces) if f.model_id == model_id]
        vectors = np.stack([np.frombuffer(faces[i].embedding, dtype=np.float32) for i in rows])
        for i, owner in zip(rows, screen.match(vectors, model_id)):
            flags[i] = bool(owner)
    return flags


def _view(audit: AuditLog, store: FaceStore, principal: Principal, action: str, key: tuple, **details: Any) -> None:
    """Log a look unless this user had the same one logged within the window."""
    claim = (id(store.catalog), principal.username, action, *key)
    if not VIEWS.claim(claim):
        return
    try:
        audit.record(principal.username, action, **details)
    except BaseException:
        VIEWS.release(claim)
        raise


def _naive(stamp: str) -> datetime:
    """An ISO 8601 time as the catalog compares times: naive UTC."""
    parsed = datetime.fromisoformat(stamp)
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


@dataclass(frozen=True)
class ShownFailure:
    """A failed file as users see it: an upload's by its upload name, never its path on the server."""

    source: str
    reason: str
    detail: str


def shown_failures(store: FaceStore, collection: str) -> list[ShownFailure]:
    """The collection's failed files for users of the server. Rows of a running upload job, or of one
    a stopped server left, are stored with the server path until the job ends: named here as read."""
    rows = store.failures(store.collection(collection).id)
    return [ShownFailure(uploads.display_name(r.source, store.data_dir), r.reason, r.detail) for r in rows]
