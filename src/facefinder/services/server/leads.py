"""The two-person rule on a case search's candidates (services/server/cases.py checks who may act and
audits it): a candidate is *proposed* as a lead by one user and *confirmed* by another, each with a
note, because a face match alone is never an identification; the proposer can never confirm their own
proposal. Each step locks the candidate's row first, so two users acting at once cannot both win.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, update

from facefinder.errors import Conflict, FieldError, NotFound
from facefinder.services.server.accounts import AccessDenied
from facefinder.services.server.records import Lead
from facefinder.storage.catalog import CaseCandidate, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from facefinder.storage.catalog import Catalog

MAX_NOTE = 4000


def lead_note(note: str, required: bool = False) -> str:
    """The note, stripped; a confirmation must say what was checked, and how."""
    note = (note or "").strip()
    if required and not note:
        raise FieldError("note", "a note is required to confirm a lead (what was checked, and how)")
    if len(note) > MAX_NOTE:
        raise FieldError("note", f"at most {MAX_NOTE} characters")
    return note


def propose_lead(catalog: Catalog, search_id: int, rank: int, username: str, note: str) -> Lead:
    """Mark a candidate as a lead proposed by ``username``; only a plain candidate can be proposed."""
    with catalog.session() as session, session.begin():
        row = _locked_candidate(session, search_id, rank)
        if row.status != "candidate":
            raise Conflict(f"candidate {rank} of search {search_id} is already {row.status}")
        row.status, row.proposed_by, row.proposed_at, row.proposed_note = "proposed", username, utcnow(), note
        return Lead.of(row)


def confirm_lead(catalog: Catalog, search_id: int, rank: int, username: str, note: str) -> Lead:
    """Confirm a proposed lead; ``username`` must not be the person who proposed it."""
    with catalog.session() as session, session.begin():
        row = _locked_candidate(session, search_id, rank)
        if row.status == "candidate":
            raise Conflict(f"candidate {rank} of search {search_id} must be proposed as a lead first")
        if row.status == "confirmed":
            raise Conflict(f"candidate {rank} of search {search_id} is already confirmed")
        if row.proposed_by == username:
            raise AccessDenied(
                "two-person rule: a lead must be confirmed by someone other than the person "
                f"who proposed it ({row.proposed_by})"
            )
        row.status, row.confirmed_by, row.confirmed_at, row.confirmed_note = "confirmed", username, utcnow(), note
        return Lead.of(row)


def _locked_candidate(session: Session, search_id: int, rank: int) -> CaseCandidate:
    # Take the row lock first (SQLite: the database write lock), so two confirmations cannot race.
    session.execute(
        update(CaseCandidate)
        .where(CaseCandidate.search_id == search_id, CaseCandidate.rank == rank)
        .values(status=CaseCandidate.status)
    )
    row = session.scalars(
        select(CaseCandidate).where(CaseCandidate.search_id == search_id, CaseCandidate.rank == rank).with_for_update()
    ).first()
    if row is None:
        raise NotFound(f"search {search_id} has no candidate {rank}")
    return row
