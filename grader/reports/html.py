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

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pygments.lexers import PythonLexer
from pygments.token import STANDARD_TYPES, _TokenType

from grader.engine.report import Finding, Report, TestResult
from grader.reports.plots import figure_data_uri

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STYLESHEET = "pages.css"
FAILING_STATUSES = ("failed", "error", "timeout")
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
class CodeLine:
    number: int
    spans: list[tuple[str, str]]
    marks: list[Mark] = field(default_factory=list)

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


# ---------------------------------------------------------------------------------------------------------------
# Pages


@dataclass
class _TestView:
    test: TestResult
    earned: float
    override: Mapping[str, Any] | None
    anchor: str | None
    figures: list[tuple[str, str]]


def render_report_page(*, submission: SubmissionRow, report: Report | None, files: Mapping[str, str],
                       entry: str = "solution.py", notes: Sequence[Mapping[str, Any]] = (),
                       audit: Sequence[Mapping[str, Any]] = (), overrides: Sequence[Mapping[str, Any]] = (),
                       webhook: Mapping[str, Any] | None = None, viewer: Viewer | None = None,
                       links: Links = Links(), flash: str | None = None, error: str | None = None,
                       points: Mapping[str, float] | None = None, score: float | None = None) -> str:
    """A submission's report page: score, tests, findings, code with failing lines, output, notes, audit log.

    `points` (test id -> points) and `score` are the ones after overrides, computed by the service
    (one function for the API and the pages); without them the page shows what the grader gave.
    """
    tests: list[_TestView] = []
    code_files: list[CodeFile] = []
    graded_score = None
    if report is not None:
        code_files, anchors = build_code_files(files, entry, report.tests, report.findings)
        earned = {t.id: t.earned for t in report.tests} | dict(points or {})
        latest = {str(o.get("test_id")): o for o in overrides}
        tests = [_TestView(test=t, earned=earned[t.id], override=latest.get(t.id), anchor=anchors.get(t.id),
                           figures=[(f.title, figure_data_uri(f)) for f in t.figures])
                 for t in report.tests]
        graded_score = report.score
        score = report.score if score is None else score
    else:
        code_files, _ = build_code_files(files, entry, (), ())
    return environment().get_template("report.html.j2").render(
        title=f"{submission.problem} · {submission.candidate or submission.id}", submission=submission,
        report=report, tests=tests, score=score, graded_score=graded_score, code_files=code_files,
        notes=notes, audit=audit, overrides=overrides, webhook=webhook, viewer=viewer, links=links, flash=flash,
        error=error,
        refresh_s=5 if submission.status in ("queued", "running") else None)


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

