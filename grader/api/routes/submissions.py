"""Submissions: submit (JSON or multipart), poll, list, read the report as JSON, HTML or JUnit XML, annotate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from grader.api.deps import get_app_settings, get_store, require_role, submission_filter, submission_quota
from grader.api.errors import ERROR_RESPONSES, ErrorBody
from grader.config import Settings
from grader.engine.files import NAME_RULE, decode_text
from grader.errors import InvalidRequest, PayloadTooLarge
from grader.reports.junit import render_junit
from grader.service import submissions as subs
from grader.service.auth import Principal
from grader.service.schemas import (
    NoteIn,
    NoteOut,
    OverrideIn,
    OverrideOut,
    ReportOut,
    SubmissionCreate,
    SubmissionDetail,
    SubmissionFilter,
    SubmissionPage,
    SubmissionSummary,
)
from grader.store.db import Store

router = APIRouter(prefix="/v1/submissions", tags=["submissions"], responses=ERROR_RESPONSES)

MULTIPART_FIELDS = ("problem", "code", "files", "candidate", "metadata", "callback_url")

_create_schema = SubmissionCreate.model_json_schema()
_multipart_schema = {
    "type": "object", "required": ["problem"],
    "properties": {
        "problem": {"type": "string"},
        "code": {"type": "string", "description": "the solution as text or as an uploaded file (solution.py, "
                                                   "or a notebook's JSON, converted to it)"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "uploaded .py files, named by their file names; solution.py is the entry "
                                 "(or one .ipynb notebook, converted to it)"},
        "candidate": {"type": "string"},
        "metadata": {"type": "string", "description": "a JSON object, as text"},
        "callback_url": {"type": "string"},
    },
}
CREATE_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _create_schema},
                                                  "multipart/form-data": {"schema": _multipart_schema}}},
    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "maxLength": 200},
                    "description": "a retry with the same key and body returns the same submission"}],
}


async def _read_capped(request: Request, limit_bytes: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over the limit: declared, or while it streams in."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit_bytes:
        raise PayloadTooLarge(f"the request is {int(declared)} bytes; the limit is {limit_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise PayloadTooLarge(f"the request is larger than the limit of {limit_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # lets request.form() parse what was already read
    return body


def _upload_text(upload: UploadFile, data: bytes) -> str:
    return decode_text(data, upload.filename or "the uploaded file")


async def _parse_multipart(request: Request, settings: Settings) -> SubmissionCreate:
    try:
        form = await request.form(max_files=settings.max_files + 1, max_fields=64,
                                  max_part_size=settings.max_code_bytes + 1)
    except HTTPException as exc:
        raise InvalidRequest(f"malformed multipart body: {exc.detail}") from None
    unknown = sorted(set(form.keys()) - set(MULTIPART_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown form fields {unknown}; the fields are {', '.join(MULTIPART_FIELDS)}")
    data: dict[str, Any] = {}
    for key in ("problem", "candidate", "callback_url"):
        value = form.get(key)
        if isinstance(value, UploadFile):
            raise InvalidRequest(f"{key} must be a text field, not a file")
        if value is not None:
            data[key] = value
    metadata = form.get("metadata")
    if metadata is not None:
        if isinstance(metadata, UploadFile):
            raise InvalidRequest("metadata must be a text field holding a JSON object")
        data["metadata"] = subs.decode_json_body(metadata.encode("utf-8"))
    code = form.get("code")
    if code is not None:
        data["code"] = _upload_text(code, await code.read()) if isinstance(code, UploadFile) else code
    uploads = form.getlist("files")
    if uploads:
        files: dict[str, str] = {}
        for upload in uploads:
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("files must be uploaded files (multipart parts with a filename)")
            name = upload.filename or ""
            # The multipart parser keeps only what follows the last backslash of a Windows-looking path
            # ('C:\\x\\y.py' arrives as 'y.py'): refuse it as the JSON path refuses 'C:\\y.py', not rename it.
            if "\\" in upload.headers.get("content-disposition", ""):
                raise InvalidRequest(f"file name {name!r} was sent as a path with backslashes, which is not "
                                     f"allowed: {NAME_RULE}")
            if name in files:
                raise InvalidRequest(f"file {name!r} was uploaded twice")
            files[name] = _upload_text(upload, await upload.read())
        data["files"] = files
    return subs.parse_create(data)


@router.post("", status_code=202, response_model=SubmissionSummary, openapi_extra=CREATE_OPENAPI,
             responses={409: {"model": ErrorBody, "description": "Idempotency-Key reused with another body"}})
async def create_submission(request: Request, response: Response, store: Store = Depends(get_store),
                            settings: Settings = Depends(get_app_settings),
                            me: Principal = Depends(submission_quota)) -> SubmissionSummary:
    """Submit code for grading; answers 202 at once with the id and links to poll (429 over the token's
    submission rate, with Retry-After)."""
    body = await _read_capped(request, settings.max_request_bytes)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        payload = await _parse_multipart(request, settings)
    elif content_type in ("application/json", "") or content_type.endswith("+json"):
        payload = subs.parse_create(subs.decode_json_body(body))
    else:
        raise InvalidRequest(f"unsupported content type {content_type!r}: send application/json "
                             "or multipart/form-data")
    key = request.headers.get("idempotency-key")
    created, is_new = await run_in_threadpool(subs.create_submission, store, settings, me, payload,
                                              idempotency_key=key)
    response.headers["Location"] = created.links.self
    if is_new:
        request.app.state.metrics.count("grader_submissions_accepted_total")
        queue = getattr(request.app.state, "queue", None)
        if queue is not None:  # after the commit; never fails the request (a sweeper or poll picks it up)
            await run_in_threadpool(queue.submitted, created.id)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    return created


@router.get("", response_model=SubmissionPage)
def list_submissions(filters: SubmissionFilter = Depends(submission_filter),
                     limit: int = Query(50, ge=1, le=subs.MAX_PAGE), offset: int = Query(0, ge=0, le=10**9),
                     store: Store = Depends(get_store),
                     me: Principal = Depends(require_role("submitter"))) -> SubmissionPage:
    """Submissions, newest first, filtered by problem, candidate, status and creation time; submitters see their own."""
    return subs.list_submissions(store, me, filters, limit=limit, offset=offset)


@router.get("/{submission_id}", response_model=SubmissionSummary)
def get_submission(submission_id: str, store: Store = Depends(get_store),
                   me: Principal = Depends(require_role("submitter"))) -> SubmissionSummary:
    """Status (queued, running, done, failed) and score."""
    return subs.get_submission(store, me, submission_id)


REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "not graded yet, or the grader failed"}}


@router.get("/{submission_id}/report", response_model=ReportOut, responses=REPORT_RESPONSES)
def get_report(submission_id: str, store: Store = Depends(get_store),
               me: Principal = Depends(require_role("submitter"))) -> ReportOut:
    """The report as JSON: every field of the grader's report, plus the interviewers' decisions.

    `score` and each test's `earned` are the grader's for every reader. Interviewers get the full report with
    the decisions beside them: `final_score`, each test's `final_earned` and `overridden`, `overrides`.
    Submitters get the candidate-safe view as graded: `final_score` and `final_earned` null, `overrides` empty.
    """
    return subs.report_out(subs.get_report(store, me, submission_id))


@router.get("/{submission_id}/report.html", response_model=None,
            responses={**REPORT_RESPONSES, 200: {"content": {"text/html": {"schema": {"type": "string"}}}}})
def get_report_html(submission_id: str, store: Store = Depends(get_store),
                    me: Principal = Depends(require_role("submitter"))) -> HTMLResponse:
    """The report as a stand-alone HTML document (escaped throughout, runs no script).

    Interviewers see the graded score beside the final one and every override (who, why); submitters the
    report as graded.
    """
    from grader.reports.html import content_security_policy, render_report_export

    html = render_report_export(subs.get_report(store, me, submission_id))
    return HTMLResponse(html, headers={"Content-Security-Policy": content_security_policy(),
                                       "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


@router.get("/{submission_id}/report.junit.xml", response_model=None,
            responses={**REPORT_RESPONSES, 200: {"content": {"application/xml": {"schema": {"type": "string"}}}}})
def get_report_junit(submission_id: str, store: Store = Depends(get_store),
                     me: Principal = Depends(require_role("submitter"))) -> Response:
    """The report as JUnit XML, for CI systems; for interviewers with the overrides applied (see render_junit)."""
    view = subs.get_report(store, me, submission_id)
    decisions = view.overrides if view.final_score is not None else None  # None: a submitter's view
    return Response(render_junit(view.report, overrides=decisions), media_type="application/xml")


@router.get("/{submission_id}/detail", response_model=SubmissionDetail)
def get_detail(submission_id: str, store: Store = Depends(get_store),
               me: Principal = Depends(require_role("interviewer"))) -> SubmissionDetail:
    """Everything about a submission: files, full report, notes, overrides, audit events, webhook outcome."""
    return subs.get_submission_detail(store, me, submission_id)


@router.post("/{submission_id}/notes", response_model=NoteOut, status_code=201)
def add_note(submission_id: str, body: NoteIn, store: Store = Depends(get_store),
             me: Principal = Depends(require_role("interviewer"))) -> NoteOut:
    """Add a note to a submission."""
    return subs.add_note(store, me, submission_id, body.text)


@router.post("/{submission_id}/overrides", response_model=OverrideOut, status_code=201,
             responses=REPORT_RESPONSES)
def add_override(submission_id: str, body: OverrideIn, request: Request, store: Store = Depends(get_store),
                 me: Principal = Depends(require_role("interviewer"))) -> OverrideOut:
    """Override the points of one test, with a reason; the report keeps the grader's verdict.

    When the final score changes, a `submission.overridden` webhook goes to the submission's callback_url.
    """
    created = subs.override_test(store, me, submission_id, body.test_id, body.points, body.reason)
    dispatcher = getattr(request.app.state, "webhooks", None)
    if dispatcher is not None:
        dispatcher.wake()  # deliver now rather than at the next poll
    return created
