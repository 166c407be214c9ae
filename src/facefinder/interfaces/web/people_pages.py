"""The people pages of the web UI (issue 13): what clustering suggested, and where humans correct it.

* ``/collections/{name}/people``: the collection's people as a grid of representative faces with their
  counts, and clustering;
* ``/people/{id}``: a person's faces, photos, first and last capture time and the people seen with
  them; label, confirm, merge with another person, split chosen faces off, "not this person"; search
  like this person (other people and single faces like them, under a case, a purpose and a category);
* ``/collections/{name}/people/review``: the review queue (unassigned and doubtful faces): assign to
  a person or a new one, or reject;
* ``/photos/{image_id}``: a photo with its faces boxed, where a user draws a box around a face the
  detector missed.

Reading goes through the same services and checks as the API (interfaces/http/people.py and
people_review.py: investigators only for granted collections, auditors read-only and never shown a
face image or a photo); every action is a call of static/people.js, person_search.js or app.js to the
JSON API, which audits it. pages.py registers this module and hands it its renderer and sign-in check
(``install``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from facefinder.interfaces.http.deps import get_service
from facefinder.interfaces.http.people import may_read, of_person
from facefinder.interfaces.http.people_review import review_for
from facefinder.interfaces.http.schemas import DbId
from facefinder.services.people.details import person_details
from facefinder.services.people.review import LOW_SCORE
from facefinder.services.server.accounts import Principal
from facefinder.services.server.uploads import display_name

router = APIRouter(include_in_schema=False)
QUEUE_PAGE = 48  # faces per review page
_web: dict[str, Callable[..., Any]] = {}


def install(render: Callable[..., Response], page_user: Callable[[Request], Principal]) -> APIRouter:
    """Take pages.py's renderer and its check of the signed-in user; returns the router."""
    _web.update(render=render, page_user=page_user)
    return router


def _reader(request: Request) -> Principal:
    principal = _web["page_user"](request)
    principal.require("admin", "investigator", "auditor")
    return principal


def _searcher(request: Request) -> Principal:
    principal = _web["page_user"](request)
    principal.require("admin", "investigator")
    return principal


Reader = Annotated[Principal, Depends(_reader)]
Searcher = Annotated[Principal, Depends(_searcher)]


def _acts(request: Request, principal: Principal, collection: str) -> bool:
    """Whether this user may change (and see the faces of) a collection's people."""
    if principal.role == "auditor":
        return False
    return collection in get_service(request).accounts.allowed_collections(principal)


@router.get("/collections/{name}/people")
def people_page(request: Request, name: str, principal: Reader) -> Response:
    """The collection's people: representative faces with counts (auditors: counts only)."""
    service = get_service(request)
    service.store.collection(name)
    may_read(principal, service, name)
    people = service.acting_as(principal).people.list(name)
    return _web["render"](request, "people.html", collection=name, people=people, acts=_acts(request, principal, name))


@router.get("/people/{person_id}")
def person_page(request: Request, person_id: DbId, principal: Reader) -> Response:
    """One person: faces, photos, capture times, company, and the corrections."""
    service = get_service(request)
    of_person(principal, service, person_id, acting=False)
    people = service.acting_as(principal).people
    details = person_details(people, person_id)
    collection = details.person.collection
    acts = _acts(request, principal, collection)
    others = [p for p in people.list(collection) if p.person_id != person_id] if acts else []
    sources = {p.image_id: display_name(p.source, service.finder.data_dir) for p in details.photos}
    categories = service.cases.settings().categories if acts else []  # for "Search like this person"
    return _web["render"](
        request,
        "person.html",
        d=details,
        p=details.person,
        acts=acts,
        others=others,
        sources=sources,
        categories=categories,
    )


@router.get("/collections/{name}/people/review")
def review_page(
    request: Request,
    name: str,
    principal: Reader,
    offset: Annotated[int, Query(ge=0, le=2_147_483_647)] = 0,
    below: Annotated[float, Query(gt=0, le=1)] = LOW_SCORE,
) -> Response:
    """The review queue: doubtful faces first, then unassigned ones, each with what can be done."""
    service = get_service(request)
    service.store.collection(name)
    may_read(principal, service, name)
    queue = review_for(service, principal).queue(name, below, offset, QUEUE_PAGE)
    acts = _acts(request, principal, name)
    people = service.acting_as(principal).people.list(name) if acts else []
    sources = {i.face_id: display_name(i.source, service.finder.data_dir) for i in queue.items}
    return _web["render"](
        request, "people_review.html", q=queue, acts=acts, people=people, sources=sources, page=QUEUE_PAGE
    )


@router.get("/photos/{image_id}")
def photo_page(request: Request, image_id: DbId, principal: Searcher) -> Response:
    """A photo with its faces boxed, to draw a box around a face the detector missed."""
    service = get_service(request)
    review = review_for(service, principal)
    service.accounts.require_collections(principal, [review.collection_of_image(image_id)])
    photo = review.image(image_id)
    people = service.acting_as(principal).people.list(photo.collection)
    source = display_name(photo.source, service.finder.data_dir)
    return _web["render"](request, "people_photo.html", photo=photo, source=source, people=people)
