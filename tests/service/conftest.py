"""Fixtures for the service tests: settings on a temp data dir, an app with a stand-in grade function, tokens.

The stand-in grades from the real catalog without a sandbox: a test passes when
the submitted code mentions its id. The real engine is exercised by the
end-to-end tests in test_service_server.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from grader.api.app import create_app
from grader.config import Settings
from grader.engine.catalog import get_problem
from grader.engine.report import Environment, ProblemRef, Report, TestResult
from grader.service.auth import create_token
from grader.store.db import Store


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    # The webhook receivers of these tests listen on loopback, which the service refuses by default.
    base: dict[str, object] = dict(data_dir=data_dir, workers=2, webhook_backoff_s=0.05, webhook_timeout_s=2.0,
                                   job_lease_s=2.0, webhook_allowed_networks=["127.0.0.0/8"])
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


def standin_grade(problem_id: str, files: dict[str, str], settings: Settings, entry: str) -> Report:
    """A report from the real catalog: test `t` passes when the code contains `t.id`; the last test is hidden."""
    problem = get_problem(problem_id)
    code = "\n".join(files.values())
    tests = []
    for i, spec in enumerate(problem.tests):
        ok = spec.id in code
        tests.append(TestResult(id=spec.id, name=spec.name, category=spec.category, points=spec.points,
                                earned=spec.points if ok else 0.0, status="passed" if ok else "failed",
                                message="" if ok else f"{spec.id}: wrong values <script>alert(1)</script>",
                                counterexample=None if ok else "x = [[1.0, 2.0]]",
                                hidden=i == len(problem.tests) - 1,
                                details={} if ok else {"secret": "hidden input"}))
    return Report(problem=ProblemRef(id=problem.id, version=problem.version), status="graded",
                  score=sum(t.earned for t in tests), max_score=problem.max_score, tests=tests,
                  environment=Environment(grader_version="test", seed=settings.seed, sandbox_backend="none"))


class Tokens:
    def __init__(self, store: Store) -> None:
        self.admin = create_token(store, "admin", "root").token
        self.interviewer = create_token(store, "interviewer", "ivy").token
        self.submitter = create_token(store, "submitter", "ci-a").token
        self.other_submitter = create_token(store, "submitter", "ci-b").token

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def grade() -> Callable[..., Report]:
    return standin_grade


@pytest.fixture
def client(settings: Settings, grade: Callable[..., Report]) -> Iterator[TestClient]:
    app = create_app(settings, grade=grade)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def tokens(client: TestClient) -> Tokens:
    return Tokens(client.app.state.store)  # type: ignore[attr-defined]


def wait_for_status(client: TestClient, sid: str, token: str, statuses: tuple[str, ...] = ("done", "failed"),
                    timeout_s: float = 20.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/v1/submissions/{sid}", headers=Tokens.auth(token)).json()
        if body["status"] in statuses:
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"submission {sid} still {body['status']} after {timeout_s} s"
        time.sleep(0.05)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event a blocking stand-in waits on, always released at teardown."""
    event = threading.Event()
    yield event
    event.set()
