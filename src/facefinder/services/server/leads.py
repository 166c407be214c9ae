"""The two-person rule on a case search's candidates, and the way out of it: a candidate is *proposed*
as a lead by one user and *confirmed* by another, each with a note, because a face match alone is
never an identification; the proposer can never confirm their own proposal. Anyone who may act on
the search (the proposer withdrawing, or another investigator) can close a candidate or a lead as
*not a match*, with a note saying why, so that a lead checked and found wrong says so in the record
instead of staying "proposed" for ever.

Only a face that can be shown can be a lead: a near miss (below the threshold, shown on request), a
face withheld while its person's opt-out is reviewed and an erased face are refused with a 409 that
says which. Each step locks the candidate's row first, so two users acting at once cannot both win;
each is audited (``lead.propose``, ``lead.confirm``, ``lead.not_a_match``) with its note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from facefinder.errors import Conflict, FieldError, NotFound
from facefinder.services.server.accounts import AccessDenied
from facefinder.services.server.case_views import unavailable
from facefinder.services.server.records import Lead
from facefinder.storage.base import utcnow
from facefinder.storage.cases import CaseCandidate

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from facefinder.services.audit import AuditLog
    from facefinder.services.server.accounts import Principal
    from facefinder.services.server.records import CaseRecord
    from facefinder.storage.catalog import Catalog

MAX_NOTE = 4000
CONFIRM_NOTE = "a note is required to confirm a lead (what was checked, and how)"
NOT_A_MATCH_NOTE = "a note is required to mark a candidate not a match (what was checked, and why it is not)"


def lead_note(note: str, required: bool | str = False) -> str:
    """The note, stripped; a confirmation must say what was checked, and how (``required``: True, or
    the message that says why a note is needed)."""
    note = (note or "").strip()
    if required and not note:
        raise FieldError("note", required if isinstance(required, str) else CONFIRM_NOTE)
    if len(note) > MAX_NOTE:
        raise FieldError("note", f"at most {MAX_NOTE} characters")
    return note


def propose_lead(catalog: Catalog, search_id: int, rank: int, username: str, note: str) -> Lead:
    """Mark a candidate as a lead proposed by ``username``; only a plain candidate can be proposed."""
    with catalog.session() as session, session.begin():
        row = _locked_candidate(session, search_id, rank)
        if row.status != "candidate":
            raise Conflict(f"candidate {rank} of search {search_id} {_state(row.status)}")
        row.status, row.proposed_by, row.proposed_at, row.proposed_note = "proposed", username, utcnow(), note
        return Lead.of(row)


def confirm_lead(catalog: Catalog, search_id: int, rank: int, username: str, note: str) -> Lead:
    """Confirm a proposed lead; ``username`` must not be the person who proposed it."""
    with catalog.session() as session, session.begin():
        row = _locked_candidate(session, search_id, rank)
        if row.status == "candidate":
            raise Conflict(f"candidate {rank} of search {search_id} must be proposed as a lead first")
        if row.status != "proposed":
            raise Conflict(f"candidate {rank} of search {search_id} {_state(row.status)}")
        if row.proposed_by == username:
            raise AccessDenied(
                "two-person rule: a lead must be confirmed by someone other than the person "
                f"who proposed it ({row.proposed_by})"
            )
        row.status, row.confirmed_by, row.confirmed_at, row.confirmed_note = "confirmed", username, utcnow(), note
        return Lead.of(row)


def mark_not_a_match(catalog: Catalog, search_id: int, rank: int, username: str, note: str) -> tuple[Lead, str]:
    """Close a candidate, a proposed or a confirmed lead as not a match; returns it and its status before."""
    with catalog.session() as session, session.begin():
        row = _locked_candidate(session, search_id, rank)
        before = row.status
        if before in ("not_a_match", "near_miss"):
            raise Conflict(f"candidate {rank} of search {search_id} {_state(before)}")
        row.status, row.not_a_match_by, row.not_a_match_at, row.not_a_match_note = (
            "not_a_match",
            username,
            utcnow(),
            note,
        )
        return Lead.of(row), before


def _state(status: str) -> str:
    """Why a candidate in ``status`` cannot take the step asked, in words."""
    return {
        "near_miss": "is a near miss (below the threshold): it is shown on request and is never a lead",
        "not_a_match": "was marked not a match",
    }.get(status, f"is already {status}")


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


class LeadSteps:
    """The lead steps of Cases (services/server/cases.py): who may act is checked there (``_with_faces``,
    ``candidate``), the rule here, and each step audited under the search's case. A mixin, kept apart
    so that the two-person rule reads in one place."""

    catalog: Catalog
    audit: AuditLog

    def propose(self, principal: Principal, search_id: int, rank: int, note: str = "") -> Lead:
        record, candidate = self.candidate(principal, search_id, rank, self._with_faces(principal, search_id))
        self._require_offerable(candidate)
        note = lead_note(note)
        lead = propose_lead(self.catalog, search_id, rank, principal.username, note)
        self._audit_step(principal, record, lead, "lead.propose", note=note)
        return lead

    def confirm(self, principal: Principal, search_id: int, rank: int, note: str) -> Lead:
        record, candidate = self.candidate(principal, search_id, rank, self._with_faces(principal, search_id))
        note = lead_note(note, required=True)
        self._require_offerable(candidate)
        lead = confirm_lead(self.catalog, search_id, rank, principal.username, note)
        self._audit_step(principal, record, lead, "lead.confirm", proposed_by=lead.proposed_by, note=note)
        return lead

    def not_a_match(self, principal: Principal, search_id: int, rank: int, note: str) -> Lead:
        """Close a candidate or lead as not a match, with a note saying why (the proposer withdrawing
        it, or anyone else who may act on the search); a withheld or erased face can be closed too."""
        record, _ = self.candidate(principal, search_id, rank, self._with_faces(principal, search_id))
        note = lead_note(note, required=NOT_A_MATCH_NOTE)
        lead, before = mark_not_a_match(self.catalog, search_id, rank, principal.username, note)
        self._audit_step(principal, record, lead, "lead.not_a_match", previous_status=before, note=note)
        return lead

    def _require_offerable(self, candidate: Lead) -> None:
        """A Conflict unless the candidate's face can be shown now (not withheld, not erased)."""
        if candidate.withheld or self._held(candidate.face_id) is None:
            raise Conflict(
                f"candidate {candidate.rank} of search {candidate.search_id} cannot be a lead: "
                f"its face is {unavailable(candidate)}"
            )

    def _audit_step(self, principal: Principal, record: CaseRecord, lead: Lead, action: str, **details: Any) -> None:
        self.audit.record(
            principal.username,
            action,
            record.case_id,
            search_id=record.id,
            rank=lead.rank,
            face_id=lead.face_id,
            **details,
        )
