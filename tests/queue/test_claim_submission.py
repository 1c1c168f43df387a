"""`DatabaseQueue.claim_submission`: what a broker's "grade submission <id>" message may claim, on a SQLite file."""

from __future__ import annotations

import threading

from queue_helpers import (
    actions,
    dead_owner,
    in_s,
    live_foreign_owner,
    new_submission,
    reports,
    row,
    set_row,
    standin_grade,
)

from grader.config import Settings
from grader.queue.base import Job
from grader.queue.database import DatabaseQueue, owner_id
from grader.service.grading import open_queue
from grader.store.db import Store


def queue_of(store: Store, settings: Settings, owner: str | None = None) -> DatabaseQueue:
    return open_queue(store, settings, owner or owner_id("test"))


def report_for(settings: Settings, job: Job):  # type: ignore[no-untyped-def]
    return standin_grade(job.problem_id, job.files, settings, job.entry)


def test_a_queued_submission_is_claimed_with_a_lease_and_its_first_attempt(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings, "affine_forward\n")
    queue = queue_of(store, settings)
    job = queue.claim_submission(sid)
    assert isinstance(job, Job)
    assert (job.submission_id, job.problem_id, job.attempt, job.entry) == (sid, "mlp", 1, "solution.py")
    assert job.files == {"solution.py": "affine_forward\n"}
    r = row(store, sid)
    assert (r.status, r.owner, r.attempts) == ("running", queue.owner, 1)
    assert r.lease_expires_at is not None and r.lease_expires_at > in_s(50)


def test_a_duplicate_message_finds_nothing_to_grade(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)
    queue = queue_of(store, settings)
    job = queue.claim_submission(sid)
    assert isinstance(job, Job)
    assert queue.complete(job, report_for(settings, job))
    assert queue.claim_submission(sid) is None  # done: ack and drop
    assert queue_of(store, settings, owner_id("other")).claim_submission(sid) is None
    assert queue.claim_submission("no-such-submission") is None
    failed = new_submission(store, settings)
    set_row(store, failed, status="failed", error="the grader failed")
    assert queue.claim_submission(failed) is None
    assert row(store, failed).status == "failed"
    assert reports(store, sid) == 1


def test_a_job_held_by_a_live_worker_is_retried_later(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)
    first = queue_of(store, settings, owner_id("first"))
    assert isinstance(first.claim_submission(sid), Job)
    # the same process's own live worker, and another machine's worker with a valid lease: both stand
    assert queue_of(store, settings, owner_id("second")).claim_submission(sid) == "later"
    set_row(store, sid, owner=live_foreign_owner())
    assert queue_of(store, settings, owner_id("second")).claim_submission(sid) == "later"
    r = row(store, sid)
    assert (r.status, r.attempts, r.owner) == ("running", 1, live_foreign_owner())


def test_an_expired_lease_is_taken_back_counting_an_attempt(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)
    set_row(store, sid, status="running", owner=live_foreign_owner(), attempts=1, lease_expires_at=in_s(-1))
    queue = queue_of(store, settings)
    job = queue.claim_submission(sid)
    assert isinstance(job, Job) and job.attempt == 2
    r = row(store, sid)
    assert (r.status, r.owner, r.attempts) == ("running", queue.owner, 2)
    assert actions(store, sid) == ["submission.created", "job.requeued"]


def test_a_dead_owner_on_this_host_is_taken_back_at_once(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)
    set_row(store, sid, status="running", owner=dead_owner(), attempts=1, lease_expires_at=in_s(3600))
    job = queue_of(store, settings).claim_submission(sid)
    assert isinstance(job, Job) and job.attempt == 2


def test_a_job_that_kills_its_worker_every_time_ends_failed_with_the_reason(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)
    for attempt in (1, 2, 3):  # each grading child is SIGKILLed: a dead owner, its message redelivered
        job = queue_of(store, settings, dead_owner()).claim_submission(sid)
        assert isinstance(job, Job) and job.attempt == attempt
    assert queue_of(store, settings).claim_submission(sid) is None
    r = row(store, sid)
    assert r.status == "failed" and r.attempts == 3
    assert r.error is not None and "interrupted 3 times" in r.error
    assert actions(store, sid)[-1] == "submission.failed"
    assert reports(store, sid) == 0
    assert queue_of(store, settings).claim_submission(sid) is None  # later duplicates are dropped


def test_a_worker_that_lost_its_job_is_fenced_off(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings, "affine_forward\n")
    slow = queue_of(store, settings, owner_id("slow"))
    old = slow.claim_submission(sid)
    assert isinstance(old, Job)
    set_row(store, sid, lease_expires_at=in_s(-1))  # its lease lapsed while it graded
    fresh = queue_of(store, settings, owner_id("fresh"))
    new = fresh.claim_submission(sid)
    assert isinstance(new, Job) and new.attempt == 2
    assert slow.complete(old, report_for(settings, old)) is False  # the stale result is void
    assert slow.fail(old, "late", retry=True) == "stale"
    assert slow.renew([old]) == 0
    assert fresh.complete(new, report_for(settings, new)) is True
    assert reports(store, sid) == 1
    assert row(store, sid).status == "done"


def test_concurrent_claims_of_one_message_and_its_duplicate_grade_once(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)
    results: list[object] = []
    barrier = threading.Barrier(4)

    def claim(name: str) -> None:
        queue = queue_of(store, settings, owner_id(name))
        barrier.wait()
        results.append(queue.claim_submission(sid))

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(isinstance(r, Job) for r in results) == 1
    assert sorted(r for r in results if not isinstance(r, Job)) == ["later"] * 3  # type: ignore[type-var]
    assert row(store, sid).attempts == 1


def test_a_requeued_job_is_claimable_again_and_unpublished(store: Store, settings: Settings) -> None:
    from datetime import UTC, datetime

    sid = new_submission(store, settings)
    set_row(store, sid, published_at=datetime(2026, 1, 1, tzinfo=UTC))
    queue = queue_of(store, settings)
    job = queue.claim_submission(sid)
    assert isinstance(job, Job)
    assert queue.fail(job, "the sandbox broke", retry=True) == "requeued"
    r = row(store, sid)
    assert (r.status, r.published_at) == ("queued", None)  # the sweeper publishes it again
    again = queue.claim_submission(sid)
    assert isinstance(again, Job) and again.attempt == 2


def test_a_stopping_pool_gives_back_the_jobs_it_still_grades(store: Store, settings: Settings) -> None:
    from grader.queue.pool import WorkerPool

    sid = new_submission(store, settings)
    started, release = threading.Event(), threading.Event()

    def stuck(problem_id: str, files: dict[str, str], entry: str):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(30)
        return standin_grade(problem_id, files, settings, entry)

    pool = WorkerPool(queue_of(store, settings), stuck, workers=1, lease_s=60)
    pool.start()
    assert started.wait(10)
    pool.stop(timeout_s=0.2)
    assert pool.give_back("the worker stopped") == 1
    r = row(store, sid)
    assert (r.status, r.owner, r.attempts, r.error) == ("queued", None, 1, "the worker stopped")
    release.set()  # the grading ends after all: its result is fenced off
    for t in pool._threads:
        t.join(10)
    assert row(store, sid).status == "queued" and reports(store, sid) == 0
