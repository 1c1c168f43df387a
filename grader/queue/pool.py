"""The embedded worker pool: N threads that claim jobs from a `Queue` and grade them with a grade function."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

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


class WorkerPool:
    """Grades jobs from `queue` with at most `workers` at once on this machine.

    `on_outcome` hears what became of each grading (and of jobs taken back at start), for
    metrics and to wake whatever acts on finished jobs; it is called from the workers' threads.
    """

    def __init__(self, queue: Queue, grade: GradeFn, *, workers: int, lease_s: float,
                 on_outcome: Callable[[Outcome], None] = _ignore) -> None:
        self.queue, self.grade, self.workers, self.lease_s = queue, grade, workers, lease_s
        self.on_outcome = on_outcome
        self.heartbeat_s = min(MAX_HEARTBEAT_S, lease_s / 4)
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active_lock = threading.Lock()
        self._active: dict[str, Job] = {}

    def start(self) -> None:
        """Take back jobs orphaned by a dead process, then start the workers and the lease keeper."""
        self._recover()
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"grader-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        keeper = threading.Thread(target=self._keep_leases, name="grader-leases", daemon=True)
        keeper.start()
        self._threads.append(keeper)
        log.info("worker pool started with %d workers", self.workers)

    def wake(self) -> None:
        """A job was just queued: let an idle worker claim it now rather than at its next poll."""
        with self._wake:
            self._pending_wakes += 1
            self._wake.notify()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop claiming; a grading in progress finishes in the background or is taken back at next start."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

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
            with self._active_lock:
                self._active[job.submission_id] = job
            try:
                self._run(job)
            except Exception:
                # Storing the outcome failed (database gone, disk full): the lease lapses and the job is
                # taken back and graded again; this worker goes on with the next one.
                log.exception("finishing %s failed; it will be graded again", job.submission_id)
                self.on_outcome(Outcome("lost"))
            finally:
                with self._active_lock:
                    self._active.pop(job.submission_id, None)

    def _run(self, job: Job) -> None:
        started = time.monotonic()
        outcome: OutcomeKind
        try:
            report = self.grade(job.problem_id, job.files, job.entry)
        except GraderError as exc:
            log.error("grading %s failed: %s", job.submission_id, exc.message)
            outcome = self.queue.fail(job, exc.message, retry=False)
        except Exception as exc:  # a bug in the grader: graded again (then failed with the reason); the worker lives on
            log.exception("grading %s crashed", job.submission_id)
            message = f"internal grader error ({type(exc).__name__}); an administrator can find it in the logs"
            outcome = self.queue.fail(job, message, retry=True)
        else:
            if report.status == "incomplete":
                # A grader fault in some test must never cost the candidate: no score is stored.
                log.error("grading %s was incomplete: %s", job.submission_id, report.error)
                outcome = self.queue.fail(job, report.error or "the grader failed", retry=True)
            elif self.queue.complete(job, report):
                outcome = "failed" if report.status == "error" else "graded"
            else:
                outcome = "stale"
        duration_s = time.monotonic() - started
        log.info("submission %s (attempt %d): %s in %.1f s", job.submission_id, job.attempt, outcome, duration_s)
        self.on_outcome(Outcome(outcome, duration_s=duration_s))

    def _keep_leases(self) -> None:
        last_sweep = time.monotonic()
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self._active_lock:
                    active = list(self._active.values())
                self.queue.renew(active)
                if time.monotonic() - last_sweep > self.lease_s / 2:
                    self.queue.recover()
                    last_sweep = time.monotonic()
            except Exception:
                log.exception("renewing leases failed")
