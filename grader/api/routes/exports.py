"""Exports: the submissions list as CSV, with the same filters as GET /v1/submissions.

`/v1/submissions.csv` has no slash after `submissions`, so `/v1/submissions/{submission_id}` never captures it,
whichever router is included first.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Response

from grader.api.deps import get_store, require_role
from grader.api.errors import ERROR_RESPONSES
from grader.errors import InvalidRequest
from grader.service import exports
from grader.service.auth import Principal
from grader.service.schemas import Status, SubmissionFilter
from grader.store.db import Store

router = APIRouter(tags=["submissions"], responses=ERROR_RESPONSES)


def _iso_datetime(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an ISO 8601 date or date-time, like 2026-01-31 or "
                             f"2026-01-31T12:00:00Z (got {value[:40]!r})") from None


@router.get("/v1/submissions.csv", response_model=None,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def submissions_csv(problem: str | None = Query(None, max_length=64),
                    candidate: str | None = Query(None, max_length=200),
                    status: Status | None = None,
                    created_after: str | None = Query(None, description="ISO 8601; inclusive",
                                                      json_schema_extra={"format": "date-time"}),
                    created_before: str | None = Query(None, description="ISO 8601; exclusive",
                                                       json_schema_extra={"format": "date-time"}),
                    store: Store = Depends(get_store),
                    me: Principal = Depends(require_role("submitter"))) -> Response:
    """Every matching submission as CSV (no paging): id, problem, candidate, status, created_at, graded_score,
    final_score, overridden, max_score, passed, tests. Interviewers see all, submitters their own (without the
    final score and the override flag). Cells a spreadsheet would run as formulas start with a single quote."""
    filters = SubmissionFilter(problem=problem, candidate=candidate, status=status,
                               created_after=_iso_datetime(created_after, "created_after"),
                               created_before=_iso_datetime(created_before, "created_before"))
    return Response(exports.submissions_csv(store, me, filters), media_type=exports.MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{exports.FILENAME}"',
                             "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
