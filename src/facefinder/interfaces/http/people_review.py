"""People, continued: the person page's facts, the review queue (assign, reject) and drawn faces.

The same rules as interfaces/http/people.py: admins and investigators act on the collections they may
search (investigators: the granted ones); auditors read the queue and the facts, never a face image
or a photo. Every action is in the audit log under the caller (services/people/review.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from facefinder.interfaces.http.deps import CanSearch, Reader, Service, ServiceDep
from facefinder.interfaces.http.people import PersonId, PersonOut, may_read, of_person, person_out
from facefinder.interfaces.http.schemas import ERRORS, JPEG, DbId
from facefinder.interfaces.http.search import jpeg
from facefinder.services.people.details import person_details
from facefinder.services.people.review import LOW_SCORE, Review
from facefinder.services.server.accounts import Principal
from facefinder.services.server.uploads import display_name

router = APIRouter(prefix="/api", responses=ERRORS, tags=["people"])


# ----- schemas -------------------------------------------------------------------------------------
class ReviewItemOut(BaseModel):
    """A face waiting for a human."""

    face_id: int
    image_id: int
    source: str
    quality: float
    box: list[float]
    kind: str = Field(description="'unassigned' or 'low_confidence' (put in a person by clustering with a low score)")
    person_id: int | None = Field(None, description="low_confidence: the person clustering put it in")
    score: float | None = None
    suggested_person_id: int | None = Field(None, description="unassigned: the person of its nearest face, if near")
    suggested_score: float | None = None
    drawn_by: str | None = Field(None, description="The user who drew it, for a face drawn by hand")


class ReviewQueueOut(BaseModel):
    """One page of a collection's review queue: doubtful faces first (lowest score first), then unassigned."""

    collection: str
    below: float
    low_confidence: int
    unassigned: int
    offset: int
    limit: int
    items: list[ReviewItemOut]


class AssignIn(BaseModel):
    """The person to put the face in; null: a new person."""

    person_id: PersonId | None = None


class RejectIn(BaseModel):
    """null: not a person to group at all; a person: not this person."""

    person_id: PersonId | None = None


class PhotoOut(BaseModel):
    """A photo the person is in, and their faces in it."""

    image_id: int
    source: str
    captured_at: str | None
    width: int
    height: int
    face_ids: list[int]


class SeenWithOut(BaseModel):
    """Another person with a face in some of the same photos (their image ids)."""

    person_id: int
    label: str | None
    confirmed: bool
    representative_face_id: int | None
    photos: list[int]


class DetailsOut(BaseModel):
    """A person with their photos, first and last capture time, drawn faces and the people seen with them."""

    person: PersonOut
    photos: list[PhotoOut]
    first_captured: str | None
    last_captured: str | None
    undated: int
    seen_with: list[SeenWithOut]
    drawn: dict[int, str] = Field(description="face id -> the user who drew it")


class ImageFaceOut(BaseModel):
    """A face of a photo: its box (photo pixels), person and, if drawn, who drew it."""

    face_id: int
    box: list[float]
    person_id: int | None
    drawn_by: str | None


class ImageFacesOut(BaseModel):
    """A photo's faces, to draw a missed one beside them."""

    image_id: int
    collection: str
    source: str
    width: int
    height: int
    faces: list[ImageFaceOut]


class DrawIn(BaseModel):
    """A box around a face the detector missed, in the photo's own pixels; optionally its person."""

    box: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2")
    person_id: PersonId | None = None


class DrawnOut(BaseModel):
    """The drawn face as stored, and the person it was put in (if one was named)."""

    face_id: int
    aligned_by: str = Field(description="'landmarks' (found in the box) or 'box' (none found: aligned by the box)")
    person: PersonOut | None


# ----- helpers -------------------------------------------------------------------------------------
def review_for(service: Service, principal: Principal) -> Review:
    """The review service acting as this user, reading photos through the server's fences."""
    finder = service.acting_as(principal)
    return Review(finder.people, lambda: finder.pipeline, service.cases.fenced_sources, service.config.max_pixels)


def of_face(principal: Principal, service: Service, face_id: int) -> Review:
    review = review_for(service, principal)
    service.accounts.require_collections(principal, [review.collection_of_face(face_id)])
    return review


# ----- routes --------------------------------------------------------------------------------------
@router.get(
    "/collections/{name}/people/review",
    response_model=ReviewQueueOut,
    summary="The review queue: unassigned and low-confidence faces (audited as a view)",
)
def review_queue(
    name: str,
    principal: Reader,
    service: ServiceDep,
    below: Annotated[float, Query(gt=0, le=1, description="Clustering scores below this are doubtful")] = LOW_SCORE,
    offset: Annotated[int, Query(ge=0, le=2_147_483_647)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ReviewQueueOut:
    service.store.collection(name)
    may_read(principal, service, name)
    queue = review_for(service, principal).queue(name, below, offset, limit)
    out = ReviewQueueOut.model_validate(queue, from_attributes=True)
    for item in out.items:
        item.source = display_name(item.source, service.finder.data_dir)
    return out


@router.get("/people/{person_id}/details", response_model=DetailsOut, summary="A person's page: photos, times, company")
def get_details(person_id: DbId, principal: Reader, service: ServiceDep) -> DetailsOut:
    of_person(principal, service, person_id, acting=False)
    details = person_details(service.acting_as(principal).people, person_id)
    out = DetailsOut.model_validate(
        {**details.to_dict(), "person": person_out(details.person, service.finder.data_dir)}, from_attributes=True
    )
    for photo in out.photos:
        photo.source = display_name(photo.source, service.finder.data_dir)
    return out


@router.get(
    "/people/faces/{face_id}/thumbnail",
    response_class=Response,
    responses=JPEG,
    summary="The aligned crop of a face in the review queue (logged once per look)",
)
def review_thumbnail(face_id: DbId, principal: CanSearch, service: ServiceDep) -> Response:
    return jpeg(of_face(principal, service, face_id).thumbnail(face_id))


@router.post(
    "/people/faces/{face_id}/assign", response_model=PersonOut, summary="Put a face in a person (or a new one)"
)
def assign_face(face_id: DbId, body: AssignIn, principal: CanSearch, service: ServiceDep) -> PersonOut:
    person = of_face(principal, service, face_id).assign(face_id, body.person_id)
    return person_out(person, service.finder.data_dir)


@router.post("/people/faces/{face_id}/reject", status_code=204, summary="Not this person, or not a person to group")
def reject_face(face_id: DbId, body: RejectIn, principal: CanSearch, service: ServiceDep) -> Response:
    of_face(principal, service, face_id).reject(face_id, body.person_id)
    return Response(status_code=204)


@router.get("/people/images/{image_id}/faces", response_model=ImageFacesOut, summary="A photo's faces (for drawing)")
def image_faces(image_id: DbId, principal: Reader, service: ServiceDep) -> ImageFacesOut:
    photo = review_for(service, principal).image(image_id)
    may_read(principal, service, photo.collection)
    out = ImageFacesOut.model_validate(photo, from_attributes=True)
    out.source = display_name(out.source, service.finder.data_dir)
    return out


@router.get(
    "/people/images/{image_id}/photo",
    response_class=Response,
    responses=JPEG,
    summary="The photo, at most 1600 px, to draw a missed face on (logged once per look)",
)
def image_photo(image_id: DbId, principal: CanSearch, service: ServiceDep) -> Response:
    review = review_for(service, principal)
    service.accounts.require_collections(principal, [review.collection_of_image(image_id)])
    return jpeg(review.photo(image_id))


@router.post(
    "/people/images/{image_id}/faces",
    response_model=DrawnOut,
    status_code=201,
    summary="Add a face the detector missed: a box drawn on the photo (audited)",
)
def draw_face(image_id: DbId, body: DrawIn, principal: CanSearch, service: ServiceDep) -> DrawnOut:
    review = review_for(service, principal)
    service.accounts.require_collections(principal, [review.collection_of_image(image_id)])
    face_id, aligned_by, person = review.draw(image_id, body.box, body.person_id)
    shown = person_out(person, service.finder.data_dir) if person else None
    return DrawnOut(face_id=face_id, aligned_by=aligned_by, person=shown)
