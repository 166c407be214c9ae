"""Search by person (services/people/search.py): the people like a held probe face, and a person used as
the probe. The same rules as a face search: admins and investigators only, a case, a purpose and a
category, the granted collections only, and an audit entry per search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from facefinder.interfaces.http.deps import CanSearch, ServiceDep
from facefinder.interfaces.http.people import of_person
from facefinder.interfaces.http.schemas import ERRORS, DbId, MatchOut, matches_out
from facefinder.services.people.search import PersonProbe
from facefinder.services.server.case_search import check_face

router = APIRouter(prefix="/api", responses=ERRORS, tags=["people"])
Name = Annotated[str, Field(min_length=1, max_length=200)]


class PeopleSearchIn(BaseModel):
    """What a search by person runs under (as a face search: case, purpose, category)."""

    case_id: str = Field(min_length=1, max_length=200, description="Case number")
    purpose: str = Field(min_length=1, max_length=2000, description="Why this search is run")
    category: str = Field(min_length=1, max_length=100, description="One of the configured categories")
    collections: list[Name] | None = Field(
        None, max_length=100, description="Default: every granted collection (for a person: their own)"
    )
    top_k: int = Field(10, ge=1, le=100)
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="Default: the calibrated threshold")


class ProbePeopleIn(PeopleSearchIn):
    """A held probe face (POST /api/probes) to rank people against."""

    probe_id: str = Field(min_length=1, max_length=100)
    face: int = Field(0, ge=0, le=10_000, description="Which face of the probe")


class PersonCandidateOut(BaseModel):
    """A person like the probe: the mean of the template's and the nearest face's cosine."""

    rank: int
    person_id: int
    collection: str
    label: str | None
    confirmed: bool = Field(description="False: a machine suggestion no person checked")
    faces: int = Field(description="Faces in the template")
    score: float
    template_score: float = Field(description="Cosine to the normalised mean of the person's faces")
    band: str
    nearest_face: MatchOut = Field(description="The person's face nearest the probe, with its source")


class FaceLikeOut(MatchOut):
    """A single face like a person used as the probe, ranked and banded as a face search's candidate."""

    rank: int
    band: str


class PeopleSearchOut(BaseModel):
    """People like the probe; for a person used as the probe, single faces like them too."""

    probe: str
    people: list[PersonCandidateOut]
    faces: list[FaceLikeOut]
    threshold: float | None = Field(
        None, description="The threshold searched at (by default, the calibrated one for the faces searched)"
    )


def out(record: PersonProbe, data_dir) -> PeopleSearchOut:
    people = []
    for p in record.people:
        fields = p.to_dict()
        fields["nearest_face"] = matches_out([p.nearest_face], data_dir)[0]
        people.append(PersonCandidateOut(**fields))
    faces = [
        FaceLikeOut(**m.model_dump(), rank=c.rank, band=c.band)
        for m, c in zip(matches_out(record.faces, data_dir), record.faces, strict=True)
    ]
    return PeopleSearchOut(probe=record.probe, people=people, faces=faces, threshold=record.threshold)


@router.post("/people/search", response_model=PeopleSearchOut, summary="People like a held probe face (audited)")
def search_people(body: ProbePeopleIn, principal: CanSearch, service: ServiceDep) -> PeopleSearchOut:
    terms, names = service.cases.checked_terms(
        principal, body.case_id, body.purpose, body.category, body.collections, body.top_k, body.threshold
    )
    probe = service.cases.probes.get(principal, body.probe_id)
    check_face(probe, body.face)
    record = service.acting_as(principal).people_search.face(
        probe.faces[body.face].embedding,
        f"probe:{probe.id}",
        names,
        terms.top_k,
        terms.threshold,
        terms.case_id,
        terms.purpose,
        probe_sha256=probe.sha256,
        face=body.face,
        category=terms.category,
    )
    return out(record, service.finder.data_dir)


@router.post(
    "/people/{person_id}/search",
    response_model=PeopleSearchOut,
    summary="A person as the probe: other people and faces like them (audited)",
)
def search_like_person(
    person_id: DbId, body: PeopleSearchIn, principal: CanSearch, service: ServiceDep
) -> PeopleSearchOut:
    of_person(principal, service, person_id, acting=True)
    collections = body.collections or [service.finder.people.collection_of(person_id)]
    terms, names = service.cases.checked_terms(
        principal, body.case_id, body.purpose, body.category, collections, body.top_k, body.threshold
    )
    record = service.acting_as(principal).people_search.person(
        person_id, names, terms.top_k, terms.threshold, terms.case_id, terms.purpose, category=terms.category
    )
    return out(record, service.finder.data_dir)
