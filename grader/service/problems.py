"""The catalog as the API shows it: every caller sees statements and templates, interviewers see the test list."""

from __future__ import annotations

from grader.engine.catalog import Problem, get_problem, list_problems
from grader.service.auth import Principal
from grader.service.schemas import ProblemDetail, ProblemSummary, TestOutline


def _summary(p: Problem) -> ProblemSummary:
    return ProblemSummary(id=p.id, title=p.title, version=p.version, max_score=p.max_score, test_count=p.test_count)


def problem_list(principal: Principal) -> list[ProblemSummary]:
    """Every problem in the catalog."""
    principal.require("submitter")
    return [_summary(p) for p in list_problems()]


def problem_detail(principal: Principal, problem_id: str) -> ProblemDetail:
    """One problem's statement and starter template; the test outline for interviewers only."""
    principal.require("submitter")
    p = get_problem(problem_id)
    tests = [TestOutline(id=t.id, name=t.name, category=t.category, points=t.points, hidden=t.hidden)
             for t in getattr(p, "tests", ())] if principal.can("interviewer") else []
    return ProblemDetail(**_summary(p).model_dump(), statement=p.statement, template=p.template, tests=tests)
