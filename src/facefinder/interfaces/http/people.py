"""People: a collection's faces grouped by who they show (services/people/), and the human corrections.

Admins and investigators cluster, merge, split, label and confirm the people of the collections they
may search (investigators: the granted ones); auditors read every collection's people, without any
face image. Every call is in the audit log under the caller's name (services/people/service.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from facefinder.interfaces.http.deps import CanSearch, Reader, Service, ServiceDep
from facefinder.interfaces.http.schemas import ERRORS, JPEG, DbId, UtcDatetime
from facefinder.interfaces.http.search import jpeg
from facefinder.services.people.results import ClusterReport, PersonInfo
from facefinder.services.server.accounts import Principal
from facefinder.services.server.uploads import display_name

router = APIRouter(prefix="/api", responses=ERRORS, tags=["people"])
PersonId = Annotated[int, Field(ge=1, le=2_147_483_647)]


# ----- schemas -------------------------------------------------------------------------------------
class MemberOut(BaseModel):
    """One face of a person."""

    face_id: int
    image_id: int
    source: str = Field(
        description="The path or URI its photo was ingested from (an upload: upload:<archive>!<member>)"
    )
    score: float = Field(description="Cosine to the nearest member when it was assigned")
    assigned_by: str = Field(description="'cluster', or the user who put it there")
    quality: float
    box: list[float]


class PersonOut(BaseModel):
    """A person of a collection: a machine suggestion until confirmed. Opted-out faces are never shown."""

    person_id: int
    collection: str
    label: str | None
    confirmed: bool = Field(description="Set only by a person (POST .../confirm); false for the machine's suggestions")
    faces: int
    photos: int
    representative_face_id: int | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    members: list[MemberOut] | None = Field(None, description="The faces, when asked for (always for one person)")


class SplitOut(BaseModel):
    """A split: the person that kept the other faces, and the new one."""

    kept: PersonOut
    split: PersonOut


class ClusterIn(BaseModel):
    """Which faces a clustering run looks at."""

    full: bool = Field(False, description="Re-cluster every face, dropping the suggestions no one confirmed or changed")


class ClusterOut(BaseModel):
    """What a clustering run did."""

    collection: str
    full: bool
    method: str
    threshold: float
    quality_floor: float
    considered: int
    below_quality: int
    opted_out: int
    rejected: int = Field(description="Faces left out because a human said they are not a person to group")
    joined: int
    new_people: int
    new_people_faces: int
    unassigned: int
    dropped_people: int
    people: int
    seconds: float
    notes: list[str]


class MergeIn(BaseModel):
    """The person to merge into this one (it is removed)."""

    other: PersonId


class SplitIn(BaseModel):
    """The faces to take out into a new person."""

    face_ids: list[PersonId] = Field(min_length=1, max_length=10_000)


class LabelIn(BaseModel):
    """A free-text label; empty removes it."""

    label: str = Field(max_length=200)


def person_out(person: PersonInfo, data_dir: Path) -> PersonOut:
    """A person as the API shows it: its faces' photos from an upload named by the upload, never by
    their server path (services/server/uploads.py, ``display_name``)."""
    out = PersonOut.model_validate(person, from_attributes=True)
    for member in out.members or []:
        member.source = display_name(member.source, data_dir)
    return out


# ----- who may see and change what ------------------------------------------------------------------
def may_read(principal: Principal, service: Service, collection: str) -> None:
    """Auditors and admins read every collection's people; investigators the granted ones."""
    if principal.role != "auditor":
        service.accounts.require_collections(principal, [collection])


def of_person(principal: Principal, service: Service, person_id: int, acting: bool) -> None:
    """The person must exist (404) and be in a collection this principal may read, or act on (403)."""
    collection = service.finder.people.collection_of(person_id)
    if acting:
        service.accounts.require_collections(principal, [collection])
    else:
        may_read(principal, service, collection)


# ----- routes --------------------------------------------------------------------------------------
@router.get(
    "/collections/{name}/people",
    response_model=list[PersonOut],
    summary="A collection's people, most faces first (audited as a view)",
)
def list_people(
    name: str,
    principal: Reader,
    service: ServiceDep,
    members: Annotated[bool, Query(description="With each person's faces")] = False,
) -> list[PersonOut]:
    service.store.collection(name)
    may_read(principal, service, name)
    return [
        person_out(p, service.finder.data_dir) for p in service.acting_as(principal).people.list(name, members=members)
    ]


@router.post(
    "/collections/{name}/people/cluster",
    response_model=ClusterOut,
    summary="Group the collection's new faces into people (all of them with full)",
)
def cluster_people(name: str, principal: CanSearch, service: ServiceDep, body: ClusterIn | None = None) -> ClusterOut:
    service.store.collection(name)
    service.accounts.require_collections(principal, [name])
    report: ClusterReport = service.acting_as(principal).people.cluster(name, full=bool(body and body.full))
    return ClusterOut.model_validate(report, from_attributes=True)


@router.get("/people/{person_id}", response_model=PersonOut, summary="One person with their faces (audited)")
def get_person(person_id: DbId, principal: Reader, service: ServiceDep) -> PersonOut:
    of_person(principal, service, person_id, acting=False)
    return person_out(service.acting_as(principal).people.show(person_id), service.finder.data_dir)


@router.get(
    "/people/{person_id}/faces/{face_id}/thumbnail",
    response_class=Response,
    responses=JPEG,
    summary="The aligned crop of one of a person's faces (logged once per look)",
)
def person_face_thumbnail(person_id: DbId, face_id: DbId, principal: CanSearch, service: ServiceDep) -> Response:
    of_person(principal, service, person_id, acting=True)
    return jpeg(service.acting_as(principal).people.thumbnail(person_id, face_id))


@router.post("/people/{person_id}/merge", response_model=PersonOut, summary="Merge another person into this one")
def merge_people(person_id: DbId, body: MergeIn, principal: CanSearch, service: ServiceDep) -> PersonOut:
    of_person(principal, service, person_id, acting=True)
    of_person(principal, service, body.other, acting=True)
    return person_out(service.acting_as(principal).people.merge(person_id, body.other), service.finder.data_dir)


@router.post(
    "/people/{person_id}/split",
    response_model=SplitOut,
    status_code=201,
    summary="Take faces out of a person into a new one",
)
def split_person(person_id: DbId, body: SplitIn, principal: CanSearch, service: ServiceDep) -> SplitOut:
    of_person(principal, service, person_id, acting=True)
    result = service.acting_as(principal).people.split(person_id, body.face_ids)
    return SplitOut(
        kept=person_out(result.kept, service.finder.data_dir), split=person_out(result.split, service.finder.data_dir)
    )


@router.post("/people/{person_id}/label", response_model=PersonOut, summary="Label a person (free text)")
def label_person(person_id: DbId, body: LabelIn, principal: CanSearch, service: ServiceDep) -> PersonOut:
    of_person(principal, service, person_id, acting=True)
    return person_out(service.acting_as(principal).people.label(person_id, body.label), service.finder.data_dir)


@router.post("/people/{person_id}/confirm", response_model=PersonOut, summary="Confirm a person: one person, checked")
def confirm_person(person_id: DbId, principal: CanSearch, service: ServiceDep) -> PersonOut:
    of_person(principal, service, person_id, acting=True)
    return person_out(service.acting_as(principal).people.confirm(person_id), service.finder.data_dir)
