"""The queue's protocol: what a worker pool needs from any queue of grading jobs.

Small on purpose, and free of storage types, so that a second implementation (a
broker such as Celery on Redis) can stand beside the database one. A job is one
submission to grade; whoever claims it holds it until it completes, fails or its
lease lapses, and a worker that lost its job is fenced off: its late result is
refused (complete returns False, fail returns "stale").

What a finished job means to the product (an audit event, a webhook, a metric)
is not the queue's business: implementations announce `JobEvent`s to a listener
the service gives them, and the pool reports `Outcome`s to one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from grader.engine.report import Report

EventKind = Literal["graded", "failed", "requeued", "taken_back"]
FailResult = Literal["failed", "requeued", "stale"]
OutcomeKind = Literal["graded", "failed", "requeued", "stale", "lost"]


@dataclass(frozen=True)
class Job:
    """One submission to grade, as claimed by one worker; `attempt` counts claims (1 for the first)."""

    submission_id: str
    problem_id: str
    files: dict[str, str]
    entry: str
    attempt: int


@dataclass(frozen=True)
class JobEvent:
    """A change of a job's state that the product may act on.

    graded: the report was stored (`report.status` 'error' marks the submission failed but keeps it);
    failed: the job ended without a report, `reason` says why; requeued: the grader failed on it and
    it waits to be graded again; taken_back: its worker was gone and it waits again.
    """

    kind: EventKind
    submission_id: str
    attempt: int
    report: Report | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What became of `count` gradings, as a pool reports it (duration_s for a single grading)."""

    kind: OutcomeKind
    count: int = 1
    duration_s: float | None = None


class Queue(Protocol):
    """Grading jobs: claimed with a lease, renewed while graded, then completed or failed."""

    def claim(self) -> Job | None:
        """The oldest waiting job, now held by this queue's worker; None when nothing waits."""
        ...

    def renew(self, jobs: Collection[Job]) -> int:
        """Extend the leases of these jobs (the ones being graded right now); returns how many were extended."""
        ...

    def complete(self, job: Job, report: Report) -> bool:
        """Store the report and end the job; False when this worker no longer holds it (the result is void)."""
        ...

    def fail(self, job: Job, reason: str, *, retry: bool) -> FailResult:
        """End the job without a report, or with `retry` put it back until its attempts run out.

        "failed", "requeued", or "stale" when this worker no longer holds the job.
        """
        ...

    def recover(self) -> tuple[int, int]:
        """Take back jobs whose worker is gone: (requeued, failed after too many attempts).

        A queue whose broker redelivers lost jobs by itself returns (0, 0).
        """
        ...
