"""Collections (list, create, erase), their photos with their faces (admins, paged), their ingest
failures, and erasing one photo or face."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from facefinder.errors import FieldError, NotFound
from facefinder.interfaces.http.deps import Admin, ApiError, CanSearch, Reader, Service, ServiceDep
from facefinder.interfaces.http.schemas import (
    ERRORS,
    JPEG,
    CollectionCreate,
    CollectionOut,
    DbId,
    DeletedOut,
    FailureOut,
    UtcDatetime,
)
from facefinder.services.server import browse
from facefinder.services.server.accounts import Principal


class PhotoFaceOut(BaseModel):
    """A face found in the photo."""

    face_id: int
    box: list[float]
    quality: float
    opted_out: bool = Field(description="Matches the opt-out list: hidden from search, to be reviewed and erased")


class PhotoOut(BaseModel):
    """A photo of the collection, with its faces."""

    image_id: int
    source: str = Field(description="Where the photo came from (an upload as upload:<archive>!<member>)")
    sha256: str
    width: int
    height: int
    ingested_at: UtcDatetime
    provenance: dict[str, str | None]
    faces: list[PhotoFaceOut]


class PhotoPageOut(BaseModel):
    """A page of a collection's photos, oldest first."""

    collection: str
    total: int = Field(description="Photos in the collection (with the filter)")
    offset: int
    limit: int
    photos: list[PhotoOut]


router = APIRouter(prefix="/api", responses=ERRORS)


def collections_for(principal: Principal, service: Service) -> list[CollectionOut]:
    """The collections this principal may see (investigators: the granted ones), with counts."""
    infos = service.store.collections()
    if principal.role == "investigator":
        allowed = set(service.accounts.allowed_collections(principal))
        infos = [c for c in infos if c.name in allowed]
    return [
        CollectionOut(
            name=c.name,
            description=c.description,
            purpose=getattr(c, "purpose", None),
            legal_basis=getattr(c, "legal_basis", None),
            retention_days=getattr(c, "retention_days", None),
            model_id=c.model_id,
            images=c.images,
            faces=c.faces,
            failures=c.failures,
        )
        for c in infos
    ]


@router.get(
    "/collections",
    response_model=list[CollectionOut],
    tags=["collections"],
    summary="Collections with counts (investigators: the granted ones)",
)
def list_collections(principal: Reader, service: ServiceDep) -> list[CollectionOut]:
    return collections_for(principal, service)


@router.post(
    "/collections",
    response_model=CollectionOut,
    status_code=201,
    tags=["collections"],
    summary="Create an empty collection",
)
def create_collection(body: CollectionCreate, admin: Admin, service: ServiceDep) -> CollectionOut:
    name = body.name.strip()
    if not name:
        raise FieldError("name", "a name is required")
    if any(c.name == name for c in service.store.collections()):
        raise ApiError(409, "conflict", f"collection {name!r} already exists", "name")
    service.acting_as(admin).create_collection(
        name,
        purpose=body.purpose,
        legal_basis=body.legal_basis,
        retention_days=body.retention_days,
        description=body.description,
    )
    return next(c for c in collections_for(admin, service) if c.name == name)


@router.delete(
    "/collections/{name}",
    response_model=DeletedOut,
    tags=["collections"],
    summary="Erase a collection and every face in it",
)
def delete_collection(name: str, admin: Admin, service: ServiceDep) -> DeletedOut:
    service.acting_as(admin).delete_collection(name)
    return DeletedOut(deleted=f"collection {name}")


@router.get(
    "/collections/{name}/failures",
    response_model=list[FailureOut],
    tags=["collections"],
    summary="Files an ingest could not use, and why",
)
def collection_failures(
    name: str,
    principal: CanSearch,
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0, le=2_147_483_647)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10_000, description="Default: all")] = None,
) -> list[FailureOut]:
    service.store.collection(name)
    service.accounts.require_collections(principal, [name])
    failures = browse.shown_failures(service.store, name)[offset : None if limit is None else offset + limit]
    return [FailureOut(source=f.source, reason=f.reason, detail=f.detail) for f in failures]


@router.get(
    "/collections/{name}/images",
    response_model=PhotoPageOut,
    tags=["collections"],
    summary="A page of the collection's photos with their faces, oldest first (logged as collection.browse)",
)
def collection_images(
    name: str,
    admin: Admin,
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0, le=2_147_483_647)] = 0,
    limit: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 50,
    without_faces: Annotated[bool, Query(description="Only the photos in which no face was found")] = False,
) -> PhotoPageOut:
    page = browse.photos(service.store, service.audit, admin, name, offset, limit, without_faces)
    return PhotoPageOut.model_validate(page, from_attributes=True)


@router.get(
    "/faces/{face_id}/thumbnail",
    response_class=Response,
    responses=JPEG,
    tags=["collections"],
    summary="A held face (admins; logged as collection.faces.view, once per look at a collection)",
)
def face_thumbnail(face_id: DbId, admin: Admin, service: ServiceDep) -> Response:
    data = browse.face_thumbnail(service.store, service.audit, admin, face_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.delete(
    "/images/{image_id}", response_model=DeletedOut, tags=["collections"], summary="Erase one photo and its faces"
)
def delete_image(image_id: DbId, admin: Admin, service: ServiceDep) -> DeletedOut:
    faces = service.acting_as(admin).delete_image(image_id)
    return DeletedOut(deleted=f"image {image_id}", faces=faces)


@router.delete("/faces/{face_id}", response_model=DeletedOut, tags=["collections"], summary="Erase one face")
def delete_face(face_id: DbId, admin: Admin, service: ServiceDep) -> DeletedOut:
    if not service.acting_as(admin).delete_face(face_id):
        raise NotFound(f"face {face_id} does not exist")
    return DeletedOut(deleted=f"face {face_id}", faces=1)
