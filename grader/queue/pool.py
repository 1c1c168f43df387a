"""The embedded worker pool: N threads that claim jobs from a `Queue` and grade them with a grade function."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from grader import logs
from grader.engine.report import Report
from grader.errors import GraderError
from grader.queue.base import Job, Outcome, OutcomeKind, Queue

log = logging.getLogger(__name__)

GradeFn = Callable[[str, dict[str, str], str], Report]
"""(problem_id, files, entry) -> Report: blocking, thread-safe, a candidate's mistake is a report.

The service binds the engine's `grader.engine.grade` to its settings (backend and options)."""

IDLE_POLL_S = 1.0  # picks up jobs committed by other processes; local submits wake the pool at once
MAX_HEARTBEAT_S = 10.0


def _ignore(outcome: Outcome) -> None:
    pass


def run_job(queue: Queue, grade: GradeFn, job: Job) -> Outcome:
    """Grade one claimed job and record its end in `queue`: complete (fenced), or fail with or without a retry.

    Shared by the embedded pool and the broker's task. A candidate's mistake is a report; a `GraderError`
    fails the job with its message; any other exception or an incomplete report is the grader's fault and
    the job is queued again (until its attempts run out). Exceptions of the queue itself propagate.
    """
    with logs.bind(submission_id=job.submission_id, problem=job.problem_id, attempt=job.attempt):
        # Bound here, the engine's and the sandbox's records of this grading name it too (they log from this
        # thread); `run_job` is where the embedded pool and the broker's task meet.
        log.info("submission %s (attempt %d): grading", job.submission_id, job.attempt,
                 extra={"event": "grading.started"})
        outcome, duration_s = _grade_and_record(queue, grade, job)
    return Outcome(outcome, duration_s=duration_s)


def _grade_and_record(queue: Queue, grade: GradeFn, job: Job) -> tuple[OutcomeKind, float]:
    started = time.monotonic()
    outcome: OutcomeKind
    score: float | None = None
    max_score: float | None = None
    try:
        report = grade(job.problem_id, job.files, job.entry)
    except GraderError as exc:
        log.error("grading %s failed: %s", job.submission_id, exc.message)
        outcome = queue.fail(job, exc.message, retry=False)
    except Exception as exc:  # a bug in the grader: graded again (then failed with the reason); the worker lives on
        log.exception("grading %s crashed", job.submission_id)
        message = f"internal grader error ({type(exc).__name__}); an administrator can find it in the logs"
        outcome = queue.fail(job, message, retry=True)
    else:
        if report.status == "incomplete":
            # A grader fault in some test must never cost the candidate: no score is stored.
            log.error("grading %s was incomplete: %s", job.submission_id, report.error)
            outcome = queue.fail(job, report.error or "the grader failed", retry=True)
        elif queue.complete(job, report):
            score, max_score = report.score, report.max_score
            outcome = "failed" if report.status == "error" else "graded"
        else:
            outcome = "stale"
    duration_s = time.monotonic() - started
    log.info("submission %s (attempt %d): %s in %.1f s", job.submission_id, job.attempt, outcome, duration_s,
             extra={"event": "grading.finished", "outcome": outcome, "duration_s": round(duration_s, 3),
                    "score": score, "max_score": max_score})
    return outcome, duration_s


class LeaseKeeper:
    """Renews the leases of the jobs being graded right now, every `heartbeat_s`, from one thread.

    `hold(job)` while grading it. With `recover_every_s`, it also takes back orphaned jobs that often.
    Used by the embedded pool and by each process of a broker's worker (started lazily, after a fork).
    """

    def __init__(self, queue: Queue, lease_s: float, *, recover_every_s: float | None = None) -> None:
        self.queue, self.lease_s, self.recover_every_s = queue, lease_s, recover_every_s
        self.heartbeat_s = min(MAX_HEARTBEAT_S, lease_s / 4)
        self._lock = threading.Lock()
        self._active: dict[str, Job] = {}
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._keep, name="grader-leases", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    @contextmanager
    def hold(self, job: Job) -> Iterator[None]:
        """Keep `job`'s lease alive for the duration of the block."""
        with self._lock:
            self._active[job.submission_id] = job
        try:
            yield
        finally:
            with self._lock:
                self._active.pop(job.submission_id, None)

    def active(self) -> list[Job]:
        """The jobs held right now."""
        with self._lock:
            return list(self._active.values())

    def _keep(self) -> None:
        last_sweep = time.monotonic()
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self._lock:
                    active = list(self._active.values())
                self.queue.renew(active)
                if self.recover_every_s is not None and time.monotonic() - last_sweep > self.recover_every_s:
                    self.queue.recover()
                    last_sweep = time.monotonic()
            except Exception:
                log.exception("renewing leases failed")


class WorkerPool:
    """Grades jobs from `queue` with at most `workers` at once on this machine.

    `on_outcome` hears what became of each grading (and of jobs taken back at start), for
    metrics and to wake whatever acts on finished jobs; it is called from the workers' threads.
    """

    def __init__(self, queue: Queue, grade: GradeFn, *, workers: int, lease_s: float,
                 on_outcome: Callable[[Outcome], None] = _ignore) -> None:
        self.queue, self.grade, self.workers, self.lease_s = queue, grade, workers, lease_s
        self.on_outcome = on_outcome
        self.leases = LeaseKeeper(queue, lease_s, recover_every_s=lease_s / 2)
        self.heartbeat_s = self.leases.heartbeat_s
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Take back jobs orphaned by a dead process, then start the workers and the lease keeper."""
        self._recover()
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"grader-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self.leases.start()
        assert self.leases.thread is not None
        self._threads.append(self.leases.thread)
        log.info("worker pool started with %d workers", self.workers)

    def wake(self) -> None:
        """A job was just queued: let an idle worker claim it now rather than at its next poll."""
        with self._wake:
            self._pending_wakes += 1
            self._wake.notify()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop claiming; a grading in progress finishes in the background or is taken back at next start."""
        self._stop.set()
        self.leases.stop()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def give_back(self, reason: str) -> int:
        """Queue again the jobs still being graded (after `stop`, before the process exits), so that another
        worker takes them at once rather than when their lease lapses; their late results are fenced off.
        Returns how many were given back."""
        given = 0
        for job in self.leases.active():
            try:
                if self.queue.fail(job, reason, retry=True) == "requeued":
                    given += 1
                    log.warning("gave back submission %s (attempt %d): %s", job.submission_id, job.attempt, reason)
            except Exception:
                log.exception("giving back %s failed; its lease will lapse", job.submission_id)
        return given

    def _recover(self) -> None:
        requeued, failed = self.queue.recover()
        if requeued:
            self.on_outcome(Outcome("requeued", count=requeued))
        if failed:
            self.on_outcome(Outcome("failed", count=failed))

    def _idle_wait(self) -> None:
        with self._wake:
            if self._pending_wakes == 0:
                self._wake.wait(IDLE_POLL_S)
            self._pending_wakes = max(0, self._pending_wakes - 1)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.claim()
            except Exception:  # a locked or unreachable database: wait and try again, never die
                log.exception("claiming a job failed")
                job = None
                time.sleep(IDLE_POLL_S)
            if job is None:
                self._idle_wait()
                continue
            with logs.bind(submission_id=job.submission_id):
                try:
                    with self.leases.hold(job):
                        self.on_outcome(run_job(self.queue, self.grade, job))
                except Exception:
                    # Storing the outcome failed (database gone, disk full): the lease lapses and the job is
                    # taken back and graded again; this worker goes on with the next one.
                    log.exception("finishing %s failed; it will be graded again", job.submission_id)
                    self.on_outcome(Outcome("lost"))
