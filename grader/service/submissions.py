"""Submissions: accept (validated up front, idempotent), list, read, and the interviewers' notes and overrides.

Every function takes the Store and the caller's Principal, checks what the caller
may see, and opens its own transaction. A submitter sees only its own
submissions (others' are "not found", not "forbidden": their ids are not its
business) and only the candidate-safe view of a report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from grader.config import Settings
from grader.engine import files as files_rules
from grader.engine.catalog import get_problem
from grader.engine.files import ENTRY
from grader.engine.report import Report, points_after_overrides, score_after_overrides
from grader.errors import Conflict, GraderError, InvalidRequest, NotFound, StorageUnavailable
from grader.service import netguard, similarity, webhooks
from grader.service.audit import event_out, record
from grader.service.auth import Principal
from grader.service.schemas import (
    MAX_CALLBACK_URL_CHARS,
    MAX_CANDIDATE_CHARS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_METADATA_BYTES,
    Links,
    NoteOut,
    OverrideOut,
    ReportOut,
    SimilarityOut,
    SubmissionCreate,
    SubmissionDetail,
    SubmissionFilter,
    SubmissionPage,
    SubmissionSummary,
    TestResultOut,
    WebhookOut,
)
from grader.store.db import Store, describe, unavailable
from grader.store.models import (
    AuditEvent,
    Note,
    Override,
    ReportRow,
    Submission,
    SubmissionFile,
    Token,
    WebhookDelivery,
)

log = logging.getLogger(__name__)

MAX_PAGE = 200
MAX_JSON_DEPTH = 32
SUBMISSION_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex; anything else cannot exist, and never reaches SQL


@contextmanager
def _storage(action: str) -> Iterator[None]:
    """A full disk or an unreachable database while `action`: StorageUnavailable (503 with Retry-After).

    The store's session turns the driver's error into StorageUnavailable and rolls the transaction back, so
    nothing of `action` stays; a client that retries (with its Idempotency-Key) is accepted once the store is
    back. A driver error raised outside a session is mapped here the same way.
    """
    try:
        yield
    except StorageUnavailable as exc:
        cause = describe(exc.__cause__) if exc.__cause__ is not None else exc.message
        log.warning("storage unavailable while %s: %s", action, cause)
        raise StorageUnavailable(f"the submission could not be stored right now ({cause}); nothing was "
                                 "accepted: retry in a few seconds", retry_after_s=exc.retry_after_s) from exc
    except DBAPIError as exc:
        if not unavailable(exc):
            raise
        log.warning("storage unavailable while %s: %s", action, describe(exc))
        raise StorageUnavailable(f"the submission could not be stored right now ({describe(exc)}); nothing was "
                                 "accepted: retry in a few seconds") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence per problem in a pydantic error: where, and what is wrong."""
    return files_rules.describe_errors(exc.errors())


def _require_utf8(text: str, what: str) -> None:
    problem = files_rules.utf8_problem(text, what)
    if problem:
        raise InvalidRequest(problem)


def _require_utf8_json(value: Any, what: str) -> None:
    # Metadata is JSON kept as JSON (a NUL is escaped there), so only the UTF-8 half of the text rule applies.
    if isinstance(value, str):
        _require_utf8(value, what)
    elif isinstance(value, dict):
        for k, v in value.items():
            _require_utf8(str(k), f"{what} key")
            _require_utf8_json(v, f"{what}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _require_utf8_json(v, f"{what}[{i}]")


def _json_depth(value: Any) -> int:
    """How deeply lists and objects nest in decoded JSON; iterative, so any depth is safe to measure."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_create(data: Any) -> SubmissionCreate:
    """A SubmissionCreate from decoded JSON, with a message that says what to fix when it does not fit."""
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object like "
                             '{"problem": "mlp", "code": "..."} or {"problem": "mlp", "files": {"solution.py": "..."}}')
    depth = _json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise InvalidRequest(f"the JSON nests {depth} levels deep; at most {MAX_JSON_DEPTH} levels are accepted "
                             "(flatten the metadata)")
    try:
        return SubmissionCreate.model_validate(data)
    except ValidationError as exc:
        # A file's name or text breaks a rule: the rule's own sentence, word for word as the CLI says it.
        framing = "" if files_rules.only_rule_errors(exc.errors()) else "invalid submission: "
        raise InvalidRequest(framing + describe_validation_error(exc)) from None


def decode_json_body(body: bytes) -> Any:
    """Decoded JSON, or InvalidRequest that says where the JSON broke."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the request body is not UTF-8 (invalid byte at offset {exc.start})") from None
    if not text.strip():
        raise InvalidRequest('the request body is empty: send JSON like {"problem": "mlp", "code": "..."}')
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidRequest(f"the JSON nests too deeply; at most {MAX_JSON_DEPTH} levels are accepted") from None


@dataclass(frozen=True)
class _Accepted:
    problem_id: str
    problem_version: str
    files: dict[str, str]
    candidate: str | None
    metadata: dict[str, Any]
    callback_url: str | None
    request_hash: str


def validate_submission(payload: SubmissionCreate, settings: Settings) -> _Accepted:
    """Check a submission before accepting it; each refusal says what to change."""
    problem = get_problem(payload.problem)  # UnknownProblem (404) lists the known ids
    if payload.code is not None and payload.files is not None:
        raise InvalidRequest("send either 'code' (one file) or 'files' (several), not both")
    if payload.code is None and payload.files is None:
        raise InvalidRequest("no code: send 'code' with the solution, or 'files' with solution.py among them")
    # The engine's own rules, so what the API accepts the CLI and the workers accept too.
    options = settings.grading_options()
    files = files_rules.check_submission({ENTRY: payload.code} if payload.code is not None else payload.files or {},
                                         ENTRY, max_files=options.max_files, max_code_bytes=options.max_code_bytes)
    candidate = payload.candidate.strip() if payload.candidate else None
    if candidate is not None:
        files_rules.check_text(candidate, "candidate")
        if len(candidate) > MAX_CANDIDATE_CHARS:
            raise InvalidRequest(f"candidate must be at most {MAX_CANDIDATE_CHARS} characters of plain text")
    _require_utf8_json(payload.metadata, "metadata")
    metadata_bytes = len(json.dumps(payload.metadata, ensure_ascii=False).encode("utf-8"))
    if metadata_bytes > MAX_METADATA_BYTES:
        raise InvalidRequest(f"metadata is {metadata_bytes} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    callback_url = payload.callback_url or None
    if callback_url is not None:
        files_rules.check_text(callback_url, "callback_url")
        parts = urlsplit(callback_url)
        if (parts.scheme not in ("http", "https") or not parts.hostname or len(callback_url) > MAX_CALLBACK_URL_CHARS
                or any(c.isspace() or ord(c) < 32 for c in callback_url)):
            raise InvalidRequest("callback_url must be an absolute http:// or https:// URL "
                                 f"of at most {MAX_CALLBACK_URL_CHARS} characters")
        allowed = [h.lower() for h in settings.webhook_allowed_hosts]
        # The service posts from inside the hiring team's network: operators can fence where it may post.
        if allowed and parts.hostname.lower() not in allowed:
            raise InvalidRequest(f"callback_url host {parts.hostname!r} is not allowed; allowed hosts: "
                                 f"{', '.join(allowed)}")
        try:
            netguard.check_accepted(callback_url, netguard.parse_networks(settings.webhook_allowed_networks))
        except netguard.Refused as exc:
            raise InvalidRequest(str(exc)) from None
    canonical = json.dumps({"problem": problem.id, "files": files, "candidate": candidate,
                            "metadata": payload.metadata, "callback_url": callback_url},
                           sort_keys=True, ensure_ascii=False)
    return _Accepted(problem_id=problem.id, problem_version=problem.version, files=files, candidate=candidate,
                     metadata=payload.metadata, callback_url=callback_url,
                     request_hash=hashlib.sha256(canonical.encode("utf-8")).hexdigest())


def links(submission_id: str) -> Links:
    base = f"/v1/submissions/{submission_id}"
    return Links(self=base, report=f"{base}/report", report_html=f"{base}/report.html",
                 report_junit=f"{base}/report.junit.xml")


def summary(row: Submission, viewer: Principal, overridden: bool = False,
            similar: SimilarityOut | None = None) -> SubmissionSummary:
    """The submission as `viewer` may see it (final_score, overridden and similarity only for interviewers).

    `overridden`: whether any override of the submission exists (the caller knows; see `_overridden_ids`).
    `similar`: the nearest earlier submissions (grader.service.similarity.finish), for interviewers.
    """
    interviewer = viewer.can("interviewer")
    final = (row.final_score if row.final_score is not None else row.score) if interviewer else None
    return SubmissionSummary(
        id=row.id, problem=row.problem_id, problem_version=row.problem_version, candidate=row.candidate,
        status=row.status, score=row.score, graded_score=row.score, final_score=final,
        overridden=overridden if interviewer else None, max_score=row.max_score,
        passed=row.passed, tests=row.test_count, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, attempts=row.attempts, error=row.error, metadata=row.metadata_json or {},
        links=links(row.id), similarity=similar if interviewer else None)


def create_submission(store: Store, settings: Settings, principal: Principal, payload: SubmissionCreate, *,
                      idempotency_key: str | None = None) -> tuple[SubmissionSummary, bool]:
    """Accept a submission into the queue; returns it and whether it is new (False: an idempotent replay)."""
    principal.require("submitter")
    accepted = validate_submission(payload, settings)
    with _storage("accepting a submission"):
        created, is_new = _insert_submission(store, principal, accepted, idempotency_key)
    # Which earlier submissions it resembles is not computed here (CPU-bound, not the submitter's business):
    # the first time an interviewer reads it or a list shows it (grader.service.similarity).
    return created, is_new


def _insert_submission(store: Store, principal: Principal, accepted: _Accepted,
                       idempotency_key: str | None) -> tuple[SubmissionSummary, bool]:
    if idempotency_key is not None:
        idempotency_key = idempotency_key.strip()
        if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS \
                or not idempotency_key.isprintable() or not idempotency_key.isascii():
            raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII "
                                 "characters (a UUID is a good choice)")
        replay = _replay(store, principal, idempotency_key, accepted.request_hash)
        if replay is not None:
            return replay, False
    sid = uuid.uuid4().hex
    # Before the transaction: parsing the file holds no lock. None when the entry file does not parse.
    fingerprint = similarity.new_fingerprint(sid, accepted.problem_id, accepted.files[ENTRY])
    try:
        with store.session() as db:
            row = Submission(id=sid, problem_id=accepted.problem_id, problem_version=accepted.problem_version,
                             candidate=accepted.candidate, metadata_json=accepted.metadata,
                             callback_url=accepted.callback_url, token_id=principal.token_id or None,
                             idempotency_key=idempotency_key, request_hash=accepted.request_hash, entry=ENTRY,
                             status="queued", attempts=0)
            row.files = [SubmissionFile(name=n, text=t) for n, t in sorted(accepted.files.items())]
            db.add(row)
            db.flush()
            if fingerprint is not None:
                db.add(fingerprint)
            record(db, principal, "submission.created", submission_id=sid,
                   detail={"problem": accepted.problem_id, "files": sorted(accepted.files),
                           "candidate": accepted.candidate})
            return summary(row, principal), True
    except IntegrityError:
        # Two requests with one Idempotency-Key raced; the other one's insert won.
        if idempotency_key is None:
            raise
        replay = _replay(store, principal, idempotency_key, accepted.request_hash)
        if replay is None:
            raise
        return replay, False


def _replay(store: Store, principal: Principal, key: str, request_hash: str) -> SubmissionSummary | None:
    with store.session() as db:
        row = db.scalar(select(Submission).where(Submission.token_id == (principal.token_id or None),
                                                 Submission.idempotency_key == key))
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise Conflict(f"Idempotency-Key {key!r} was already used for a different submission ({row.id}); "
                           "use a new key for new code")
        return _summary_in(db, row, principal)


def _overridden_ids(db: Session, ids: Iterable[str]) -> set[str]:
    """Which of these submissions have at least one override."""
    wanted = list(ids)
    if not wanted:
        return set()
    return set(db.scalars(select(Override.submission_id).where(Override.submission_id.in_(wanted)).distinct()))


def _summary_in(db: Session, row: Submission, viewer: Principal) -> SubmissionSummary:
    overridden = viewer.can("interviewer") and bool(_overridden_ids(db, [row.id]))
    return summary(row, viewer, overridden)


def _collect_similar(db: Session, rows: list[Submission], viewer: Principal, *,
                     budget: int | None = None) -> similarity.Collected | None:
    """Inside the session: what the similarity views of these submissions need, for an interviewer (None for
    anyone else); `_similar` compares and builds them once the session has ended."""
    if not viewer.can("interviewer") or not rows:
        return None
    return similarity.collect(db, rows, budget=budget)


def _similar(store: Store, collected: similarity.Collected | None) -> dict[str, SimilarityOut]:
    """After the session: the similarity views, comparing what was not compared yet outside any transaction."""
    return similarity.finish(store, collected) if collected is not None else {}


def _visible(db: Session, principal: Principal, submission_id: str) -> Submission:
    row = db.get(Submission, submission_id) if SUBMISSION_ID.fullmatch(submission_id) else None
    if row is None or (not principal.can("interviewer") and row.token_id != principal.token_id):
        raise NotFound(f"no submission with id {submission_id!r}")
    return row


def get_submission(store: Store, principal: Principal, submission_id: str) -> SubmissionSummary:
    """One submission's status and score."""
    principal.require("submitter")
    with store.session() as db:
        row = _visible(db, principal, submission_id)
        overridden = principal.can("interviewer") and bool(_overridden_ids(db, [row.id]))
        collected = _collect_similar(db, [row], principal)
        result = summary(row, principal, overridden)
    if collected is not None:
        result.similarity = _similar(store, collected).get(result.id)
    return result


def list_submissions(store: Store, principal: Principal, filters: SubmissionFilter | None = None, *,
                     limit: int = 50, offset: int = 0) -> SubmissionPage:
    """Submissions newest first, filtered; a submitter sees only its own."""
    principal.require("submitter")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    if offset < 0:
        raise InvalidRequest("offset must be 0 or more")
    f = filters or SubmissionFilter()
    for name, value in (("problem", f.problem), ("candidate", f.candidate)):
        if value is not None and not value.isprintable():
            raise InvalidRequest(f"the {name} filter must be printable text")
    conditions = []
    if not principal.can("interviewer"):
        conditions.append(Submission.token_id == principal.token_id)
    if f.problem:
        conditions.append(Submission.problem_id == f.problem)
    if f.candidate:
        conditions.append(Submission.candidate == f.candidate)
    if f.status:
        conditions.append(Submission.status == f.status)
    if f.created_after:
        conditions.append(Submission.created_at >= _aware(f.created_after))
    if f.created_before:
        conditions.append(Submission.created_at < _aware(f.created_before))
    with store.session() as db:
        total = db.scalar(select(func.count()).select_from(Submission).where(*conditions)) or 0
        rows = list(db.scalars(select(Submission).where(*conditions)
                               .order_by(Submission.created_at.desc(), Submission.id.desc()).limit(limit)
                               .offset(offset)))
        marked = _overridden_ids(db, [r.id for r in rows]) if principal.can("interviewer") else set()
        # A page compares at most LIST_BUDGET submissions not compared yet (older than migration 0004).
        collected = _collect_similar(db, rows, principal, budget=similarity.LIST_BUDGET)
        page = SubmissionPage(items=[summary(r, principal, r.id in marked) for r in rows],
                              total=total, limit=limit, offset=offset)
    if collected is not None:
        similar = _similar(store, collected)
        for item in page.items:
            item.similarity = similar.get(item.id)
    return page


def _aware(value: datetime) -> datetime:
    """A filter's datetime in UTC; one without a zone is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _verified(report_row: ReportRow) -> Report:
    """The stored report, once its JSON is checked against the checksum stored beside it.

    A mismatch (the row was changed on disk after it was written) is a fault of the store, never served
    as a valid report: GraderError (500), logged, saying which submission.
    """
    if report_row.checksum_fails():
        message = f"stored report of submission {report_row.submission_id} fails its checksum"
        log.error("%s: the stored JSON no longer matches what was written (sha256 %s expected)", message,
                  report_row.checksum)
        raise GraderError(message + "; it is not served (an administrator can restore or regrade it)")
    return Report.model_validate_json(report_row.report_json)


def _load_report(db: Session, row: Submission) -> Report:
    report_row = db.get(ReportRow, row.id)
    if report_row is None:  # 'done' is only ever written together with its report
        hint = f": {row.error}" if row.status == "failed" and row.error else \
            f"; poll GET /v1/submissions/{row.id} until its status is 'done'"
        raise Conflict(f"submission {row.id} has no report (status {row.status}){hint}")
    return _verified(report_row)


@dataclass(frozen=True)
class ReportView:
    """A report as its reader may see it, with the submission it belongs to and the submitted files.

    The interviewers' decisions are theirs, not the candidate's to see: for a submitter `overrides` is
    empty and `final_score` is None; `graded_score` (the grader's own score) is everyone's.
    """

    submission: SubmissionSummary
    report: Report
    files: dict[str, str]
    entry: str
    overrides: list[OverrideOut]  # oldest first (interviewers; always [] for submitters)
    graded_score: float  # the grader's score, as stored in the report
    final_score: float | None  # graded score with the overrides applied (interviewers; None for submitters)


def get_report(store: Store, principal: Principal, submission_id: str) -> ReportView:
    """The report: the full one with the overrides for interviewers, the candidate-safe view for submitters."""
    principal.require("submitter")
    with store.session() as db:
        row = _visible(db, principal, submission_id)
        report = _load_report(db, row)
        files = {f.name: f.text for f in row.files}
        if not principal.can("interviewer"):
            return ReportView(submission=summary(row, principal), report=report.candidate_view(), files=files,
                              entry=row.entry, overrides=[], graded_score=report.score, final_score=None)
        overrides = _overrides(db, row.id)
        return ReportView(submission=summary(row, principal, bool(overrides)), report=report, files=files,
                          entry=row.entry,
                          overrides=[_override_out(o) for o in overrides], graded_score=report.score,
                          final_score=overridden_score(report, overrides) if overrides else report.score)


def report_out(view: ReportView) -> ReportOut:
    """The report as the JSON API exports it: the decisions applied for interviewers (see ReportOut)."""
    latest = {o.test_id: o for o in view.overrides}
    interviewer = view.final_score is not None
    tests = [TestResultOut(**t.model_dump(), overridden=t.id in latest,
                           final_earned=(latest[t.id].points if t.id in latest else t.earned) if interviewer else None)
             for t in view.report.tests]
    return ReportOut(**{**view.report.model_dump(), "tests": tests},
                     graded_score=view.graded_score, final_score=view.final_score, overrides=view.overrides)


def _overrides(db: Session, submission_id: str) -> list[Override]:
    return list(db.scalars(select(Override).where(Override.submission_id == submission_id).order_by(Override.id)))


class PointsOverride(Protocol):
    """What scoring needs of an override: a stored row and its API view both fit."""

    @property
    def test_id(self) -> str: ...

    @property
    def points(self) -> float: ...


def effective_points(report: Report, overrides: Iterable[PointsOverride]) -> dict[str, float]:
    """Test id -> points after overrides, in order; the latest override of a test wins."""
    return points_after_overrides(report, ((o.test_id, o.points) for o in overrides))


def overridden_score(report: Report, overrides: Iterable[PointsOverride]) -> float:
    """The final score: the grader's points with the interviewers' overrides applied.

    The one computation of it: stored as `final_score` by the API and shown by the pages.
    """
    return score_after_overrides(report, ((o.test_id, o.points) for o in overrides))


def _override_out(o: Override) -> OverrideOut:
    return OverrideOut(id=o.id, test_id=o.test_id, points=o.points, previous_points=o.previous_points,
                       reason=o.reason, author=o.author, created_at=o.created_at)


def get_submission_detail(store: Store, principal: Principal, submission_id: str) -> SubmissionDetail:
    """Everything about a submission for an interviewer: files, report, notes, overrides, audit, webhook."""
    principal.require("interviewer")
    with store.session() as db:
        row = _visible(db, principal, submission_id)
        collected = _collect_similar(db, [row], principal)
        report_row = db.get(ReportRow, row.id)
        report = _verified(report_row) if report_row else None
        overrides = _overrides(db, row.id)
        notes = db.scalars(select(Note).where(Note.submission_id == row.id).order_by(Note.id))
        events = db.scalars(select(AuditEvent).where(AuditEvent.submission_id == row.id).order_by(AuditEvent.id))
        hook = db.scalar(select(WebhookDelivery).where(WebhookDelivery.submission_id == row.id))
        detail = SubmissionDetail(
            submission=summary(row, principal, bool(overrides)), files={f.name: f.text for f in row.files},
            report=report,
            notes=[NoteOut(id=n.id, author=n.author, text=n.text, created_at=n.created_at) for n in notes],
            overrides=[_override_out(o) for o in overrides],
            effective_points=effective_points(report, overrides) if report else {},
            audit=[event_out(e) for e in events],
            webhook=WebhookOut(url=hook.url, status=hook.status, attempts=hook.attempts,
                               last_status_code=hook.last_status_code, last_error=hook.last_error,
                               delivered_at=hook.delivered_at) if hook else None)
    detail.submission.similarity = _similar(store, collected).get(detail.submission.id)
    return detail


def add_note(store: Store, principal: Principal, submission_id: str, text: str) -> NoteOut:
    """Add an interviewer's note to a submission (kept, with an audit event)."""
    principal.require("interviewer")
    text = text.strip()
    if not text:
        raise InvalidRequest("the note is empty: write something")
    files_rules.check_text(text, "the note")
    with store.session() as db:
        row = _visible(db, principal, submission_id)
        note = Note(submission_id=row.id, author=principal.name, token_id=principal.token_id or None, text=text)
        db.add(note)
        db.flush()
        record(db, principal, "note.added", submission_id=row.id, detail={"note_id": note.id, "text": text})
        return NoteOut(id=note.id, author=note.author, text=note.text, created_at=note.created_at)


def override_test(store: Store, principal: Principal, submission_id: str, test_id: str, points: float,
                  reason: str) -> OverrideOut:
    """Set the points a test earns, with a reason; the report stays as graded, final_score follows."""
    principal.require("interviewer")
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("an override needs a reason: say why the points change")
    files_rules.check_text(reason, "the reason")
    with store.session() as db:
        row = _visible(db, principal, submission_id)
        report = _load_report(db, row)
        test = next((t for t in report.tests if t.id == test_id), None)
        if test is None:
            raise InvalidRequest(f"no test {test_id!r} in this report; its tests are: "
                                 f"{', '.join(t.id for t in report.tests)}")
        if not math.isfinite(points) or not 0 <= points <= test.points:
            raise InvalidRequest(f"points for {test_id!r} must be between 0 and {test.points:g}")
        overrides = _overrides(db, row.id)
        previous = effective_points(report, overrides)[test_id]
        previous_final = overridden_score(report, overrides)
        override = Override(submission_id=row.id, test_id=test_id, points=float(points), previous_points=previous,
                            reason=reason, author=principal.name, token_id=principal.token_id or None)
        db.add(override)
        db.flush()
        row.final_score = overridden_score(report, [*overrides, override])
        detail: dict[str, Any] = {"test_id": test_id, "points": float(points), "previous_points": previous,
                                  "reason": reason, "final_score": row.final_score}
        if row.callback_url and row.final_score != previous_final:  # the receiver was told another final score
            withheld = _overridden_webhook_withheld(db, row)
            if withheld is None:
                webhooks.enqueue(db, row, webhooks.build_overridden_body(row, report, override.id))
                detail["webhook"] = {"event": "submission.overridden", "sent": True}
            else:
                detail["webhook"] = {"event": "submission.overridden", "sent": False, "why": withheld}
        record(db, principal, "override.set", submission_id=row.id, detail=detail)
        return _override_out(override)


def _overridden_webhook_withheld(db: Session, row: Submission) -> str | None:
    """Why the `submission.overridden` event must not go to this submission's callback_url; None: it may.

    The event carries the final score, an interviewers' decision that submitters never see; any submitter
    token may set a callback_url, so only a submission created by an interviewer's or an admin's token (the
    hiring team's own pipeline) gets it.
    """
    creator = db.get(Token, row.token_id) if row.token_id is not None else None
    if creator is None:
        return "the token that created the submission is unknown: the final score is sent only to the " \
               "callback_url of a submission created by an interviewer or admin token"
    if creator.role not in ("interviewer", "admin"):
        return f"the submission was created by a {creator.role} token ({creator.name}): the final score is " \
               "the interviewers' decision, not sent to a callback_url a submitter chose"
    return None
