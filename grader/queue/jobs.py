"""The queue's database operations: claim, renew, complete, fail, and take back orphaned jobs."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grader.engine.report import Report
from grader.service.audit import record
from grader.service.auth import SYSTEM
from grader.service.webhooks import build_body
from grader.store.db import Store
from grader.store.models import ReportRow, Submission, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def owner_id(instance: str) -> str:
    """Who holds a job: host, process id and a per-pool instance id (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{instance}"


def _owner_is_dead(owner: str | None) -> bool:
    """True when `owner` was a process on this host that no longer runs (or an earlier pool of this one)."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, _instance = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's job: only its lease can say it is dead
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # this process's own live pool; an earlier pool of it is covered by the lease
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Job:
    submission_id: str
    problem_id: str
    files: dict[str, str]
    entry: str
    attempt: int


def claim(store: Store, owner: str, lease_s: float) -> Job | None:
    """Take the oldest queued job, or None when the queue is empty."""
    for _ in range(5):  # another worker may win the race for the same row
        with store.session() as db:
            sid = db.scalar(select(Submission.id).where(Submission.status == "queued")
                            .order_by(Submission.created_at, Submission.id).limit(1))
            if sid is None:
                return None
            now = utcnow()
            claimed = db.execute(update(Submission)
                                 .where(Submission.id == sid, Submission.status == "queued")
                                 .values(status="running", owner=owner, attempts=Submission.attempts + 1,
                                         started_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
                                 .execution_options(synchronize_session=False))
            if claimed.rowcount != 1:
                continue
            row = db.get(Submission, sid, populate_existing=True)
            assert row is not None
            return Job(submission_id=sid, problem_id=row.problem_id, files={f.name: f.text for f in row.files},
                       entry=row.entry, attempt=row.attempts)
    return None


def renew(store: Store, owner: str, lease_s: float, submission_ids: list[str]) -> int:
    """Extend the leases of the jobs this owner is grading right now; returns how many were extended.

    Only the jobs a worker is actually busy with: a job whose worker thread died
    must let its lease run out, so that it is taken back and graded again.
    """
    if not submission_ids:
        return 0
    with store.session() as db:
        result = db.execute(update(Submission).where(Submission.status == "running", Submission.owner == owner,
                                                     Submission.id.in_(submission_ids))
                            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
                            .execution_options(synchronize_session=False))
        return result.rowcount or 0


def _fenced(job: Job, owner: str) -> list[Any]:
    return [Submission.id == job.submission_id, Submission.status == "running", Submission.owner == owner,
            Submission.attempts == job.attempt]


def complete(store: Store, job: Job, owner: str, report: Report) -> bool:
    """Store the report and mark the job done, unless this worker lost the job meanwhile (then False)."""
    failed = report.status == "error"
    try:
        with store.session() as db:
            done = db.execute(update(Submission).where(*_fenced(job, owner)).values(
                status="failed" if failed else "done", score=report.score, max_score=report.max_score,
                final_score=report.score, passed=report.passed, test_count=len(report.tests),
                error=(report.error or "the grader failed")[:MAX_ERROR_CHARS] if failed else None,
                finished_at=utcnow(), lease_expires_at=None).execution_options(synchronize_session=False))
            if done.rowcount != 1:
                log.warning("discarding a stale result for %s (attempt %d)", job.submission_id, job.attempt)
                return False
            db.add(ReportRow(submission_id=job.submission_id, report_json=report.model_dump_json(),
                             attempt=job.attempt))
            row = db.get(Submission, job.submission_id, populate_existing=True)
            assert row is not None
            _queue_webhook(db, row, report)
            record(db, SYSTEM, "submission.failed" if failed else "submission.graded",
                   submission_id=job.submission_id,
                   detail={"score": report.score, "max_score": report.max_score, "attempt": job.attempt,
                           "duration_s": report.duration_s})
            return True
    except IntegrityError:  # a report already exists: someone else completed it; ours is not counted
        log.warning("a report for %s already exists; discarding attempt %d", job.submission_id, job.attempt)
        return False


def fail(store: Store, job: Job, owner: str, error: str) -> bool:
    """Mark the job failed (a fault of the grader, not of the candidate), unless this worker lost it."""
    with store.session() as db:
        done = db.execute(update(Submission).where(*_fenced(job, owner)).values(
            status="failed", error=error[:MAX_ERROR_CHARS], finished_at=utcnow(), lease_expires_at=None)
            .execution_options(synchronize_session=False))
        if done.rowcount != 1:
            return False
        row = db.get(Submission, job.submission_id, populate_existing=True)
        assert row is not None
        _queue_webhook(db, row, None)
        record(db, SYSTEM, "submission.failed", submission_id=job.submission_id,
               detail={"error": error[:MAX_ERROR_CHARS], "attempt": job.attempt})
        return True


def retry(store: Store, job: Job, owner: str, reason: str, max_attempts: int) -> str:
    """The grader failed on this job (a crash, or a report it marked incomplete): grade it again.

    Nothing is stored as the candidate's score. After `max_attempts` gradings the job is failed
    with the reason, as for a submission that keeps bringing the service down. Returns
    "requeued", "failed", or "stale" when this worker no longer owns the job.
    """
    if job.attempt >= max_attempts:
        message = f"the grader failed {job.attempt} time(s) on this submission; last: {reason}"
        return "failed" if fail(store, job, owner, message) else "stale"
    with store.session() as db:
        done = db.execute(update(Submission).where(*_fenced(job, owner)).values(
            status="queued", owner=None, lease_expires_at=None, error=reason[:MAX_ERROR_CHARS])
            .execution_options(synchronize_session=False))
        if done.rowcount != 1:
            return "stale"
        record(db, SYSTEM, "submission.requeued", submission_id=job.submission_id,
               detail={"reason": reason[:MAX_ERROR_CHARS], "attempt": job.attempt})
        return "requeued"


def _queue_webhook(db: Session, row: Submission, report: Report | None) -> None:
    if row.callback_url:
        db.add(WebhookDelivery(submission_id=row.id, url=row.callback_url,
                               body=build_body(row, report), status="pending", attempts=0, next_attempt_at=utcnow()))


def recover_orphans(store: Store, max_attempts: int) -> tuple[int, int]:
    """Requeue running jobs whose worker is gone (dead process on this host, or an expired lease).

    A job interrupted `max_attempts` times is failed instead: a submission that
    brings the service down must not do it forever. Returns (requeued, failed).
    """
    requeued = failed = 0
    with store.session() as db:
        now = utcnow()
        rows = db.scalars(select(Submission).where(Submission.status == "running")).all()
        for row in rows:
            expired = row.lease_expires_at is None or row.lease_expires_at < now
            if not (expired or _owner_is_dead(row.owner)):
                continue
            if row.attempts >= max_attempts:
                row.status, row.finished_at, row.lease_expires_at = "failed", now, None
                row.error = (f"grading was interrupted {row.attempts} times (the service stopped while grading "
                             "this submission); it is not retried again")
                _queue_webhook(db, row, None)
                record(db, SYSTEM, "submission.failed", submission_id=row.id,
                       detail={"error": row.error, "attempt": row.attempts})
                failed += 1
            else:
                record(db, SYSTEM, "job.requeued", submission_id=row.id,
                       detail={"previous_owner": row.owner, "attempt": row.attempts,
                               "reason": "lease expired" if expired else "worker process is gone"})
                row.status, row.owner, row.lease_expires_at = "queued", None, None
                requeued += 1
    if requeued or failed:
        log.warning("took back orphaned jobs: %d requeued, %d failed after too many attempts", requeued, failed)
    return requeued, failed
