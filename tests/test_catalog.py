"""The whole catalog, graded for real in the local sandbox.

For every problem: the reference passes every test, the starter template fails
every test, every correct solution (each style) earns full marks, and every
known-wrong solution loses points on each test its docstring names.
"""

from __future__ import annotations

import pytest

from grader.engine.catalog import catalog_errors, get_problem, list_problems
from tests.conftest import ROOT, Solution, solutions
from tests.grading import grade_submission

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sandbox_backend")]  # on every real backend

PROBLEMS = [p.id for p in list_problems()]
GRADED = set(PROBLEMS)


def test_every_problem_folder_loads() -> None:
    assert catalog_errors() == {}
    for problem in list_problems():
        assert set(problem.plan.tests) == {t.id for t in problem.tests}  # plans load on first use


@pytest.mark.parametrize("problem_id", PROBLEMS)
def test_reference_passes_every_test(problem_id: str) -> None:
    source = (ROOT / "reference" / f"{problem_id}.py").read_text()
    report = grade_submission(problem_id, {"solution.py": source})
    failed = {t.id: t.message for t in report.tests if t.status != "passed"}
    assert not failed, failed
    assert report.score == report.max_score


@pytest.mark.parametrize("problem_id", PROBLEMS)
def test_template_fails_every_test(problem_id: str) -> None:
    report = grade_submission(problem_id, {"solution.py": get_problem(problem_id).template})
    assert report.score == 0
    assert all(t.status != "passed" for t in report.tests), [t.id for t in report.tests if t.status == "passed"]


@pytest.mark.parametrize("solution", [s for s in solutions("correct") if s.problem in GRADED],
                         ids=lambda s: f"{s.problem}/{s.path.stem}")
def test_correct_solution_earns_full_marks(solution: Solution) -> None:
    report = grade_submission(solution.problem, solution.files)
    failed = {t.id: t.message for t in report.tests if t.status != "passed"}
    assert not failed, failed


@pytest.mark.parametrize("solution", [s for s in solutions("wrong") if s.problem in GRADED],
                         ids=lambda s: f"{s.problem}/{s.path.stem}")
def test_wrong_solution_loses_points_on_its_test(solution: Solution) -> None:
    assert solution.expect and "TBD" not in solution.expect, f"{solution.path.name} names no expected test"
    report = grade_submission(solution.problem, solution.files)
    by_id = {t.id: t for t in report.tests}
    unknown = [t for t in solution.expect if t not in by_id]
    assert not unknown, f"Expect names unknown tests {unknown}"
    for test_id in solution.expect:
        result = by_id[test_id]
        assert result.earned < result.points, f"{test_id} did not catch: {solution.mistake}"
        assert result.message, f"{test_id} failed without a message"
    assert report.score < report.max_score
