"""Grading in the service: the engine bound to the settings, and what a finished job means to the product.

The queue (grader/queue) hands jobs to the worker pool and announces each change
of a job's state; this module owns the consequences: an audit event and, for a
submission with a callback_url, a webhook delivery row written in the same
transaction as the change (an outbox the dispatcher drains), and the metrics.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grader.config import Settings
from grader.engine.report import Report
from grader.queue.base import JobEvent, Outcome
from grader.queue.database import DatabaseQueue, owner_id
from grader.queue.pool import WorkerPool
from grader.service.audit import record
from grader.service.auth import SYSTEM
from grader.service.metrics import Metrics
from grader.service.webhooks import build_body
from grader.store.db import Store
from grader.store.models import Submission, WebhookDelivery, utcnow

ServiceGradeFn = Callable[[str, dict[str, str], Settings, str], Report]
"""(problem_id, files, settings, entry) -> Report; `engine_grade` in the product, a stand-in in tests."""

AUDIT_ACTIONS = {"graded": "submission.graded", "failed": "submission.failed",
                 "requeued": "submission.requeued", "taken_back": "job.requeued"}


def engine_grade(problem_id: str, files: dict[str, str], settings: Settings, entry: str) -> Report:
    """The grading engine with the settings' sandbox backend and options: blocking, thread-safe."""
    from grader.engine import grade

    return grade(problem_id, files, backend=settings.sandbox(),
                 options=settings.grading_options(), entry=entry)


def prepare_sandbox(settings: Settings) -> None:
    """Start the settings' sandbox backend now, so a missing daemon or image stops the service at start-up
    with its reason, and fill its warm pools (Docker) for every problem of the catalog."""
    from grader.engine.catalog import list_problems

    backend = settings.sandbox()
    warm = getattr(backend, "warm", None)
    if warm is not None:
        warm([problem.sandbox for problem in list_problems()])


def release_sandbox() -> None:
    """Stop every sandbox backend this process started (the Docker backend removes its containers)."""
    from grader.isolation import close_backends

    close_backends()


def record_job_event(db: Session, event: JobEvent) -> None:
    """The audit event for a change of a job's state, and the webhook delivery for a finished one."""
    failed = event.kind == "failed" or (event.report is not None and event.report.status == "error")
    action = "submission.failed" if failed else AUDIT_ACTIONS[event.kind]
    record(db, SYSTEM, action, submission_id=event.submission_id, detail=event.detail)
    if event.kind in ("graded", "failed"):
        row = db.get(Submission, event.submission_id, populate_existing=True)
        if row is not None and row.callback_url:
            db.add(WebhookDelivery(submission_id=row.id, url=row.callback_url, body=build_body(row, event.report),
                                   status="pending", attempts=0, next_attempt_at=utcnow()))


def open_queue(store: Store, settings: Settings, owner: str | None = None) -> DatabaseQueue:
    """The database queue as one worker pool's (`owner`, new by default), recording every job event."""
    return DatabaseQueue(store, owner=owner or owner_id(uuid.uuid4().hex[:8]), lease_s=settings.job_lease_s,
                         max_attempts=settings.job_max_attempts, listener=record_job_event)


def outcome_observer(metrics: Metrics, on_finished: Callable[[], None] | None = None) -> Callable[[Outcome], None]:
    """What the pool reports, counted in `metrics`; `on_finished` runs after each grading (wakes the webhooks)."""
    def observe(outcome: Outcome) -> None:
        metrics.count("grader_gradings_total", {"outcome": outcome.kind}, outcome.count)
        if outcome.duration_s is not None:
            metrics.observe_grading(outcome.duration_s)
            if on_finished is not None:
                on_finished()

    return observe


def build_pool(store: Store, settings: Settings, *, grade: ServiceGradeFn = engine_grade,
               metrics: Metrics | None = None, on_finished: Callable[[], None] | None = None) -> WorkerPool:
    """The embedded worker pool of `settings.workers` threads on the database queue."""
    def bound(problem_id: str, files: dict[str, str], entry: str) -> Report:
        return grade(problem_id, files, settings, entry)

    return WorkerPool(open_queue(store, settings), bound, workers=settings.workers, lease_s=settings.job_lease_s,
                      on_outcome=outcome_observer(metrics or Metrics(), on_finished))


@dataclass(frozen=True)
class QueueHealth:
    """What /healthz and /metrics say of the queue: its backend, the broker's state, live workers."""

    backend: Literal["embedded", "celery"]
    broker: str  # "ok" or "error: <why>"
    workers_alive: int


class Dispatch(Protocol):
    """How the API hands accepted submissions to whoever grades them, whatever the queue backend.

    `submitted` runs after the submission committed and never raises: a submission that could not be
    handed over is in the database and is picked up later (the embedded pool's poll, or the sweeper).
    """

    backend: Literal["embedded", "celery"]

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submitted(self, submission_id: str) -> None: ...

    def health(self) -> QueueHealth: ...


class EmbeddedDispatch:
    """The database queue graded by this process's pool (None: `grader serve --workers 0`, a `grader worker`
    polls the database); a new submission wakes the pool."""

    backend: Literal["embedded", "celery"] = "embedded"

    def __init__(self, pool: WorkerPool | None) -> None:
        self.pool = pool

    def start(self) -> None:
        if self.pool is not None:
            self.pool.start()

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()

    def submitted(self, submission_id: str) -> None:
        if self.pool is not None:
            self.pool.wake()

    def health(self) -> QueueHealth:
        return QueueHealth(backend="embedded", broker="ok", workers_alive=self.pool.workers if self.pool else 0)


def open_dispatch(store: Store, settings: Settings, *, grade: ServiceGradeFn = engine_grade,
                  metrics: Metrics | None = None, on_finished: Callable[[], None] | None = None) -> Dispatch:
    """The dispatch the settings choose: Celery messages (queue=celery: this process grades nothing), or the
    embedded pool of `settings.workers` threads (none with 0 workers)."""
    if settings.queue == "celery":
        from grader.service.cluster import CeleryDispatch

        return CeleryDispatch(store, settings)
    pool = (build_pool(store, settings, grade=grade, metrics=metrics, on_finished=on_finished)
            if settings.workers > 0 else None)
    return EmbeddedDispatch(pool)


def queue_depth(store: Store) -> int:
    """Submissions waiting to be graded (status queued), whatever carries their messages."""
    with store.session() as db:
        return int(db.scalar(select(func.count()).select_from(Submission).where(Submission.status == "queued"))
                   or 0)
