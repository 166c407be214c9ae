"""Collections (list, create, erase), their ingest failures, and erasing one photo or face."""

from __future__ import annotations

from fastapi import APIRouter

from facefinder.errors import FieldError, NotFound
from facefinder.interfaces.http.deps import Admin, ApiError, CanSearch, Reader, Service, ServiceDep
from facefinder.interfaces.http.schemas import ERRORS, CollectionCreate, CollectionOut, DbId, DeletedOut, FailureOut
from facefinder.services.server.accounts import Principal

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
def collection_failures(name: str, principal: CanSearch, service: ServiceDep) -> list[FailureOut]:
    service.store.collection(name)
    service.accounts.require_collections(principal, [name])
    return [FailureOut(source=f.source, reason=f.reason, detail=f.detail) for f in service.finder.failures(name)]


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
