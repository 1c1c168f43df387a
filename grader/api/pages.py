"""The interviewers' pages under /ui: sign in with a token, list submissions, read a report, add notes, override.

Thin routes: every read and write goes through grader.service (which checks roles and
writes the audit log); this module only turns forms into calls and data into
pages with grader.reports.html. Pages answer HTML even on errors, so an
interviewer never lands on a JSON error body.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, TypeVar
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from grader.api.deps import (
    authenticate_request,
    clear_login_cookie,
    get_store,
    optional_principal,
    set_login_cookie,
    stale_login_cookie,
)
from grader.engine.catalog import list_problems
from grader.errors import GraderError, InvalidRequest, NotFound, TooManyRequests, Unauthorized
from grader.reports.html import (
    CompareColumn,
    Links,
    Pager,
    SubmissionRow,
    Viewer,
    compare_column,
    content_security_policy,
    render_compare_page,
    render_error_page,
    render_login_page,
    render_report_page,
    render_submissions_page,
)
from grader.service import exports
from grader.service import submissions as subs
from grader.service.auth import Principal
from grader.service.schemas import SubmissionFilter, SubmissionSummary
from grader.store.db import Store

PREFIX = "/ui"
ResponseT = TypeVar("ResponseT", bound=Response)
PAGE_SIZE = 50
MAX_PAGE_NUMBER = 100_000
STATUSES = ("queued", "running", "done", "failed")
MAX_COMPARED = 12
# Fixed texts chosen by a query flag after a redirect: the page never echoes what the URL says.
SAVED_MESSAGES = {"note": "Note added.", "override": "Override saved; the score shown includes it."}
LINKS = Links(prefix=PREFIX)

router = APIRouter(include_in_schema=False)

Caller = Annotated[Principal | None, Depends(optional_principal)]
StoreDep = Annotated[Store, Depends(get_store)]


def _headers() -> dict[str, str]:
    # Reports are private: never cached; the pages run no script, frame nowhere, leak no referrer off-site.
    return {"Content-Security-Policy": content_security_policy(), "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=_headers())


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _viewer(me: Principal) -> Viewer:
    return Viewer(name=me.name, role=me.role, can_annotate=me.can("interviewer"))


def _error(exc: GraderError, me: Principal | None) -> HTMLResponse:
    status = exc.status_code if 400 <= exc.status_code < 600 else 500
    return _html(render_error_page(status_code=status, message=exc.message, links=LINKS,
                                   viewer=_viewer(me) if me else None), status)


def _safe_next(url: str | None) -> str:
    """Only a path of these pages may follow a sign-in: no open redirect to another site."""
    if url and url.startswith(PREFIX + "/") and not url.startswith("//") and "\\" not in url:
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc:
            return url
    return LINKS.submissions()


def _login_redirect(request: Request, next_url: str | None) -> RedirectResponse:
    target = next_url or request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _forget_stale_cookie(request, _redirect(f"{LINKS.login()}?{urlencode({'next': target})}"))


def _forget_stale_cookie(request: Request, response: ResponseT) -> ResponseT:
    """Clear a login cookie that failed (its token unknown or revoked), so the browser stops sending it with
    every page (grader/api/deps.py counts it once per window, but it would never sign in)."""
    if stale_login_cookie(request):
        clear_login_cookie(response)
    return response


def _gate(request: Request, me: Principal | None, *, next_url: str | None = None) -> Response | None:
    """A redirect to sign in (and back to `next_url` or here), or a 403 page for a token below interviewer;
    None when the caller may go on."""
    if me is None:
        return _login_redirect(request, next_url)
    if not me.can("interviewer"):
        return _html(render_error_page(status_code=403, links=LINKS, viewer=_viewer(me),
                                       message=f"these pages need the interviewer role; your token ({me.name}) "
                                               f"has the {me.role} role"), 403)
    return None


def _same_origin(request: Request) -> bool:
    """A second CSRF check beside the SameSite=Strict cookie: a form post must come from this host."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # Browsers send Origin on every cross-site POST; its absence means a same-site or non-browser client.
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _cross_site() -> HTMLResponse:
    return _html(render_error_page(status_code=403, links=LINKS,
                                   message="this form was posted from another site; open the page here and retry"),
                 403)


def _row(summary: SubmissionSummary) -> SubmissionRow:
    score = summary.final_score if summary.final_score is not None else summary.score
    similar = summary.similarity  # filled by the service, for interviewers
    return SubmissionRow(id=summary.id, problem=summary.problem, candidate=summary.candidate or "",
                         status=summary.status, created_at=summary.created_at, score=score,
                         max_score=summary.max_score, error=summary.error, graded_score=summary.score,
                         overridden=bool(summary.overridden),  # filled by the service, for interviewers
                         similar_score=similar.best_score if similar else None,
                         similar_flagged=bool(similar and similar.flagged))


# -------------------------------------------------------------------------------------------------------------
# Sign in and out


@router.get(PREFIX)
@router.get(PREFIX + "/")
def home() -> RedirectResponse:
    """The pages start at the submissions list."""
    return _redirect(LINKS.submissions())


@router.get(PREFIX + "/login")
def login_form(request: Request, me: Caller, next: str | None = None) -> Response:
    """The sign-in form (or straight on, when the browser is already signed in)."""
    if me is not None and me.can("interviewer"):
        return _redirect(_safe_next(next))
    return _forget_stale_cookie(request, _html(render_login_page(links=LINKS, next_url=_safe_next(next))))


@router.post(PREFIX + "/login")
def login(request: Request, store: StoreDep, token: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "") -> Response:
    """Check the token and keep it in an HttpOnly, SameSite=Strict cookie."""
    if not _same_origin(request):
        return _cross_site()
    token = token.strip()
    try:
        me = authenticate_request(request, store, token)  # the API's lockout and rate limits apply here too
    except Unauthorized as exc:
        message = "paste an API token" if not token else exc.message
        return _html(render_login_page(links=LINKS, error=message, next_url=_safe_next(next)), 401)
    except TooManyRequests as exc:
        page = _html(render_login_page(links=LINKS, error=exc.message, next_url=_safe_next(next)), 429)
        page.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return page
    if not me.can("interviewer"):
        return _html(render_login_page(links=LINKS, next_url=_safe_next(next),
                                       error=f"this token ({me.name}) has the {me.role} role; the pages need "
                                             "an interviewer or admin token"), 403)
    response = _redirect(_safe_next(next))
    set_login_cookie(response, token, secure=request.url.scheme == "https")
    return response


@router.post(PREFIX + "/logout")
def logout(request: Request) -> Response:
    """Forget the token in this browser."""
    if not _same_origin(request):
        return _cross_site()
    response = _redirect(LINKS.login())
    clear_login_cookie(response)
    return response


# -------------------------------------------------------------------------------------------------------------
# Submissions


def _parse_date(value: str, field: str, *, end_of_day: bool = False) -> datetime | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{field} must be a date like 2026-01-31 (got {value[:40]!r})") from None
    start = datetime.combine(day, time(0), tzinfo=UTC)
    # "To 31 January" includes that whole day.
    return start + timedelta(days=1) if end_of_day else start


def _list_filter(filters: dict[str, str]) -> SubmissionFilter:
    """The list's filters as the service takes them; dates are whole days ("to 31 January" includes it)."""
    if filters["status"] and filters["status"] not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")
    return SubmissionFilter(problem=filters["problem"] or None, candidate=filters["candidate"] or None,
                            status=filters["status"] or None,  # checked just above
                            created_after=_parse_date(filters["created_after"], "From"),
                            created_before=_parse_date(filters["created_before"], "To", end_of_day=True))


@router.get(PREFIX + "/submissions.csv")
def submissions_csv(request: Request, store: StoreDep, me: Caller, problem: str = "", candidate: str = "",
                    status: str = "", created_after: str = "", created_before: str = "") -> Response:
    """The list as CSV with the list page's filters: every matching submission, not one page."""
    gate = _gate(request, me)
    if gate is not None:
        return gate
    assert me is not None
    filters = {"problem": problem.strip(), "candidate": candidate.strip(), "status": status.strip(),
               "created_after": created_after.strip(), "created_before": created_before.strip()}
    try:
        body = exports.submissions_csv(store, me, _list_filter(filters))
    except GraderError as exc:
        return _error(exc, me)
    return Response(body, media_type=exports.MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{exports.FILENAME}"',
                             "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


@router.get(PREFIX + "/submissions")
def submissions_page(request: Request, store: StoreDep, me: Caller, problem: str = "", candidate: str = "",
                     status: str = "", created_after: str = "", created_before: str = "",
                     page: str = "1") -> Response:
    """Submissions newest first, filtered by problem, candidate, status and dates."""
    gate = _gate(request, me)
    if gate is not None:
        return gate
    assert me is not None
    # A hand-edited page number falls back to the first page rather than an error body.
    page_number = int(page) if page.isdigit() and 1 <= int(page) <= MAX_PAGE_NUMBER else 1
    filters = {"problem": problem.strip(), "candidate": candidate.strip(), "status": status.strip(),
               "created_after": created_after.strip(), "created_before": created_before.strip()}
    error = None
    try:
        query: SubmissionFilter | None = _list_filter(filters)
    except InvalidRequest as exc:
        error, query = exc.message, None
    try:
        if query is None:
            rows, total = [], None
        else:
            result = subs.list_submissions(store, me, query, limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE)
            rows, total = [_row(s) for s in result.items], result.total
    except GraderError as exc:
        return _error(exc, me)
    pager = Pager(prev_url=LINKS.submissions(**filters, page=str(page_number - 1)) if page_number > 1 else None,
                  next_url=LINKS.submissions(**filters, page=str(page_number + 1))
                  if total is not None and page_number * PAGE_SIZE < total else None, total=total)
    problems = sorted({p.id for p in list_problems()} | ({filters["problem"]} if filters["problem"] else set()))
    return _html(render_submissions_page(rows=rows, filters=filters, problems=problems, statuses=STATUSES,
                                         pager=pager, viewer=_viewer(me), links=LINKS, error=error),
                 400 if error else 200)


def _report_page(store: Store, me: Principal, submission_id: str, *, flash: str | None = None,
                 error: str | None = None, status_code: int = 200) -> Response:
    try:
        detail = subs.get_submission_detail(store, me, submission_id)
    except GraderError as exc:
        return _error(exc, me)
    body = render_report_page(
        submission=_row(detail.submission), report=detail.report, files=detail.files,
        notes=[n.model_dump() for n in detail.notes], audit=[e.model_dump() for e in detail.audit],
        overrides=[o.model_dump() for o in detail.overrides],
        webhook=detail.webhook.model_dump() if detail.webhook else None, viewer=_viewer(me), links=LINKS,
        flash=flash, error=error, points=detail.effective_points,
        score=subs.overridden_score(detail.report, detail.overrides) if detail.report else None,
        similar=detail.submission.similarity)
    return _html(body, status_code)


@router.get(PREFIX + "/submissions/{submission_id}")
def report_page(request: Request, submission_id: str, store: StoreDep, me: Caller, saved: str = "") -> Response:
    """One submission: score, tests, code with failing lines, output, notes, overrides and the audit log."""
    gate = _gate(request, me)
    if gate is not None:
        return gate
    assert me is not None
    return _report_page(store, me, submission_id, flash=SAVED_MESSAGES.get(saved))


@router.post(PREFIX + "/submissions/{submission_id}/notes")
def add_note(request: Request, submission_id: str, store: StoreDep, me: Caller,
             text: Annotated[str, Form()] = "") -> Response:
    """Add a note, then show the report again (post, redirect, get)."""
    if not _same_origin(request):
        return _cross_site()
    # A form posted after the session ended comes back to the report, not to this POST-only address.
    gate = _gate(request, me, next_url=LINKS.report(submission_id))
    if gate is not None:
        return gate
    assert me is not None
    try:
        subs.add_note(store, me, submission_id, text)
    except NotFound as exc:
        return _error(exc, me)
    except GraderError as exc:
        return _report_page(store, me, submission_id, error=exc.message, status_code=exc.status_code)
    return _redirect(f"{LINKS.report(submission_id)}?saved=note#notes")


def _parse_points(value: str) -> float:
    try:
        points = float(value)
    except ValueError:
        raise InvalidRequest(f"points must be a number (got {value[:40]!r})") from None
    if not math.isfinite(points):
        raise InvalidRequest("points must be a finite number")
    return points


@router.post(PREFIX + "/submissions/{submission_id}/overrides")
def override(request: Request, submission_id: str, store: StoreDep, me: Caller,
             test_id: Annotated[str, Form()] = "", points: Annotated[str, Form()] = "",
             reason: Annotated[str, Form()] = "") -> Response:
    """Override one test's points with a reason, then show the report again."""
    if not _same_origin(request):
        return _cross_site()
    # A form posted after the session ended comes back to the report, not to this POST-only address.
    gate = _gate(request, me, next_url=LINKS.report(submission_id))
    if gate is not None:
        return gate
    assert me is not None
    try:
        subs.override_test(store, me, submission_id, test_id, _parse_points(points.strip()), reason)
    except NotFound as exc:
        return _error(exc, me)
    except GraderError as exc:
        return _report_page(store, me, submission_id, error=exc.message, status_code=exc.status_code)
    return _redirect(f"{LINKS.report(submission_id)}?saved=override#tests")


# -------------------------------------------------------------------------------------------------------------
# Comparing candidates


def _compared_ids(ids: list[str]) -> list[str]:
    """`ids=a,b,c` or `ids=a&ids=b` (the list's checkboxes), in order, without repeats."""
    wanted: list[str] = []
    for value in ids:
        for part in value.split(","):
            part = part.strip()
            if part and part not in wanted:
                wanted.append(part)
    return wanted


@router.get(PREFIX + "/compare")
def compare_page(request: Request, store: StoreDep, me: Caller, problem: str = "",
                 ids: Annotated[list[str] | None, Query()] = None) -> Response:
    """Submissions of one problem side by side; mixing problems is refused with the ids of each."""
    gate = _gate(request, me)
    if gate is not None:
        return gate
    assert me is not None
    problem = problem.strip()
    wanted = _compared_ids(ids or [])
    viewer = _viewer(me)
    if not wanted:
        return _html(render_compare_page(problem=problem, columns=[], viewer=viewer, links=LINKS))
    try:
        if len(wanted) > MAX_COMPARED:
            raise InvalidRequest(f"compare at most {MAX_COMPARED} submissions at once ({len(wanted)} were picked)")
        details = [subs.get_submission_detail(store, me, sid) for sid in wanted]
    except GraderError as exc:
        return _error(exc, me)
    problems: dict[str, list[str]] = {}
    for d in details:
        problems.setdefault(d.submission.problem, []).append(d.submission.id)
    if len(problems) > 1 or (problem and problem not in problems):
        if problem:
            others = {p: sids for p, sids in problems.items() if p != problem}
            what = "; ".join(f"{', '.join(sids)} {'is' if len(sids) == 1 else 'are'} of {p}"
                             for p, sids in others.items())
            message = f"only submissions of one problem can be compared: this comparison is of {problem}, but {what}"
        else:
            what = "; ".join(f"{p}: {', '.join(sids)}" for p, sids in problems.items())
            message = f"only submissions of one problem can be compared; these are of {len(problems)} problems ({what})"
        return _html(render_compare_page(problem=problem, columns=[], viewer=viewer, links=LINKS, error=message),
                     400)
    problem = problem or next(iter(problems))
    columns: list[CompareColumn] = [
        compare_column(_row(d.submission), d.report, d.effective_points,
                       overrides=len(d.overrides)) for d in details]
    return _html(render_compare_page(problem=problem, columns=columns, viewer=viewer, links=LINKS))
