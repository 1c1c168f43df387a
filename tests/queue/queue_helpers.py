"""Helpers of the queue tests: a SQLite file store, submissions made as the API makes them, a stand-in grader."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from grader.config import Settings
from grader.engine.catalog import get_problem
from grader.engine.report import Environment, ProblemRef, Report, TestResult
from grader.service import submissions as subs
from grader.service.auth import SYSTEM
from grader.service.schemas import SubmissionCreate
from grader.store.db import Store
from grader.store.models import AuditEvent, ReportRow, Submission, utcnow


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = dict(data_dir=data_dir, workers=1, job_lease_s=60.0, job_max_attempts=3)
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


def new_submission(store: Store, settings: Settings, code: str = "affine_forward\n") -> str:
    created, _ = subs.create_submission(store, settings, SYSTEM, SubmissionCreate(problem="mlp", code=code))
    return created.id


def standin_grade(problem_id: str, files: dict[str, str], settings: Settings, entry: str) -> Report:
    """A report from the real catalog without a sandbox: test `t` passes when the code names `t.id`."""
    problem = get_problem(problem_id)
    code = "\n".join(files.values())
    if "CRASH" in code:
        raise RuntimeError("a bug in the grader")
    tests = [TestResult(id=t.id, name=t.name, category=t.category, points=t.points,
                        earned=t.points if t.id in code else 0.0, status="passed" if t.id in code else "failed",
                        message="")
             for t in problem.tests]
    return Report(problem=ProblemRef(id=problem.id, version=problem.version), status="graded",
                  score=sum(t.earned for t in tests), max_score=problem.max_score, tests=tests,
                  environment=Environment(grader_version="test", seed=settings.seed, sandbox_backend="none"))


def row(store: Store, sid: str) -> Submission:
    with store.session() as db:
        found = db.get(Submission, sid, populate_existing=True)
        assert found is not None
        return found


def set_row(store: Store, sid: str, **values: object) -> None:
    with store.session() as db:
        found = db.get(Submission, sid)
        assert found is not None
        for key, value in values.items():
            setattr(found, key, value)


def reports(store: Store, sid: str) -> int:
    with store.session() as db:
        return db.scalar(select(func.count()).select_from(ReportRow).where(ReportRow.submission_id == sid)) or 0


def actions(store: Store, sid: str) -> list[str]:
    with store.session() as db:
        return list(db.scalars(select(AuditEvent.action).where(AuditEvent.submission_id == sid)
                               .order_by(AuditEvent.id)))


def dead_owner() -> str:
    """The owner id of a process on this host that has exited."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return f"{socket.gethostname()}:{p.pid}:deadbeef"


def live_foreign_owner() -> str:
    """The owner id of a worker on another machine: only its lease can say it is gone."""
    return "another-host.example:4242:cafe0001"


def in_s(seconds: float):  # type: ignore[no-untyped-def]
    return utcnow() + timedelta(seconds=seconds)
