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
from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import select

from grader.reports.csvsafe import safe_cell
from grader.service import submissions as subs
from grader.service.auth import Principal
from grader.service.schemas import SubmissionFilter, SubmissionSummary
from grader.store.db import Store
from grader.store.models import Override

COLUMNS = ("id", "problem", "candidate", "status", "created_at", "graded_score", "final_score", "overridden",
           "max_score", "passed", "tests")
MEDIA_TYPE = "text/csv; charset=utf-8"
FILENAME = "submissions.csv"
IN_CHUNK = 500


def _number(value: float | int | None) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def overridden_ids(store: Store, principal: Principal, ids: Iterable[str]) -> set[str]:
    """Which of these submissions have an override; always empty for a caller below interviewer."""
    wanted = sorted(set(ids))
    if not wanted or not principal.can("interviewer"):
        return set()
    found: set[str] = set()
    with store.session() as db:
        for i in range(0, len(wanted), IN_CHUNK):  # SQLite caps the parameters of one statement
            chunk = wanted[i:i + IN_CHUNK]
            found.update(db.scalars(select(Override.submission_id).where(Override.submission_id.in_(chunk))
                                    .distinct()))
    return found


def matching_submissions(store: Store, principal: Principal, filters: SubmissionFilter | None = None
                         ) -> Iterator[SubmissionSummary]:
    """Every submission the caller may see that matches the filters, newest first, a page at a time."""
    offset = 0
    while True:
        page = subs.list_submissions(store, principal, filters, limit=subs.MAX_PAGE, offset=offset)
        yield from page.items
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


def rows(summaries: Sequence[SubmissionSummary], overridden: set[str], *, interviewer: bool) -> list[list[str]]:
    """The CSV's rows (header first), every cell defused."""
    table = [list(COLUMNS)]
    for s in summaries:
        table.append([safe_cell(v) for v in (
            s.id, s.problem, s.candidate or "", s.status, s.created_at.isoformat(), _number(s.score),
            _number(s.final_score) if interviewer else "",
            ("yes" if s.id in overridden else "no") if interviewer else "",
            _number(s.max_score), _number(s.passed), _number(s.tests))])
    return table


def submissions_csv(store: Store, principal: Principal, filters: SubmissionFilter | None = None) -> str:
    """The filtered list as CSV text (RFC 4180: CRLF line ends, quotes where needed)."""
    summaries = list(matching_submissions(store, principal, filters))
    interviewer = principal.can("interviewer")
    overridden = overridden_ids(store, principal, (s.id for s in summaries)) if interviewer else set()
    out = io.StringIO()
    csv.writer(out).writerows(rows(summaries, overridden, interviewer=interviewer))
    return out.getvalue()
