"""Interviewers' pages rendered from data: a report page, the submissions list, the login page.

Everything a candidate controls (code, output, messages, file names, notes typed
by people) reaches the page only through Jinja2 expressions with autoescaping
on. Nothing here marks text as safe: syntax highlighting is done by handing
Pygments' tokens to the template as (css class, text) pairs, so even the
highlighted code is escaped by Jinja2 and not by a second escaper.
The pages run no script at all; `content_security_policy()` says so to the
browser as a second line of defence.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pygments.lexers import PythonLexer
from pygments.token import STANDARD_TYPES, _TokenType

from grader.engine.checks.static import parse_tree
from grader.engine.report import Finding, Report, TestResult, points_after_overrides, total_points
from grader.reports.plots import figure_data_uri

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STYLESHEET = "pages.css"
FAILING_STATUSES = ("failed", "error", "timeout")
# How a plan names a test after what it exercises: "rnn_step_backward matches ...", "conv2d_forward's speed",
# "TwoLayerNet.loss: ...", "train_cnn: ...". The leading dotted name of the test's name (then of its message,
# then the test id) is the function under test when the submission defines it.
_LEADING_NAME = re.compile(r"\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)")
# "(helpers.py, line 12)" as CandidateError.summary() writes it; "solution.py does not compile: ... (line 3)".
_FILE_LINE = re.compile(r"([^\s(),:'\"]+\.py), line (\d+)")
_LINE = re.compile(r"\bline (\d+)\b")


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The one Jinja2 environment of the pages: autoescape always on, undefined names are errors."""
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["points"] = format_points
    env.filters["when"] = format_when
    env.filters["detail"] = format_detail
    return env


@lru_cache(maxsize=1)
def content_security_policy() -> str:
    """The pages' CSP: no script of any origin, only our inline stylesheet (by hash) and data: images."""
    css = environment().get_template(STYLESHEET).render()
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return ("default-src 'none'; script-src 'none'; " f"style-src 'sha256-{digest}'; img-src data:; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


# ---------------------------------------------------------------------------------------------------------------
# Data the pages are rendered from (the router builds these from the service layer).


@dataclass(frozen=True)
class SubmissionRow:
    """One submission as a row of the list and the header of its report page."""

    id: str
    problem: str
    candidate: str
    status: str
    created_at: datetime | str | None = None
    score: float | None = None
    max_score: float | None = None
    error: str | None = None
    graded_score: float | None = None  # the grader's own score, when `score` is a final score after overrides
    overridden: bool = False
    similar_score: float | None = None  # the nearest earlier submission's similarity score (interviewers' list)
    similar_flagged: bool = False


@dataclass(frozen=True)
class Viewer:
    """Who is looking: shown in the header; decides which forms appear."""

    name: str
    role: str
    csrf_token: str = ""
    can_annotate: bool = False


@dataclass(frozen=True)
class Links:
    """URLs of the pages, relative to where the pages router is mounted."""

    prefix: str = ""

    def login(self) -> str:
        return f"{self.prefix}/login"

    def logout(self) -> str:
        return f"{self.prefix}/logout"

    def submissions(self, **query: str | int | None) -> str:
        kept = {k: v for k, v in query.items() if v not in ("", None)}
        return f"{self.prefix}/submissions" + (f"?{urlencode(kept)}" if kept else "")

    def submissions_csv(self, **query: str | int | None) -> str:
        """The list as CSV with the same filters (paging is left out: the export has every matching row)."""
        kept = {k: v for k, v in query.items() if v not in ("", None) and k != "page"}
        return f"{self.prefix}/submissions.csv" + (f"?{urlencode(kept)}" if kept else "")

    def compare(self, problem: str = "", ids: Sequence[str] = ()) -> str:
        kept = {k: v for k, v in (("problem", problem), ("ids", ",".join(ids))) if v}
        return f"{self.prefix}/compare" + (f"?{urlencode(kept)}" if kept else "")

    def report(self, submission_id: str) -> str:
        return f"{self.prefix}/submissions/{quote(submission_id, safe='')}"

    def notes(self, submission_id: str) -> str:
        return self.report(submission_id) + "/notes"

    def overrides(self, submission_id: str) -> str:
        return self.report(submission_id) + "/overrides"


@dataclass(frozen=True)
class Pager:
    """Where the previous and next pages of a list are, if any."""

    prev_url: str | None = None
    next_url: str | None = None
    total: int | None = None


# ---------------------------------------------------------------------------------------------------------------
# Filters


def format_points(value: float | None) -> str:
    """Points without float noise: 2.0 -> '2', 0.3333333 -> '0.333'."""
    if value is None:
        return "–"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def format_when(value: datetime | str | None) -> str:
    """A timestamp in UTC to the minute; strings are shown as given."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_detail(value: Any) -> str:
    """An audit event's detail (text or a small dict) as one line of text."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={format_detail(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_detail(v) for v in value) + "]"
    return str(value)


# ---------------------------------------------------------------------------------------------------------------
# Candidate code: highlighted as data, with the failing lines marked.


@dataclass
class Mark:
    """Why a line is marked: a failing test or a finding pointing at it."""

    label: str
    message: str
    anchor: str = ""


@dataclass
class FunctionNote:
    """Shown above the first line of a function that failing tests exercise."""

    function: str
    anchor: str
    tests: list[str] = field(default_factory=list)


@dataclass
class CodeLine:
    number: int
    spans: list[tuple[str, str]]
    marks: list[Mark] = field(default_factory=list)
    in_function: bool = False  # inside a function under test of a failing test
    function_note: FunctionNote | None = None

    @property
    def mark_groups(self) -> list[tuple[str, list[str]]]:
        """The marks as (message, labels): several tests failing the same way on a line say it once."""
        groups: dict[str, list[str]] = {}
        for mark in self.marks:
            groups.setdefault(mark.message, []).append(mark.label)
        return list(groups.items())


@dataclass
class CodeFile:
    name: str
    anchor: str
    lines: list[CodeLine]

    @property
    def marked(self) -> list[CodeLine]:
        return [line for line in self.lines if line.marks]


def _css_class(ttype: _TokenType) -> str:
    """Pygments' short class for a token type ('k', 's2', ...), climbing to a parent type when needed."""
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return str(STANDARD_TYPES[ttype])


def highlight_lines(code: str) -> list[list[tuple[str, str]]]:
    """The code's lines, each a list of (css class, text) spans; the text is raw and escaped by the template."""
    lexer = PythonLexer(stripnl=False, ensurenl=False, tabsize=0)
    lines: list[list[tuple[str, str]]] = [[]]
    for ttype, value in lexer.get_tokens(code):
        css = _css_class(ttype)
        parts = value.split("\n")
        for i, part in enumerate(parts):
            if i:
                lines.append([])
            if not part:
                continue
            spans = lines[-1]
            if spans and spans[-1][0] == css:
                spans[-1] = (css, spans[-1][1] + part)
            else:
                spans.append((css, part))
    # Pygments never drops text, but a trailing newline leaves one empty line that the file does not have.
    if len(lines) > 1 and not lines[-1] and code.endswith("\n"):
        lines.pop()
    return lines


def failure_location(message: str, details: Mapping[str, Any], files: Mapping[str, str],
                     entry: str) -> tuple[str, int] | None:
    """Which file and line a failure points at: details['line'] (file named in the message, else the entry)
    or a 'name.py, line N' / 'name.py ... line N' in the message."""
    line = details.get("line")
    named = [(m.group(1), int(m.group(2))) for m in _FILE_LINE.finditer(message) if m.group(1) in files]
    if type(line) is int:
        for name, number in named:
            if number == line:
                return name, line
        return entry, line
    if named:
        return named[-1]
    for name in files:
        if message.startswith(name + " "):
            found = _LINE.search(message)
            if found:
                return name, int(found.group(1))
    return None


def _finding_location(finding: Finding, files: Mapping[str, str], entry: str) -> tuple[str, int] | None:
    if finding.line is None:
        return None
    for name in files:
        if finding.message.startswith(name + " "):
            return name, finding.line
    return entry, finding.line


def build_code_files(files: Mapping[str, str], entry: str, tests: Sequence[TestResult],
                     findings: Sequence[Finding]) -> tuple[list[CodeFile], dict[str, str]]:
    """The candidate's files ready for the template (entry first), and test id -> anchor of its marked line."""
    ordered = sorted(files, key=lambda name: (name != entry, name))
    code_files = {name: CodeFile(name=name, anchor=f"file{i}",
                                 lines=[CodeLine(n, spans) for n, spans in enumerate(highlight_lines(files[name]), 1)])
                  for i, name in enumerate(ordered)}
    test_anchors: dict[str, str] = {}

    def mark(where: tuple[str, int] | None, label: str, message: str) -> str | None:
        if where is None or where[0] not in code_files:
            return None
        code = code_files[where[0]]
        if not 1 <= where[1] <= len(code.lines):
            return None
        anchor = f"{code.anchor}-L{where[1]}"
        code.lines[where[1] - 1].marks.append(Mark(label=label, message=message, anchor=anchor))
        return anchor

    for test in tests:
        if test.status in FAILING_STATUSES:
            anchor = mark(failure_location(test.message, test.details, files, entry), test.name, test.message)
            if anchor:
                test_anchors[test.id] = anchor
    for finding in findings:
        mark(_finding_location(finding, files, entry), finding.kind, finding.message)
    return [code_files[name] for name in ordered], test_anchors


@dataclass(frozen=True)
class FunctionSpan:
    """Where a function (or class, or method as `Class.method`) of the submission is defined."""

    file: str
    start: int  # its first line, decorators included
    end: int


def _spans_of(tree: ast.Module, name: str) -> dict[str, FunctionSpan]:
    spans: dict[str, FunctionSpan] = {}

    def span(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> FunctionSpan:
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        return FunctionSpan(file=name, start=start, end=node.end_lineno or node.lineno)

    # In the order Python runs them: a later definition of a name replaces an earlier one.
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            spans[node.name] = span(node)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    spans[f"{node.name}.{item.name}"] = span(item)
    return spans


def defined_functions(files: Mapping[str, str], entry: str) -> dict[str, FunctionSpan]:
    """Top-level functions, classes and methods of the submission, found with `ast` (never run).

    The grader calls names of the entry file, so its definitions win over a helper file's; a file that
    does not parse defines nothing here.
    """
    found: dict[str, FunctionSpan] = {}
    for name in sorted(files, key=lambda n: (n == entry, n)):  # the entry last: its names win
        tree = parse_tree(files[name], name)
        if tree is None:
            continue
        found.update(_spans_of(tree, name))
    return found


def function_under_test(test: TestResult, defined: Mapping[str, FunctionSpan]) -> str | None:
    """The submission's function a test exercises: `details['function']` when the plan says so, else the name
    the test's name (or message, or id) starts with, when the submission defines it."""
    candidates: list[object] = [test.details.get("function")]
    for text in (test.name, test.message):
        found = _LEADING_NAME.match(text)
        if found:
            candidates.append(found.group(1))
    candidates.append(test.id)
    for candidate in candidates:
        if isinstance(candidate, str) and candidate in defined:
            return candidate
    return None


def mark_functions_under_test(code_files: Sequence[CodeFile], files: Mapping[str, str], entry: str,
                              tests: Iterable[TestResult]) -> dict[str, tuple[str, str]]:
    """Highlight the function each failing test exercises (wrong values included, not only raises with a line);
    returns test id -> (function name, anchor of its note)."""
    by_name = {f.name: f for f in code_files}
    defined = defined_functions(files, entry)
    found: dict[str, tuple[str, str]] = {}
    for test in tests:
        if test.status not in FAILING_STATUSES:
            continue
        function = function_under_test(test, defined)
        if function is None:
            continue
        where = defined[function]
        code = by_name.get(where.file)
        if code is None or not 1 <= where.start <= len(code.lines):
            continue
        first = code.lines[where.start - 1]
        if first.function_note is None or first.function_note.function != function:
            first.function_note = FunctionNote(function=function, anchor=f"{code.anchor}-fn{where.start}")
        if test.name not in first.function_note.tests:
            first.function_note.tests.append(test.name)
        for line in code.lines[where.start - 1:min(where.end, len(code.lines))]:
            line.in_function = True
        found[test.id] = (function, first.function_note.anchor)
    return found


# ---------------------------------------------------------------------------------------------------------------
# Pages


@dataclass
class _TestView:
    test: TestResult
    index: int  # 1-based, in plan order: the article's anchor stays put whatever the grouping
    earned: float
    override: Mapping[str, Any] | None
    anchor: str | None
    figures: list[tuple[str, str]]
    function: str | None = None
    function_anchor: str | None = None


@dataclass
class TestGroups:
    """The tests as the page shows them, each group in plan order: what went wrong first, passed ones folded."""

    failing: list[_TestView] = field(default_factory=list)
    skipped: list[_TestView] = field(default_factory=list)
    passed: list[_TestView] = field(default_factory=list)

    @property
    def ordered(self) -> list[_TestView]:
        return [*self.failing, *self.skipped, *self.passed]


def _latest_overrides(overrides: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Test id -> its override in force (the latest), as the service applies them."""
    return {str(o.get("test_id")): o for o in overrides}


def render_report_page(*, submission: SubmissionRow, report: Report | None, files: Mapping[str, str],
                       entry: str = "solution.py", notes: Sequence[Mapping[str, Any]] = (),
                       audit: Sequence[Mapping[str, Any]] = (), overrides: Sequence[Mapping[str, Any]] = (),
                       webhook: Mapping[str, Any] | None = None, viewer: Viewer | None = None,
                       links: Links = Links(), flash: str | None = None, error: str | None = None,
                       points: Mapping[str, float] | None = None, score: float | None = None,
                       standalone: bool = False, similar: Any = None) -> str:
    """A submission's report page: score, tests, findings, code with failing lines, output, notes, audit log.

    `points` (test id -> points) and `score` are the ones after overrides, computed by the service
    (one function for the API and the pages); without `points` the latest override of each test counts,
    and without either the page shows what the grader gave. Failing tests come first, then skipped ones,
    then the passed ones folded in a <details> (no script needed to open it); the root causes lead the page and,
    among the failing tests, the failures that follow from another come last. `standalone`: the exported
    document, with no links to the pages. `similar`: the nearest earlier submissions and the distance from the
    template (grader.service.schemas.SimilarityOut, interviewers only; never in the stand-alone export).
    """
    groups = TestGroups()
    code_files: list[CodeFile] = []
    graded_score = None
    latest = _latest_overrides(overrides)
    if report is not None:
        code_files, anchors = build_code_files(files, entry, report.tests, report.findings)
        functions = mark_functions_under_test(code_files, files, entry, report.tests)
        earned = ({t.id: t.earned for t in report.tests} | dict(points) if points is not None else
                  points_after_overrides(report, ((str(o.get("test_id")), float(o.get("points", 0.0)))
                                                  for o in overrides)))
        for index, t in enumerate(report.tests, 1):
            function, function_anchor = functions.get(t.id, (None, None))
            view = _TestView(test=t, index=index, earned=earned[t.id], override=latest.get(t.id),
                             anchor=anchors.get(t.id), figures=[(f.title, figure_data_uri(f)) for f in t.figures],
                             function=function, function_anchor=function_anchor)
            group = (groups.failing if t.status in FAILING_STATUSES else
                     groups.passed if t.status == "passed" else groups.skipped)
            group.append(view)
        # Within the failing group, the failures that follow from another come after the roots.
        groups.failing.sort(key=lambda v: (bool(v.test.caused_by), v.index))
        graded_score = report.score
        if score is None:
            score = total_points(earned) if latest else report.score
    else:
        code_files, _ = build_code_files(files, entry, (), ())
    overridden = [v for v in groups.ordered if v.override is not None]
    overridden.sort(key=lambda v: v.index)
    test_anchor = {v.test.id: f"test-{v.index}" for v in groups.ordered}
    return environment().get_template("report.html.j2").render(
        title=f"{submission.problem} · {submission.candidate or submission.id}", submission=submission,
        report=report, groups=groups, score=score, graded_score=graded_score, code_files=code_files,
        notes=notes, audit=audit, overrides=overrides, overridden=overridden, webhook=webhook, viewer=viewer,
        links=links, flash=flash, error=error, standalone=standalone, similar=None if standalone else similar,
        test_anchor=test_anchor,
        refresh_s=5 if submission.status in ("queued", "running") and not standalone else None)


class _Summary(Protocol):
    """What the export needs of a submission's summary (grader.service.schemas.SubmissionSummary fits)."""

    @property
    def id(self) -> str: ...
    @property
    def problem(self) -> str: ...
    @property
    def candidate(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def max_score(self) -> float | None: ...
    @property
    def error(self) -> str | None: ...


class _Override(Protocol):
    def model_dump(self) -> dict[str, Any]: ...


class ReportExport(Protocol):
    """What the stand-alone export is rendered from (grader.service.submissions.ReportView fits)."""

    @property
    def submission(self) -> _Summary: ...
    @property
    def report(self) -> Report: ...
    @property
    def files(self) -> dict[str, str]: ...
    @property
    def entry(self) -> str: ...
    @property
    def overrides(self) -> Sequence[_Override]: ...
    @property
    def graded_score(self) -> float: ...
    @property
    def final_score(self) -> float | None: ...


def render_report_export(view: ReportExport) -> str:
    """GET /v1/submissions/{id}/report.html: the report page as one document, with the overrides the reader may
    see (an interviewer: the graded score beside the final one, and who changed which test's points and why;
    a submitter: none)."""
    s = view.submission
    row = SubmissionRow(id=s.id, problem=s.problem, candidate=s.candidate or "", status=s.status,
                        created_at=s.created_at, score=view.final_score, max_score=s.max_score, error=s.error,
                        graded_score=view.graded_score, overridden=bool(view.overrides))
    return render_report_page(submission=row, report=view.report, files=view.files, entry=view.entry,
                              overrides=[o.model_dump() for o in view.overrides], score=view.final_score,
                              standalone=True)


def render_submissions_page(*, rows: Sequence[SubmissionRow], filters: Mapping[str, str],
                            problems: Sequence[str], statuses: Sequence[str] = ("queued", "running", "done", "failed"),
                            pager: Pager = Pager(), viewer: Viewer | None = None, links: Links = Links(),
                            error: str | None = None) -> str:
    """The list of submissions with its filter form (problem, candidate, status, dates) and paging links."""
    return environment().get_template("submissions.html.j2").render(
        title="Submissions", rows=rows, filters=filters, problems=problems, statuses=statuses, pager=pager,
        viewer=viewer, links=links, error=error, refresh_s=None)


def render_login_page(*, links: Links = Links(), error: str | None = None, next_url: str = "") -> str:
    """The sign-in form: an API token in, a session cookie out."""
    return environment().get_template("login.html.j2").render(
        title="Sign in", links=links, error=error, next_url=next_url, viewer=None, refresh_s=None)


def render_error_page(*, status_code: int, message: str, links: Links = Links(),
                      viewer: Viewer | None = None) -> str:
    """A plain page for 403/404 and friends, with the message safe to show."""
    return environment().get_template("error.html.j2").render(
        title=f"{status_code}", status_code=status_code, message=message, links=links, viewer=viewer, error=None,
        refresh_s=None)



# ---------------------------------------------------------------------------------------------------------------
# Comparing candidates


@dataclass(frozen=True)
class CategoryScore:
    earned: float  # after overrides
    graded: float  # as the grader gave them
    points: float
    passed: int
    tests: int


@dataclass(frozen=True)
class CompareColumn:
    """One candidate's submission in the comparison."""

    submission: SubmissionRow
    graded_score: float | None = None
    final_score: float | None = None
    max_score: float | None = None
    passed: int | None = None
    tests: int | None = None
    overrides: int = 0
    categories: Mapping[str, CategoryScore] = field(default_factory=dict)


def compare_column(submission: SubmissionRow, report: Report | None, points: Mapping[str, float] | None = None,
                   overrides: int = 0) -> CompareColumn:
    """A submission's scores per test category; `points` (test id -> points after overrides) from the service."""
    if report is None:
        return CompareColumn(submission=submission)
    earned = {t.id: t.earned for t in report.tests} | dict(points or {})
    totals: dict[str, list[float]] = {}
    for t in report.tests:
        total = totals.setdefault(t.category, [0.0, 0.0, 0.0, 0, 0])
        total[0] += earned[t.id]
        total[1] += t.earned
        total[2] += t.points
        total[3] += t.status == "passed"
        total[4] += 1
    categories = {c: CategoryScore(earned=round(e, 6), graded=round(g, 6), points=round(p, 6), passed=int(n),
                                   tests=int(k)) for c, (e, g, p, n, k) in totals.items()}
    return CompareColumn(submission=submission, graded_score=report.score,
                         final_score=total_points(earned), max_score=report.max_score,
                         passed=report.passed, tests=len(report.tests), overrides=overrides, categories=categories)


def render_compare_page(*, problem: str, columns: Sequence[CompareColumn], viewer: Viewer | None = None,
                        links: Links = Links(), error: str | None = None) -> str:
    """Candidates of one problem side by side: points per test category, tests passed, graded and final score."""
    categories: list[str] = []
    for column in columns:
        for category in column.categories:
            if category not in categories:
                categories.append(category)
    best = max((c.final_score for c in columns if c.final_score is not None), default=None)
    return environment().get_template("compare.html.j2").render(
        title=f"Compare · {problem}" if problem else "Compare", problem=problem, columns=columns,
        categories=categories, best=best, viewer=viewer, links=links, error=error, refresh_s=None)
