"""The report: data first (this pydantic model, serialized as JSON), then views of it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

TestStatus = Literal["passed", "failed", "error", "timeout", "skipped"]
Category = Literal["conformance", "forward", "backward", "gradient check", "state", "statistics", "stability",
                   "training", "static", "efficiency"]


class ProblemRef(BaseModel):
    id: str
    version: str


class Figure(BaseModel):
    """Data for a plot a view may draw (training curve, samples, gradient norms); never an image."""

    kind: Literal["line", "scatter", "bar"]
    title: str
    x_label: str = ""
    y_label: str = ""
    series: dict[str, list[list[float]]] = Field(default_factory=dict,
                                                 description="name -> list of [x, y] points")


class Output(BaseModel):
    text: str = ""
    bytes_total: int = 0
    truncated: bool = False

    @classmethod
    def join(cls, outputs: list[Output]) -> Output:
        return cls(text="".join(o.text for o in outputs), bytes_total=sum(o.bytes_total for o in outputs),
                   truncated=any(o.truncated for o in outputs))


class TestResult(BaseModel):
    id: str
    name: str
    category: Category
    points: float
    earned: float
    status: TestStatus
    fault: Literal["candidate", "grader"] | None = Field(
        None, description="who is to blame when the test did not pass: the candidate's code, or the grader itself")
    message: str = ""
    counterexample: str | None = None
    duration_s: float = 0.0
    hidden: bool = Field(False, description="details are left out of the candidate-safe view")
    details: dict[str, Any] = Field(default_factory=dict)
    figures: list[Figure] = Field(default_factory=list)
    output: Output = Field(default_factory=Output, description="what the candidate's code printed during this test")
    caused_by: list[str] = Field(default_factory=list, description=(
        "the failed tests this failure follows from: graded again with the reference standing in for the "
        "functions they called, this test passed (grader/engine/rootcause.py); its points are still lost"))


class Finding(BaseModel):
    """Something noticed about the submission as a whole (static analysis, sandbox events)."""

    kind: Literal["forbidden-import", "autograd", "syntax", "import-error", "stray-process", "sandbox", "note",
                  "notebook"]
    severity: Literal["info", "warning", "error"]
    message: str
    line: int | None = None


class Environment(BaseModel):
    grader_version: str
    seed: int
    sandbox_backend: str
    isolation: list[str] = Field(default_factory=list)
    isolation_weaker: list[str] = Field(default_factory=list)
    python: str = ""
    numpy: str = ""
    torch: str = ""
    hypothesis: str = ""


class RootCause(BaseModel):
    """One mistake and what it cost: a failed test no other failure explains, and the failures that follow from it."""

    test: str = Field(description="the failed test that is the likely root")
    functions: list[str] = Field(description="the submission's functions the reference stood in for")
    followers: list[str] = Field(default_factory=list, description="failed tests that pass with them standing in")
    points_lost: float = Field(description="the points the root and its followers lost together")


class Report(BaseModel):
    problem: ProblemRef
    status: Literal["graded", "incomplete", "error"] = Field(
        description="'graded': every verdict is the candidate's own. 'incomplete': the grader failed in some test "
                    "(never the candidate's loss; the score is not final and the submission is graded again). "
                    "'error': the grader could not grade at all")
    score: float
    max_score: float
    tests: list[TestResult]
    findings: list[Finding] = Field(default_factory=list)
    output: Output = Field(default_factory=Output, description="everything printed, every test's output in order")
    environment: Environment
    error: str | None = Field(None, description="what went wrong in the grader when status is 'incomplete' or 'error'")
    root_causes: list[RootCause] = Field(default_factory=list, description=(
        "failures that explain others, largest loss first; empty when no failure was shown to follow from another"))

    @property
    def complete(self) -> bool:
        return self.status == "graded"
    duration_s: float = 0.0

    @property
    def passed(self) -> int:
        return sum(t.status == "passed" for t in self.tests)

    def candidate_view(self) -> Report:
        """The report a candidate may see: hidden tests keep their verdict and lose everything else.

        A hidden test's output and duration go too (what it printed could show its data; how long it
        ran could hint at its size), and the submission's output is rebuilt from visible tests only.
        """
        hidden = {t.id for t in self.tests if t.hidden}
        tests = [t if not t.hidden else t.model_copy(update={"message": "hidden test", "counterexample": None,
                                                             "details": {}, "figures": [], "output": Output(),
                                                             "duration_s": 0.0, "caused_by": []})
                 for t in self.tests]
        # Root causes say which functions a test depends on: none that involves a hidden test is shown.
        tests = [t.model_copy(update={"caused_by": []}) if set(t.caused_by) & hidden else t for t in tests]
        causes = [c for c in self.root_causes if c.test not in hidden and not set(c.followers) & hidden]
        output = Output.join([t.output for t in tests if not t.hidden])
        return self.model_copy(update={"tests": tests, "output": output, "duration_s": 0.0, "root_causes": causes})


def points_after_overrides(report: Report, overrides: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Test id -> points after the interviewers' overrides, given as (test id, points) oldest first.

    The latest override of a test wins; one of a test the report does not have counts nowhere. The one
    computation of it: the service (`effective_points`), the pages and the JUnit view all call it.
    """
    points = {t.id: t.earned for t in report.tests}
    for test_id, value in overrides:
        if test_id in points:
            points[test_id] = float(value)
    return points


def total_points(points: Mapping[str, float]) -> float:
    """The score of test id -> points (rounded as every score is)."""
    return round(sum(points.values()), 6)


def score_after_overrides(report: Report, overrides: Iterable[tuple[str, float]]) -> float:
    """The final score: the grader's points with the interviewers' overrides (test id, points) applied."""
    return total_points(points_after_overrides(report, overrides))
