"""Exports: the submissions list as CSV, with the same filters as GET /v1/submissions.

`/v1/submissions.csv` has no slash after `submissions`, so `/v1/submissions/{submission_id}` never captures it,
whichever router is included first.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from grader.api.deps import get_store, require_role, submission_filter
from grader.api.errors import ERROR_RESPONSES
from grader.service import exports
from grader.service.auth import Principal
from grader.service.schemas import SubmissionFilter
from grader.store.db import Store

router = APIRouter(tags=["submissions"], responses=ERROR_RESPONSES)


@router.get("/v1/submissions.csv", response_model=None,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def submissions_csv(filters: SubmissionFilter = Depends(submission_filter), store: Store = Depends(get_store),
                    me: Principal = Depends(require_role("submitter"))) -> Response:
    """Every matching submission as CSV (no paging): id, problem, candidate, status, created_at, graded_score,
    final_score, overridden, max_score, passed, tests. Interviewers see all, submitters their own (without the
    final score and the override flag). Cells a spreadsheet would run as formulas start with a single quote."""
    return Response(exports.submissions_csv(store, me, filters), media_type=exports.MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{exports.FILENAME}"',
                             "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
