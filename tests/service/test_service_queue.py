"""The durable queue: orphaned jobs are taken back, stale workers' results are void, one report per submission."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import make_settings, standin_grade
from sqlalchemy import func, select

from grader.config import Settings
from grader.engine.report import Report
from grader.errors import SandboxUnavailable
from grader.queue.base import Job
from grader.queue.database import DatabaseQueue, owner_id
from grader.service import submissions as subs
from grader.service.auth import SYSTEM
from grader.service.grading import build_pool, open_queue
from grader.service.schemas import SubmissionCreate
from grader.store.db import Store, open_store
from grader.store.models import AuditEvent, ReportRow, Submission, utcnow


@pytest.fixture
def store(settings: Settings) -> Store:
    return open_store(settings)


def new_submission(store: Store, settings: Settings, code: str = "affine_forward\n") -> str:
    created, _ = subs.create_submission(store, settings, SYSTEM, SubmissionCreate(problem="mlp", code=code))
    return created.id


def wait_done(store: Store, sid: str, timeout_s: float = 20.0) -> Submission:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with store.session() as db:
            row = db.get(Submission, sid)
            assert row is not None
            if row.status in ("done", "failed"):
                return row
        time.sleep(0.05)
    raise AssertionError(f"{sid} not finished after {timeout_s} s")


def reports(store: Store, sid: str) -> int:
    with store.session() as db:
        return db.scalar(select(func.count()).select_from(ReportRow).where(ReportRow.submission_id == sid)) or 0


def queue_of(store: Store, owner: str, lease_s: float = 60, max_attempts: int = 3) -> DatabaseQueue:
    """The database queue as the service opens it, held by `owner`."""
    return open_queue(store, make_settings(Path("unused"), job_lease_s=lease_s, job_max_attempts=max_attempts),
                      owner)


def dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_job_of_a_dead_process_is_regraded_once(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)
    import socket

    ghost = f"{socket.gethostname()}:{dead_pid()}:deadbeef"
    ghost_queue = queue_of(store, ghost, lease_s=3600)  # a lease far in the future: only the dead pid frees it
    job = ghost_queue.claim()
    assert job is not None and job.attempt == 1
    pool = build_pool(store, settings, grade=standin_grade)
    pool.start()
    try:
        row = wait_done(store, sid)
    finally:
        pool.stop()
    assert row.status == "done" and row.attempts == 2 and reports(store, sid) == 1
    # The ghost comes back to life with its old result: it is not counted.
    assert ghost_queue.complete(job, standin_grade("mlp", {"solution.py": ""}, settings, "solution.py")) is False
    assert reports(store, sid) == 1 and wait_done(store, sid).score == 8.0
    with store.session() as db:
        actions = list(db.scalars(select(AuditEvent.action).where(AuditEvent.submission_id == sid)
                                  .order_by(AuditEvent.id)))
    assert actions == ["submission.created", "job.requeued", "submission.graded"]


def test_expired_lease_is_taken_over_and_the_slow_worker_is_fenced(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)
    slow = queue_of(store, owner_id("slow"), lease_s=0.01)  # a live process: only the lease can free its job
    fast = queue_of(store, owner_id("fast"))
    job_a = slow.claim()
    assert job_a is not None
    time.sleep(0.05)
    assert fast.recover() == (1, 0)
    job_b = fast.claim()
    assert job_b is not None and job_b.attempt == 2
    report = standin_grade("mlp", job_b.files, settings, "solution.py")
    assert fast.complete(job_b, report) is True
    assert slow.complete(job_a, report) is False
    assert slow.fail(job_a, "late failure", retry=False) == "stale"
    assert slow.fail(job_a, "late crash", retry=True) == "stale"
    assert slow.renew([job_a]) == 0
    with store.session() as db:
        row = db.get(Submission, sid)
        assert row is not None and (row.status, row.error) == ("done", None)
        assert db.get(ReportRow, sid).attempt == 2  # type: ignore[union-attr]


def test_live_lease_is_left_alone(store: Store, settings: Settings) -> None:
    new_submission(store, settings)
    assert queue_of(store, owner_id("other")).claim() is not None
    assert queue_of(store, owner_id("sweeper")).recover() == (0, 0)


def test_a_submission_that_keeps_killing_workers_is_failed(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)
    import socket

    for attempt in range(1, settings.job_max_attempts + 1):
        dead = queue_of(store, f"{socket.gethostname()}:{dead_pid()}:x", max_attempts=settings.job_max_attempts)
        assert dead.claim().attempt == attempt  # type: ignore[union-attr]
        dead.recover()
    row = wait_done(store, sid, timeout_s=1)
    assert row.status == "failed" and f"interrupted {settings.job_max_attempts} times" in (row.error or "")
    assert reports(store, sid) == 0


def test_grader_faults_are_graded_again_then_failed_and_the_worker_lives_on(store: Store, settings: Settings) -> None:
    calls: dict[str, int] = {}

    def grade(problem_id: str, files: dict[str, str], s: Settings, entry: str) -> Report:
        code = files["solution.py"]
        calls[code] = calls.get(code, 0) + 1
        if "sandbox" in code:
            raise SandboxUnavailable("bubblewrap cannot create namespaces here")
        if "bug" in code:
            raise RuntimeError("plan bug")
        if "error-report" in code:
            return standin_grade(problem_id, files, s, entry).model_copy(update={"status": "error",
                                                                                 "error": "reference crashed"})
        if "incomplete" in code and ("always" in code or calls[code] == 1):
            return standin_grade(problem_id, files, s, entry).model_copy(update={
                "status": "incomplete", "score": 0.0, "error": "the grader failed in 1 test(s) (affine_forward)"})
        return standin_grade(problem_id, files, s, entry)

    codes = ("sandbox", "bug", "error-report", "fine", "incomplete once", "incomplete always")
    ids = [new_submission(store, settings, code) for code in codes]
    pool = build_pool(store, settings, grade=grade)
    pool.start()
    try:
        rows = [wait_done(store, sid) for sid in ids]
    finally:
        pool.stop()
    assert [r.status for r in rows] == ["failed", "failed", "failed", "done", "done", "failed"]
    assert rows[0].error == "bubblewrap cannot create namespaces here"
    # a crash of the grader is graded again, up to job_max_attempts, then failed with the reason
    assert calls["bug"] == settings.job_max_attempts == rows[1].attempts
    assert rows[1].error is not None and "internal grader error (RuntimeError)" in rows[1].error
    assert rows[2].error == "reference crashed" and reports(store, ids[2]) == 1  # kept for the interviewers
    # an incomplete report is never stored as the candidate's score: graded again, and the complete one counts
    assert calls["incomplete once"] == 2 and rows[4].attempts == 2 and rows[4].error is None
    assert rows[4].score == standin_grade("mlp", {"solution.py": "incomplete once"}, settings, "solution.py").score
    assert calls["incomplete always"] == settings.job_max_attempts
    assert "failed 3 time(s)" in (rows[5].error or "") and rows[5].score is None
    assert [reports(store, sid) for sid in ids] == [0, 0, 1, 1, 1, 0]


def test_concurrency_limit_from_settings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, workers=2)
    store = open_store(settings)
    lock, running, peak = threading.Lock(), [0], [0]

    def grade(*args: object) -> Report:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return standin_grade(*args)  # type: ignore[arg-type]

    ids = [new_submission(store, settings) for _ in range(5)]
    pool = build_pool(store, settings, grade=grade)
    pool.start()
    try:
        for sid in ids:
            assert wait_done(store, sid).status == "done"
    finally:
        pool.stop()
    assert peak[0] == 2


def test_many_workers_claim_each_job_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, workers=4)
    store = open_store(settings)
    calls: list[str] = []
    lock = threading.Lock()

    def grade(problem_id: str, files: dict[str, str], s: Settings, entry: str) -> Report:
        with lock:
            calls.append(files["solution.py"])
        return standin_grade(problem_id, files, s, entry)

    ids = [new_submission(store, settings, f"# {i}\n") for i in range(20)]
    pools = [build_pool(store, settings, grade=grade) for _ in range(2)]  # two pools on one database
    for p in pools:
        p.start()
    try:
        for sid in ids:
            wait_done(store, sid)
    finally:
        for p in pools:
            p.stop()
    assert sorted(calls) == sorted(f"# {i}\n" for i in range(20))
    assert all(reports(store, sid) == 1 for sid in ids)


def test_lease_is_renewed_while_grading(tmp_path: Path, gate: threading.Event) -> None:
    settings = make_settings(tmp_path, job_lease_s=0.4)
    store = open_store(settings)

    def grade(*args: object) -> Report:
        gate.wait(10)
        return standin_grade(*args)  # type: ignore[arg-type]

    sid = new_submission(store, settings)
    pool = build_pool(store, settings, grade=grade)
    pool.start()
    try:
        time.sleep(1.2)  # three leases long: without renewal a sweep would have requeued it
        assert queue_of(store, owner_id("sweeper")).recover() == (0, 0)
        with store.session() as db:
            row = db.get(Submission, sid)
            assert row is not None and row.status == "running" and row.attempts == 1
            assert row.lease_expires_at is not None and row.lease_expires_at > utcnow()
        gate.set()
        assert wait_done(store, sid).attempts == 1
    finally:
        gate.set()
        pool.stop()


def test_a_worker_that_fails_to_store_its_result_loses_nothing(store: Store, settings: Settings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real_complete = DatabaseQueue.complete
    failures = [0]
    sid = new_submission(store, settings)

    def flaky_complete(self: DatabaseQueue, job: Job, report: Report) -> bool:
        if job.submission_id == sid and failures[0] == 0:
            failures[0] += 1
            raise OSError("disk full")  # as if the database write failed after grading
        return real_complete(self, job, report)

    monkeypatch.setattr(DatabaseQueue, "complete", flaky_complete)
    later = new_submission(store, settings, "relu_forward\n")
    pool = build_pool(store, settings, grade=standin_grade)
    started = time.monotonic()
    pool.start()
    try:
        row = wait_done(store, sid, timeout_s=settings.job_lease_s * 4 + 5)
        assert wait_done(store, later).status == "done"  # the worker lived on
    finally:
        pool.stop()
    assert failures[0] == 1 and row.status == "done" and row.attempts == 2 and reports(store, sid) == 1
    # Taken back only once its lease ran out, not while the first attempt could still be finishing.
    assert time.monotonic() - started >= settings.job_lease_s


@pytest.mark.slow
def test_a_lone_surrogate_from_the_sandbox_is_graded_once_and_done(store: Store, settings: Settings) -> None:
    """An exception message with a lone surrogate made the report unserializable: the service graded it three
    times and marked it failed. Real grading, real sandbox: one attempt, done, one report."""
    from tests.conftest import ROOT

    code = (ROOT / "reference" / "mlp.py").read_text() + \
        '\n\ndef relu_forward(x):\n    raise ValueError("bad \\ud800 value")\n'
    sid = new_submission(store, settings, code)
    pool = build_pool(store, settings)
    pool.start()
    try:
        row = wait_done(store, sid, timeout_s=180)
    finally:
        pool.stop()
    assert (row.status, row.attempts, reports(store, sid)) == ("done", 1, 1), row.error
    with store.session() as db:
        stored = db.scalar(select(ReportRow.report_json).where(ReportRow.submission_id == sid))
    relu = next(t for t in Report.model_validate_json(stored).tests if t.id == "relu_forward")
    assert relu.status == "error" and "bad \ufffd value" in relu.message
