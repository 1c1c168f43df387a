"""GET /v1/problems and /v1/problems/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from grader.api.deps import require_role
from grader.api.errors import ERROR_RESPONSES
from grader.service import problems
from grader.service.auth import Principal
from grader.service.schemas import ProblemDetail, ProblemSummary

router = APIRouter(prefix="/v1/problems", tags=["problems"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[ProblemSummary])
def list_problems(me: Principal = Depends(require_role("submitter"))) -> list[ProblemSummary]:
    """Every exercise in the catalog."""
    return problems.problem_list(me)


@router.get("/{problem_id}", response_model=ProblemDetail)
def get_problem(problem_id: str, me: Principal = Depends(require_role("submitter"))) -> ProblemDetail:
    """One exercise: statement (markdown), starter template, visible tests and points (all for interviewers)."""
    return problems.problem_detail(me, problem_id)
