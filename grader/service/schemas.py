"""Pydantic models where data crosses the service's boundary: requests in, views out (API and pages alike)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from grader.engine.files import Files
from grader.engine.report import Report, TestResult

Role = Literal["submitter", "interviewer", "admin"]
Status = Literal["queued", "running", "done", "failed"]

MAX_CANDIDATE_CHARS = 200
MAX_CALLBACK_URL_CHARS = 2000
MAX_METADATA_BYTES = 16 * 1024
MAX_NOTE_CHARS = 10_000
MAX_IDEMPOTENCY_KEY_CHARS = 200


class SubmissionCreate(BaseModel):
    """A new submission: either `code` (sent as solution.py) or `files` with solution.py as the entry."""

    model_config = ConfigDict(extra="forbid")

    problem: str = Field(description="problem id, see GET /v1/problems")
    code: str | None = Field(None, description="the whole solution as one file (becomes solution.py; a Jupyter "
                                                "notebook's JSON is converted to it)")
    files: Files | None = Field(None, description="file name -> text; solution.py is the entry; names are plain "
                                                  "module names like helpers.py; or one notebook, solution.ipynb, "
                                                  "converted to solution.py (code cells in order)")
    candidate: str | None = Field(None, description="who wrote it, as the hiring team names them")
    metadata: dict[str, Any] = Field(default_factory=dict, description="free-form JSON kept with the submission")
    callback_url: str | None = Field(None, description="http(s) URL that receives the signed report summary")


class Links(BaseModel):
    self: str
    report: str
    report_html: str
    report_junit: str


class SimilarMatch(BaseModel):
    """An earlier submission of the same problem that resembles this one."""

    submission_id: str
    candidate: str | None
    created_at: datetime
    score: float = Field(description="similarity from 0 (nothing in common) to 1 (the same code once names, "
                                     "literals, comments, formatting and the starter template's code are ignored)")
    flagged: bool = Field(description="score at or above the threshold: a likely copy")


class SimilarityOut(BaseModel):
    """How a submission compares with the earlier submissions of its problem (interviewers and admins only)."""

    fingerprinted: bool = Field(description="false when the entry file does not parse as Python: then nothing "
                                            "is compared, and the rest is null or empty")
    template_distance: float | None = Field(description="share of the submission's fingerprints not found in the "
                                                        "starter template: 0 for the template handed back, near 1 "
                                                        "for code written from scratch; null without a "
                                                        "fingerprint or a template")
    nearest: list[SimilarMatch] = Field(description="the most similar earlier submissions, best first (at most 3; "
                                                    "only those sharing some code beyond the template)")
    best_score: float | None = Field(description="the first of nearest's scores (0 when none shares code); null "
                                                 "when not compared (no fingerprint, or not yet compared)")
    flagged: bool = Field(description="best_score is at or above the threshold")
    compared: int | None = Field(description="how many earlier submissions of the problem were compared (the "
                                             "most recent ones, up to a bound); null when not compared")
    threshold: float = Field(description="the score from which a match is flagged")
    too_large: bool = Field(False, description="the entry file's fingerprint is over the comparison cap: it is "
                                               "never compared (compared stays null), and that is worth a look")


class SubmissionSummary(BaseModel):
    id: str
    problem: str
    problem_version: str
    candidate: str | None
    status: Status
    score: float | None = Field(description="the grader's score, once graded")
    graded_score: float | None = Field(None, description="the grader's score, once graded (the same as score, "
                                                          "named apart from final_score)")
    final_score: float | None = Field(None, description="interviewers and admins: the score with the interviewers' "
                                                        "overrides applied (equal to score when there are none); "
                                                        "submitters: always null, the interviewers' decisions are "
                                                        "not the candidate's to see")
    overridden: bool | None = Field(None, description="interviewers and admins: whether an interviewer overrode "
                                                      "the points of any test; submitters: always null")
    max_score: float | None
    passed: int | None = None
    tests: int | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: str | None = Field(None, description="why the grader could not grade it (status 'failed')")
    metadata: dict[str, Any] = Field(default_factory=dict)
    links: Links
    similarity: SimilarityOut | None = Field(
        None, exclude_if=lambda value: value is None,
        description="interviewers and admins: the nearest earlier submissions of the same problem and the distance "
                    "from the starter template; submitters: never present (other candidates' work is not theirs "
                    "to learn about)")


class SubmissionPage(BaseModel):
    items: list[SubmissionSummary]
    total: int
    limit: int
    offset: int


class SubmissionFilter(BaseModel):
    problem: str | None = None
    candidate: str | None = None
    status: Status | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_NOTE_CHARS)


class NoteOut(BaseModel):
    id: int
    author: str
    text: str
    created_at: datetime


class OverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test_id: str = Field(min_length=1, max_length=100)
    points: float = Field(description="the points the test earns from now on, between 0 and its maximum")
    reason: str = Field(min_length=1, max_length=MAX_NOTE_CHARS)


class OverrideOut(BaseModel):
    id: int
    test_id: str
    points: float
    previous_points: float
    reason: str
    author: str
    created_at: datetime


class TestResultOut(TestResult):
    """A test of the report as the API exports it: `earned` is the grader's points, `final_earned` beside them."""

    final_earned: float | None = Field(description="interviewers and admins: the points after the interviewers' "
                                                   "overrides (equal to earned when this test has none); "
                                                   "submitters: always null")
    overridden: bool = Field(False, description="an interviewer overrode this test's points (always false for "
                                                "submitters: the interviewers' decisions are not the candidate's "
                                                "to see)")


class ReportOut(Report):
    """GET /v1/submissions/{id}/report: the grader's report with the interviewers' decisions applied.

    Every field of the stored report is kept and means what it means everywhere: `score` and each test's
    `earned` are the grader's, for every reader (as `score` in the submissions list). For interviewers and
    admins the decisions stand beside them: `final_score` and each test's `final_earned` (overrides applied)
    and `overrides`, oldest first. For submitters `final_score` and `final_earned` are null and `overrides`
    is empty.
    """

    tests: list[TestResultOut]  # type: ignore[assignment]
    graded_score: float = Field(description="the grader's score, never changed by an override")
    final_score: float | None = Field(description="interviewers and admins: the score with the overrides applied "
                                                  "(equal to score when there are none); "
                                                  "submitters: always null")
    overrides: list[OverrideOut] = Field(description="interviewers and admins: every override, oldest first "
                                                     "(the latest of a test wins); submitters: always empty")


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    submission_id: str | None
    detail: dict[str, Any]


class WebhookOut(BaseModel):
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


class SubmissionDetail(BaseModel):
    """Everything an interviewer sees about one submission."""

    submission: SubmissionSummary
    files: dict[str, str]
    report: Report | None
    notes: list[NoteOut]
    overrides: list[OverrideOut]
    effective_points: dict[str, float]
    audit: list[AuditEventOut]
    webhook: WebhookOut | None


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: str = Field("", max_length=100)


class TokenOut(BaseModel):
    id: int
    name: str
    role: Role
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself: shown once, only its hash is kept")


class TestOutline(BaseModel):
    id: str
    name: str
    category: str
    points: float
    hidden: bool


class ProblemSummary(BaseModel):
    id: str
    title: str
    version: str
    max_score: float
    test_count: int


class ProblemDetail(ProblemSummary):
    statement: str = Field(description="markdown")
    template: str = Field(description="the candidate's starter file")
    tests: list[TestOutline] = Field(description="the tests in spec order: submitters see the visible ones (hidden "
                                                 "tests are left out; test_count counts them all), interviewers and "
                                                 "admins see every test, hidden ones flagged")
