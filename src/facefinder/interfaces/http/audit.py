"""The audit log (auditors): filtered entries, export as CSV or JSON, hash-chain check, the head."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from facefinder.interfaces.http.deps import Auditor, ServiceDep
from facefinder.interfaces.http.schemas import ERRORS, AuditEntryOut, AuditHead, AuditProblem, AuditVerifyOut
from facefinder.services.audit import as_dict as audit_as_dict
from facefinder.services.audit import export_csv

router = APIRouter(prefix="/api", responses=ERRORS)


def audit_filters(
    action: Annotated[
        str | None, Query(max_length=60, description="An action, or the start of one: `lead` finds lead.propose, ...")
    ] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
    case_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[
        str | None, Query(max_length=40, description="ISO 8601 date or time (UTC unless an offset is given), inclusive")
    ] = None,
    until: Annotated[
        str | None,
        Query(max_length=40, description="ISO 8601, inclusive to its precision: a date takes in that whole day"),
    ] = None,
    search_id: Annotated[
        int | None, Query(ge=1, le=2_147_483_647, description="The entries about this case search")
    ] = None,
) -> dict[str, str | int | None]:
    """The audit query filters (a dependency); empty ones are None. A bad date is a 400 naming its field."""
    return {
        "action_prefix": action or None,
        "actor": actor or None,
        "case_id": case_id or None,
        "since": since or None,
        "until": until or None,
        "search_id": search_id,
    }


AuditFilters = Annotated[dict, Depends(audit_filters)]


@router.get(
    "/audit", response_model=list[AuditEntryOut], tags=["audit"], summary="Audit entries, newest first, filtered"
)
def audit_entries(
    auditor: Auditor, service: ServiceDep, filters: AuditFilters, limit: Annotated[int, Query(ge=1, le=10_000)] = 500
) -> list[dict]:
    return [audit_as_dict(e) for e in service.audit.entries(**filters, limit=limit, newest_first=True)]


@router.get(
    "/audit/export",
    tags=["audit"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
    summary="Export filtered entries as CSV or JSON (the export is itself audited)",
)
def audit_export(
    auditor: Auditor,
    service: ServiceDep,
    filters: AuditFilters,
    format: Annotated[Literal["csv", "json"], Query()] = "csv",
) -> Response:
    entries = service.audit.entries(**filters)
    service.audit.record(
        auditor.username,
        "audit.export",
        format=format,
        entries=len(entries),
        filters={("action" if k == "action_prefix" else k): v for k, v in filters.items() if v},
    )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if format == "json":
        body, media = json.dumps([audit_as_dict(e) for e in entries], indent=1), "application/json"
    else:
        body, media = export_csv(entries), "text/csv; charset=utf-8"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="facefinder-audit-{stamp}.{format}"'},
    )


@router.get(
    "/audit/verify",
    response_model=AuditVerifyOut,
    tags=["audit"],
    summary="Check the hash chain: every edited, removed or reordered entry",
)
def audit_verify(auditor: Auditor, service: ServiceDep) -> AuditVerifyOut:
    problems = service.audit.verify()
    head = service.audit.head()
    return AuditVerifyOut(
        ok=not problems,
        entries=len(service.audit.entries()),
        problems=[AuditProblem(entry_id=p.entry_id, problem=p.problem) for p in problems],
        head=AuditHead(**head),
    )


@router.get(
    "/audit/head",
    response_model=AuditHead,
    tags=["audit"],
    summary="The last entry's id and hash: record it elsewhere to pin the log",
)
def audit_head(auditor: Auditor, service: ServiceDep) -> AuditHead:
    return AuditHead(**service.audit.head())
