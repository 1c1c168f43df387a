"""The catalog as the API shows it: statements, templates, visible tests for everyone, hidden ones for interviewers."""

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
    """One problem's statement, starter template and tests: the visible ones for submitters, all for interviewers."""
    principal.require("submitter")
    p = get_problem(problem_id)
    everything = principal.can("interviewer")
    tests = [TestOutline(id=t.id, name=t.name, category=t.category, points=t.points, hidden=t.hidden)
             for t in p.tests if everything or not t.hidden]
    return ProblemDetail(**_summary(p).model_dump(), statement=p.statement, template=p.template, tests=tests)
