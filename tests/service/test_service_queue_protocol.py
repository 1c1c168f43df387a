"""The queue is a protocol: the pool grades from any implementation, and the queue knows nothing of the product."""

from __future__ import annotations

import ast
import threading
from collections.abc import Collection
from pathlib import Path

from conftest import make_settings, standin_grade

from grader.engine.report import Report
from grader.errors import SandboxUnavailable
from grader.queue.base import FailResult, Job, Outcome, Queue
from grader.queue.database import DatabaseQueue
from grader.queue.pool import WorkerPool
from grader.store.db import open_store

ROOT = Path(__file__).resolve().parents[2]


class ListQueue:
    """An in-memory queue: what a second implementation has to provide, and nothing more."""

    def __init__(self, codes: list[str], max_attempts: int = 2) -> None:
        self.waiting = [Job(submission_id=f"s{i}", problem_id="mlp", files={"solution.py": c}, entry="solution.py",
                            attempt=0) for i, c in enumerate(codes)]
        self.max_attempts = max_attempts
        self.ended: dict[str, str] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.total = len(codes)

    def claim(self) -> Job | None:
        with self.lock:
            if not self.waiting:
                return None
            job = self.waiting.pop(0)
            return Job(**{**job.__dict__, "attempt": job.attempt + 1})

    def renew(self, jobs: Collection[Job]) -> int:
        return len(jobs)

    def _end(self, job: Job, how: str) -> None:
        self.ended[job.submission_id] = how
        if len(self.ended) == self.total:
            self.done.set()

    def complete(self, job: Job, report: Report) -> bool:
        with self.lock:
            self._end(job, f"report {report.score:g}")
        return True

    def fail(self, job: Job, reason: str, *, retry: bool) -> FailResult:
        with self.lock:
            if retry and job.attempt < self.max_attempts:
                self.waiting.append(job)
                return "requeued"
            self._end(job, f"failed: {reason}")
            return "failed"

    def recover(self) -> tuple[int, int]:
        return 0, 0


def test_the_pool_grades_from_any_queue_and_reports_outcomes() -> None:
    settings = make_settings(Path("unused"))

    def grade(problem_id: str, files: dict[str, str], entry: str) -> Report:
        code = files[entry]
        if code == "no sandbox":
            raise SandboxUnavailable("bubblewrap is missing")
        if code == "bug":
            raise RuntimeError("plan bug")
        return standin_grade(problem_id, files, settings, entry)

    queue = ListQueue(["affine_forward", "no sandbox", "bug"])
    outcomes: list[Outcome] = []
    pool = WorkerPool(queue, grade, workers=2, lease_s=60, on_outcome=outcomes.append)
    pool.start()
    try:
        assert queue.done.wait(10)
    finally:
        pool.stop()
    assert queue.ended["s0"] == "report 8"
    assert queue.ended["s1"] == "failed: bubblewrap is missing"
    assert queue.ended["s2"].startswith("failed: internal grader error (RuntimeError)")
    assert sorted(o.kind for o in outcomes) == ["failed", "failed", "graded", "requeued"]
    assert all(o.duration_s is not None for o in outcomes)


def test_the_database_queue_fits_the_protocol(tmp_path: Path) -> None:
    store = open_store(make_settings(tmp_path))
    queue: Queue = DatabaseQueue(store, owner="me", lease_s=60, max_attempts=3)  # mypy checks the fit
    assert queue.claim() is None and queue.renew([]) == 0 and queue.recover() == (0, 0)
    for name in ("claim", "renew", "complete", "fail", "recover"):
        assert callable(getattr(ListQueue, name)) and callable(getattr(DatabaseQueue, name))


def _imports(*paths: Path) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    return found


def test_the_queue_imports_neither_the_service_nor_the_api() -> None:
    queue = ROOT / "grader" / "queue"
    imported = _imports(*queue.rglob("*.py"))
    assert not [m for m in imported if m.startswith(("grader.service", "grader.api", "grader.cli"))], imported
    # The protocol and the pool stay free of storage types, for implementations without a database.
    assert not [m for m in _imports(queue / "base.py", queue / "pool.py")
                if m.startswith(("sqlalchemy", "grader.store"))]
