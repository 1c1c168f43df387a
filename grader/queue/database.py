"""The database queue: a submission row is its job, claimed with a compare-and-set and held with a lease.

Durable by construction: a job exists as soon as its submission is committed,
and a job left 'running' by a process that died is put back in the queue when a
worker pool starts (or when its lease runs out). The attempt counter doubles as
a fencing token, so a stale worker's result is discarded and each submission
gets exactly one report.

Every change of a job's state is announced to the listener inside the same
transaction, so what the service records for it (an audit event, a webhook
delivery row: an outbox) commits or rolls back with the change itself.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, Update, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grader.engine.report import Report
from grader.queue.base import FailResult, Job, JobEvent
from grader.store.db import Store
from grader.store.models import ReportRow, Submission, report_checksum, utcnow

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
CLAIM_RACES = 5  # another worker may win the race for the same row; then try the next one

Listener = Callable[[Session, JobEvent], None]
"""Called inside the transaction that changed the job, after the change (the row is flushed)."""


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


def _orphaned(sid: str, owner: str | None, attempts: int, now: datetime, dead: bool) -> list[Any]:
    """The row is still as it was read when its worker was found gone: running for the same owner and attempt,
    and (unless that owner's process is known dead) its lease still lapsed: a worker that renewed it meanwhile
    keeps its job."""
    conditions = [Submission.id == sid, Submission.status == "running", Submission.attempts == attempts,
                  Submission.owner.is_(None) if owner is None else Submission.owner == owner]
    if not dead:
        conditions.append(or_(Submission.lease_expires_at.is_(None), Submission.lease_expires_at < now))
    return conditions


def _interrupted(attempts: int) -> str:
    times = "once" if attempts == 1 else f"{attempts} times"
    return (f"grading was interrupted {times} (the service stopped while grading "
            "this submission); it is not retried again")


def _ignore(db: Session, event: JobEvent) -> None:
    pass


def _changed(db: Session, statement: Update) -> int:
    """Rows an UPDATE matched: 1 when a compare-and-set won, 0 when another worker's state stood."""
    result = cast(CursorResult[Any], db.execute(statement.execution_options(synchronize_session=False)))
    return result.rowcount or 0


class DatabaseQueue:
    """The `Queue` on the submissions table, for one worker (`owner`); one instance per worker pool."""

    def __init__(self, store: Store, *, owner: str, lease_s: float, max_attempts: int,
                 listener: Listener = _ignore) -> None:
        self.store, self.owner, self.lease_s, self.max_attempts = store, owner, lease_s, max_attempts
        self.listener = listener

    def claim(self) -> Job | None:
        """Take the oldest queued job, or None when the queue is empty."""
        for _ in range(CLAIM_RACES):
            with self.store.session() as db:
                sid = db.scalar(select(Submission.id).where(Submission.status == "queued")
                                .order_by(Submission.created_at, Submission.id).limit(1))
                if sid is None:
                    return None
                now = utcnow()
                claimed = _changed(db, update(Submission)
                                   .where(Submission.id == sid, Submission.status == "queued")
                                   .values(status="running", owner=self.owner, attempts=Submission.attempts + 1,
                                           started_at=now, lease_expires_at=now + timedelta(seconds=self.lease_s)))
                if claimed != 1:
                    continue
                row = db.get(Submission, sid, populate_existing=True)
                assert row is not None
                return Job(submission_id=sid, problem_id=row.problem_id, files={f.name: f.text for f in row.files},
                           entry=row.entry, attempt=row.attempts)
        return None

    def claim_submission(self, submission_id: str) -> Job | None | Literal["later"]:
        """Claim this one submission, as a broker's "grade submission <id>" message asks.

        Claims the row when it is queued, or when it is running for a worker that is gone (its lease
        expired, or its process on this host is dead: a grading child killed by a SIGKILL); taking it
        back counts an attempt, and one interrupted `max_attempts` times is failed with the reason
        instead. Returns the `Job`; None when there is nothing to grade (done, failed, missing: the
        message is a duplicate, ack and drop it); "later" while another live worker holds a valid
        lease (ask again once it may have lapsed). Duplicate messages are harmless: the claim is a
        compare-and-set on (status, attempts), so exactly one of them wins.
        """
        with self.store.session() as db:
            row = db.get(Submission, submission_id, populate_existing=True)
            if row is None or row.status not in ("queued", "running"):
                return None
            now, seen_attempts, seen_status = utcnow(), row.attempts, row.status
            event: JobEvent | None = None
            if seen_status == "running":
                expired = row.lease_expires_at is None or row.lease_expires_at < now
                dead = _owner_is_dead(row.owner)
                if not (expired or dead):
                    return "later"
                if seen_attempts >= self.max_attempts:
                    reason = _interrupted(seen_attempts)
                    if _changed(db, update(Submission).where(
                            *_orphaned(submission_id, row.owner, seen_attempts, now, dead)).values(
                            status="failed", error=reason, finished_at=now, lease_expires_at=None)) != 1:
                        return "later"  # someone else changed it meanwhile: look again
                    self.listener(db, JobEvent(kind="failed", submission_id=submission_id, attempt=seen_attempts,
                                               reason=reason, detail={"error": reason, "attempt": seen_attempts}))
                    log.warning("submission %s failed: %s", submission_id, reason)
                    return None
                event = JobEvent(kind="taken_back", submission_id=submission_id, attempt=seen_attempts,
                                 detail={"previous_owner": row.owner, "attempt": seen_attempts,
                                         "reason": "lease expired" if expired else "worker process is gone"})
            still = ([Submission.id == submission_id, Submission.status == "queued",
                      Submission.attempts == seen_attempts] if event is None else
                     _orphaned(submission_id, row.owner, seen_attempts, now, dead))
            claimed = _changed(db, update(Submission)
                               .where(*still)
                               .values(status="running", owner=self.owner, attempts=seen_attempts + 1,
                                       started_at=now, lease_expires_at=now + timedelta(seconds=self.lease_s)))
            if claimed != 1:
                return "later"  # another worker won the race: its claim stands, look again later
            if event is not None:
                log.warning("submission %s taken back from %s (%s)", submission_id, event.detail["previous_owner"],
                            event.detail["reason"])
                self.listener(db, event)
            row = db.get(Submission, submission_id, populate_existing=True)
            assert row is not None
            return Job(submission_id=submission_id, problem_id=row.problem_id,
                       files={f.name: f.text for f in row.files}, entry=row.entry, attempt=row.attempts)

    def renew(self, jobs: Collection[Job]) -> int:
        """Extend the leases of the jobs this owner is grading right now; returns how many were extended.

        Only the jobs a worker is actually busy with: a job whose worker thread died
        must let its lease run out, so that it is taken back and graded again.
        """
        if not jobs:
            return 0
        with self.store.session() as db:
            return _changed(db, update(Submission)
                            .where(Submission.status == "running", Submission.owner == self.owner,
                                   Submission.id.in_(sorted(j.submission_id for j in jobs)))
                            .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_s)))

    def _fenced(self, job: Job) -> list[Any]:
        return [Submission.id == job.submission_id, Submission.status == "running", Submission.owner == self.owner,
                Submission.attempts == job.attempt]

    def complete(self, job: Job, report: Report) -> bool:
        """Store the report and mark the job done (failed for an error report), unless this worker lost the job."""
        failed = report.status == "error"
        try:
            with self.store.session() as db:
                done = _changed(db, update(Submission).where(*self._fenced(job)).values(
                    status="failed" if failed else "done", score=report.score, max_score=report.max_score,
                    final_score=report.score, passed=report.passed, test_count=len(report.tests),
                    error=(report.error or "the grader failed")[:MAX_ERROR_CHARS] if failed else None,
                    finished_at=utcnow(), lease_expires_at=None))
                if done != 1:
                    log.warning("discarding a stale result for %s (attempt %d)", job.submission_id, job.attempt)
                    return False
                report_json = report.model_dump_json()
                # The checksum in the same row and transaction: a report changed afterwards is caught on read.
                db.add(ReportRow(submission_id=job.submission_id, report_json=report_json,
                                 checksum=report_checksum(report_json), attempt=job.attempt))
                db.flush()
                self.listener(db, JobEvent(kind="graded", submission_id=job.submission_id, attempt=job.attempt,
                                           report=report,
                                           detail={"score": report.score, "max_score": report.max_score,
                                                   "attempt": job.attempt, "duration_s": report.duration_s}))
                return True
        except IntegrityError:  # a report already exists: someone else completed it; ours is not counted
            log.warning("a report for %s already exists; discarding attempt %d", job.submission_id, job.attempt)
            return False

    def fail(self, job: Job, reason: str, *, retry: bool) -> FailResult:
        """Fail the job, or with `retry` (the grader's own fault) queue it again until max_attempts gradings.

        Nothing is stored as the candidate's score. After `max_attempts` gradings the job is failed
        with the reason, as for a submission that keeps bringing the service down.
        """
        if retry and job.attempt >= self.max_attempts:
            reason, retry = f"the grader failed {job.attempt} time(s) on this submission; last: {reason}", False
        reason = reason[:MAX_ERROR_CHARS]
        with self.store.session() as db:
            values: dict[str, Any] = (
                {"status": "queued", "owner": None, "lease_expires_at": None, "published_at": None, "error": reason}
                if retry else
                {"status": "failed", "error": reason, "finished_at": utcnow(), "lease_expires_at": None})
            if _changed(db, update(Submission).where(*self._fenced(job)).values(**values)) != 1:
                return "stale"
            kind: Literal["requeued", "failed"] = "requeued" if retry else "failed"
            self.listener(db, JobEvent(kind=kind, submission_id=job.submission_id, attempt=job.attempt,
                                       reason=reason,
                                       detail={"reason" if retry else "error": reason, "attempt": job.attempt}))
            return kind

    def recover(self) -> tuple[int, int]:
        """Requeue running jobs whose worker is gone (dead process on this host, or an expired lease).

        A job interrupted `max_attempts` times is failed instead: a submission that
        brings the service down must not do it forever. Returns (requeued, failed).
        """
        requeued = failed = 0
        taken: list[str] = []
        with self.store.session() as db:
            now = utcnow()
            rows = db.execute(select(Submission.id, Submission.owner, Submission.attempts, Submission.lease_expires_at)
                              .where(Submission.status == "running")).all()
            for sid, owner, attempts, lease_expires_at in rows:
                expired = lease_expires_at is None or lease_expires_at < now
                dead = _owner_is_dead(owner)
                if not (expired or dead):
                    continue
                # A compare-and-set on what was read: several sweepers (an API's, each worker's) may look at
                # the same row at once, and only one of them takes it back (one event, one attempt counted).
                still = _orphaned(sid, owner, attempts, now, dead)
                if attempts >= self.max_attempts:
                    error = _interrupted(attempts)
                    if _changed(db, update(Submission).where(*still).values(
                            status="failed", finished_at=now, lease_expires_at=None, error=error)) != 1:
                        continue
                    event = JobEvent(kind="failed", submission_id=sid, attempt=attempts, reason=error,
                                     detail={"error": error, "attempt": attempts})
                    failed += 1
                else:
                    # published_at None: a broker's sweeper publishes it again at its next round
                    if _changed(db, update(Submission).where(*still).values(
                            status="queued", owner=None, lease_expires_at=None, published_at=None)) != 1:
                        continue
                    event = JobEvent(kind="taken_back", submission_id=sid, attempt=attempts,
                                     detail={"previous_owner": owner, "attempt": attempts,
                                             "reason": "lease expired" if expired else "worker process is gone"})
                    requeued += 1
                self.listener(db, event)
                taken.append(f"{sid} ({event.kind})")
        if taken:
            log.warning("took back orphaned jobs (%d requeued, %d failed after too many attempts): %s",
                        requeued, failed, ", ".join(taken))
        return requeued, failed
