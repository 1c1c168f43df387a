"""Exports of the submissions list: CSV of every submission matching the list's filters.

Served by the API (`GET /v1/submissions.csv`, bearer token) and by the pages
(`/ui/submissions.csv`, the login cookie). Visibility is the list's own
(`submissions.list_submissions`): interviewers see every submission, a submitter
only its own, and a submitter's export carries no final score and no override
flag (the interviewers' decisions are not the candidate's to see).

Spreadsheets run a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage
return as a formula; every such cell is written with a leading single quote
(`grader.reports.csvsafe`, shared with batch grading's CSV).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from grader.reports.csvsafe import safe_cell
from grader.service import submissions as subs
from grader.service.auth import Principal
from grader.service.schemas import SubmissionFilter, SubmissionSummary
from grader.store.db import Store

COLUMNS = ("id", "problem", "candidate", "status", "created_at", "graded_score", "final_score", "overridden",
           "max_score", "passed", "tests")
MEDIA_TYPE = "text/csv; charset=utf-8"
FILENAME = "submissions.csv"


def _number(value: float | int | None) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def matching_submissions(store: Store, principal: Principal, filters: SubmissionFilter | None = None
                         ) -> Iterator[SubmissionSummary]:
    """Every submission the caller may see that matches the filters, newest first, a page at a time.

    Pages follow a key, (created_at, id), not an offset from the top: the next page is the submissions created
    at or before the last one written, past the ones written at that instant. A submission created while the
    export runs is later than every key, so it never shifts a page (which wrote a row twice).
    """
    base = filters or SubmissionFilter()
    last: datetime | None = None  # created_at of the last row written
    written_at_last = 0  # rows written with that created_at (the first ones of the next page, skipped)
    while True:
        page_filter, offset = base, 0
        if last is not None:
            bound = last + timedelta(microseconds=1)  # created_at < bound: at or before `last` (microseconds)
            if base.created_before is not None:
                bound = min(bound, _utc(base.created_before))
            page_filter, offset = base.model_copy(update={"created_before": bound}), written_at_last
        page = subs.list_submissions(store, principal, page_filter, limit=subs.MAX_PAGE, offset=offset)
        for s in page.items:
            yield s
            created = _utc(s.created_at)
            if created == last:
                written_at_last += 1
            else:
                last, written_at_last = created, 1
        if len(page.items) < subs.MAX_PAGE:
            return


def rows(summaries: Iterable[SubmissionSummary], *, interviewer: bool) -> list[list[str]]:
    """The CSV's rows (header first), every cell defused."""
    table = [list(COLUMNS)]
    for s in summaries:
        table.append([safe_cell(v) for v in (
            s.id, s.problem, s.candidate or "", s.status, s.created_at.isoformat(), _number(s.score),
            _number(s.final_score) if interviewer else "",
            ("yes" if s.overridden else "no") if interviewer else "",
            _number(s.max_score), _number(s.passed), _number(s.tests))])
    return table


def submissions_csv(store: Store, principal: Principal, filters: SubmissionFilter | None = None) -> str:
    """The filtered list as CSV text (RFC 4180: CRLF line ends, quotes where needed)."""
    interviewer = principal.can("interviewer")
    out = io.StringIO()
    csv.writer(out).writerows(rows(matching_submissions(store, principal, filters), interviewer=interviewer))
    return out.getvalue()
