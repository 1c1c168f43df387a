"""The embedded worker pool: N threads (settings.workers) that claim jobs from the database and grade them."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from grader.config import Settings
from grader.errors import GraderError
from grader.queue import jobs
from grader.engine.report import Report
from grader.service.metrics import Metrics
from grader.store.db import Store

log = logging.getLogger(__name__)

GradeFn = Callable[[str, dict[str, str], Settings, str], Report]
"""(problem_id, files, settings, entry) -> Report; the engine's `grade` in the product."""

IDLE_POLL_S = 1.0  # picks up jobs committed by other processes; local submits wake the pool at once


def engine_grade(problem_id: str, files: dict[str, str], settings: Settings, entry: str) -> Report:
    """The grading engine: blocking, thread-safe, a candidate's mistake is a report."""
    from grader.engine import grade
    from grader.isolation import get_backend

    return grade(problem_id, files, backend=get_backend(settings.sandbox_backend),
                 options=settings.grading_options(), entry=entry)


class WorkerPool:
    """Grades queued submissions with at most `settings.workers` at once on this machine."""

    def __init__(self, store: Store, settings: Settings, *, grade: GradeFn = engine_grade,
                 metrics: Metrics | None = None, on_finished: Callable[[], None] | None = None) -> None:
        self.store, self.settings, self.grade = store, settings, grade
        self.metrics = metrics or Metrics()
        self.on_finished = on_finished
        self.owner = jobs.owner_id(uuid.uuid4().hex[:8])
        self.heartbeat_s = min(10.0, settings.job_lease_s / 4)
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active_lock = threading.Lock()
        self._active: set[str] = set()

    def start(self) -> None:
        """Take back jobs orphaned by a dead process, then start the workers and the lease keeper."""
        requeued, failed = jobs.recover_orphans(self.store, self.settings.job_max_attempts)
        if requeued:
            self.metrics.count("grader_gradings_total", {"outcome": "requeued"}, requeued)
        if failed:
            self.metrics.count("grader_gradings_total", {"outcome": "failed"}, failed)
        for i in range(self.settings.workers):
            t = threading.Thread(target=self._work, name=f"grader-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        keeper = threading.Thread(target=self._keep_leases, name="grader-leases", daemon=True)
        keeper.start()
        self._threads.append(keeper)
        log.info("worker pool %s started with %d workers", self.owner, self.settings.workers)

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

    def _idle_wait(self) -> None:
        with self._wake:
            if self._pending_wakes == 0:
                self._wake.wait(IDLE_POLL_S)
            self._pending_wakes = max(0, self._pending_wakes - 1)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = jobs.claim(self.store, self.owner, self.settings.job_lease_s)
            except Exception:  # a locked or unreachable database: wait and try again, never die
                log.exception("claiming a job failed")
                job = None
                time.sleep(IDLE_POLL_S)
            if job is None:
                self._idle_wait()
                continue
            with self._active_lock:
                self._active.add(job.submission_id)
            try:
                self._run(job)
            except Exception:
                # Storing the outcome failed (database gone, disk full): the lease lapses and the job is
                # taken back and graded again; this worker goes on with the next one.
                log.exception("finishing %s failed; it will be graded again", job.submission_id)
                self.metrics.count("grader_gradings_total", {"outcome": "lost"})
            finally:
                with self._active_lock:
                    self._active.discard(job.submission_id)

    def _run(self, job: jobs.Job) -> None:
        started = time.monotonic()
        outcome = "graded"
        try:
            report = self.grade(job.problem_id, job.files, self.settings, job.entry)
        except GraderError as exc:
            log.error("grading %s failed: %s", job.submission_id, exc.message)
            outcome = "failed" if jobs.fail(self.store, job, self.owner, exc.message) else "stale"
        except Exception as exc:  # a bug in the grader: graded again (then failed with the reason); the worker lives on
            log.exception("grading %s crashed", job.submission_id)
            message = f"internal grader error ({type(exc).__name__}); an administrator can find it in the logs"
            outcome = jobs.retry(self.store, job, self.owner, message, self.settings.job_max_attempts)
        else:
            if report.status == "incomplete":
                # A grader fault in some test must never cost the candidate: no score is stored.
                log.error("grading %s was incomplete: %s", job.submission_id, report.error)
                outcome = jobs.retry(self.store, job, self.owner, report.error or "the grader failed",
                                     self.settings.job_max_attempts)
            else:
                stored = jobs.complete(self.store, job, self.owner, report)
                outcome = ("failed" if report.status == "error" else "graded") if stored else "stale"
        duration_s = time.monotonic() - started
        self.metrics.observe_grading(duration_s)
        self.metrics.count("grader_gradings_total", {"outcome": outcome})
        log.info("submission %s (attempt %d): %s in %.1f s", job.submission_id, job.attempt, outcome, duration_s)
        if self.on_finished is not None:
            self.on_finished()

    def _keep_leases(self) -> None:
        last_sweep = time.monotonic()
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self._active_lock:
                    active = sorted(self._active)
                jobs.renew(self.store, self.owner, self.settings.job_lease_s, active)
                if time.monotonic() - last_sweep > self.settings.job_lease_s / 2:
                    jobs.recover_orphans(self.store, self.settings.job_max_attempts)
                    last_sweep = time.monotonic()
            except Exception:
                log.exception("renewing leases failed")
