"""The Celery queue without a broker: settings, the app's delivery options, the task's logic, the sweeper.

The task runs in Celery's eager mode or as its function, on a SQLite file store with a stand-in grader; the
end-to-end behaviour on real redis-server and PostgreSQL is tests/cluster's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from queue_helpers import (
    actions,
    dead_owner,
    in_s,
    live_foreign_owner,
    make_settings,
    new_submission,
    reports,
    row,
    set_row,
    standin_grade,
)

from grader.config import Settings
from grader.queue.broker import FRESH_GRACE_S, due_for_publish, publish_and_mark, sweep
from grader.queue.database import owner_id
from grader.service import cluster
from grader.service.grading import open_queue
from grader.store.db import Store
from grader.store.models import utcnow

DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once


@pytest.fixture
def worker(settings: Settings, store: Store) -> Iterator[cluster.WorkerRuntime]:
    cluster.configure_worker(settings, grade=standin_grade)
    runtime = cluster.worker_runtime()
    yield runtime
    runtime.leases.stop()
    runtime.store.close()
    cluster.configure_worker(settings)


# ---------------------------------------------------------------------------------------------- settings


def test_celery_needs_a_redis_broker_url(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="GRADER_QUEUE=celery needs GRADER_BROKER_URL"):
        make_settings(tmp_path, queue="celery")
    with pytest.raises(ValidationError, match="must be redis://"):
        make_settings(tmp_path, queue="celery", broker_url="amqp://guest:secret@rabbit/")
    with pytest.raises(ValidationError, match="not a URL"):
        make_settings(tmp_path, queue="celery", broker_url="redis://host:port/0")
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT_S.*longer than a grading"):
        make_settings(tmp_path, queue="celery", broker_url="redis://h/0", broker_visibility_timeout_s=60)
    ok = make_settings(tmp_path, queue="celery", broker_url="redis://:pw@h:6379/0")
    assert ok.broker_visibility_timeout_s > ok.submission_budget_s
    assert make_settings(tmp_path).queue == "embedded"  # the default needs no broker
    with pytest.raises(ValidationError):
        make_settings(tmp_path, queue="rabbit")


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {"GRADER_QUEUE": "celery", "GRADER_BROKER_URL": "redis://r:6380/2",
                        "GRADER_WORKER_CONCURRENCY": "3", "GRADER_REDELIVER_AFTER_S": "7.5",
                        "GRADER_BROKER_VISIBILITY_TIMEOUT_S": "7200"}.items():
        monkeypatch.setenv(name, value)
    s = Settings(data_dir=tmp_path)
    assert (s.queue, s.broker_url, s.worker_concurrency, s.redeliver_after_s, s.broker_visibility_timeout_s) == (
        "celery", "redis://r:6380/2", 3, 7.5, 7200.0)


def test_a_bad_broker_url_is_a_usage_error_without_a_trace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from grader.cli import main

    monkeypatch.setenv("GRADER_QUEUE", "celery")
    monkeypatch.setenv("GRADER_BROKER_URL", "http://user:hunter2@example.com/")
    for argv in (["worker", "--data-dir", str(tmp_path)], ["worker", "--health", "--data-dir", str(tmp_path)],
                 ["serve", "--workers", "0", "--data-dir", str(tmp_path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "GRADER_BROKER_URL must be redis://" in err and "Traceback" not in err
        assert "hunter2" not in err
    monkeypatch.delenv("GRADER_BROKER_URL")
    assert main(["worker", "--data-dir", str(tmp_path)]) == 2
    assert "needs GRADER_BROKER_URL" in capsys.readouterr().err


def test_a_worker_whose_broker_is_down_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from grader.api import commands
    from grader.cli import main

    monkeypatch.setenv("GRADER_QUEUE", "celery")
    monkeypatch.setenv("GRADER_BROKER_URL", DEAD_BROKER)
    monkeypatch.setattr(commands, "BROKER_WAIT_S", 0.0)
    assert main(["worker", "--data-dir", str(tmp_path)]) == 3
    assert "the broker does not answer" in capsys.readouterr().err
    assert main(["worker", "--health", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unhealthy: broker redis://127.0.0.1:1/0: error" in err


def test_an_embedded_worker_health_probes_the_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from grader.cli import main

    monkeypatch.delenv("GRADER_QUEUE", raising=False)
    assert main(["worker", "--health", "--data-dir", str(tmp_path)]) == 0
    monkeypatch.setenv("GRADER_DATABASE_URL", "postgresql+psycopg://grader:secret@127.0.0.1:1/grader")
    assert main(["worker", "--health", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unhealthy: database: OperationalError" in err and "Traceback" not in err


def test_migrate_applies_the_migrations_and_exits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import inspect

    from grader.cli import main
    from grader.store.db import Store

    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    assert "schema is up to date" in capsys.readouterr().out
    store = Store(make_settings(tmp_path).sqlalchemy_url)
    try:
        assert "published_at" in {c["name"] for c in inspect(store.engine).get_columns("submissions")}
    finally:
        store.close()
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0  # again: a no-op


# ---------------------------------------------------------------------------------------------- the app


def test_the_celery_app_acks_late_speaks_json_only_and_uses_one_queue(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, queue="celery", broker_url="redis://127.0.0.1:6399/0")
    app = cluster.make_celery(settings)
    conf = app.conf
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == settings.broker_visibility_timeout_s == 3600
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert "pickle" not in json.dumps(list(conf.accept_content))
    assert [q.name for q in conf.task_queues] == [cluster.QUEUE_NAME] == [conf.task_default_queue]
    task = app.tasks[cluster.TASK_NAME]
    assert task.acks_late is True and task.max_retries is None


# ---------------------------------------------------------------------------------------------- the task


def test_the_task_grades_once_and_drops_duplicates(worker: cluster.WorkerRuntime, store: Store,
                                                   settings: Settings) -> None:
    sid = new_submission(store, settings, "affine_forward\nrelu_forward\n")
    assert cluster.grade_submission(worker, sid) == "graded"
    r = row(store, sid)
    assert r.status == "done" and r.attempts == 1 and r.score is not None and r.score > 0
    assert actions(store, sid) == ["submission.created", "submission.graded"]  # the listener ran
    assert cluster.grade_submission(worker, sid) == "duplicate"
    assert cluster.grade_submission(worker, "no-such-id") == "duplicate"
    assert reports(store, sid) == 1 and row(store, sid).attempts == 1


def test_the_task_in_eager_mode(worker: cluster.WorkerRuntime, store: Store, settings: Settings) -> None:
    app = cluster.make_celery(settings.model_copy(update={"queue": "celery", "broker_url": DEAD_BROKER}))
    app.conf.task_always_eager = True
    sid = new_submission(store, settings)
    assert app.tasks[cluster.TASK_NAME].apply(args=[sid]).get() == "graded"
    assert app.tasks[cluster.TASK_NAME].apply(args=[sid]).get() == "duplicate"
    assert reports(store, sid) == 1


class Retry(Exception):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kwargs)
        self.kwargs = kwargs


def run_task(settings: Settings, monkeypatch: pytest.MonkeyPatch, sid: str) -> Any:
    """The task's function on its task instance, with `retry` recorded instead of sent to a broker."""
    app = cluster.make_celery(settings.model_copy(update={"queue": "celery", "broker_url": DEAD_BROKER}))
    task = app.tasks[cluster.TASK_NAME]
    monkeypatch.setattr(task, "retry", lambda **kwargs: Retry(**kwargs))
    return task.run(sid)


def test_a_job_held_by_a_live_worker_is_retried_when_its_lease_may_have_lapsed(
        worker: cluster.WorkerRuntime, store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = new_submission(store, settings)
    set_row(store, sid, status="running", owner=live_foreign_owner(), attempts=1, lease_expires_at=in_s(30))
    assert cluster.grade_submission(worker, sid) == "later"
    with pytest.raises(Retry) as raised:
        run_task(settings, monkeypatch, sid)
    assert raised.value.kwargs["countdown"] == settings.job_lease_s
    set_row(store, sid, lease_expires_at=in_s(-1))  # the holder stopped renewing: taken back
    assert run_task(settings, monkeypatch, sid) == "graded"
    r = row(store, sid)
    assert (r.status, r.attempts) == ("done", 2)
    assert actions(store, sid) == ["submission.created", "job.requeued", "submission.graded"]


def test_a_grader_crash_is_requeued_and_retried_then_failed_with_the_reason(
        worker: cluster.WorkerRuntime, store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = new_submission(store, settings, "CRASH\n")
    for attempt in (1, 2):
        with pytest.raises(Retry) as raised:
            run_task(settings, monkeypatch, sid)
        assert raised.value.kwargs["countdown"] == cluster.REQUEUED_COUNTDOWN_S
        r = row(store, sid)
        assert (r.status, r.attempts, r.published_at) == ("queued", attempt, None)
    assert run_task(settings, monkeypatch, sid) == "failed"
    r = row(store, sid)
    assert r.status == "failed" and r.attempts == 3 and r.error is not None
    assert "failed 3 time(s)" in r.error and "RuntimeError" in r.error
    assert reports(store, sid) == 0


def test_a_job_that_kills_its_worker_three_times_ends_failed(worker: cluster.WorkerRuntime, store: Store,
                                                             settings: Settings) -> None:
    sid = new_submission(store, settings)
    for attempt in (1, 2, 3):  # a grading child SIGKILLed: its row running under a dead pid of this host
        job = open_queue(store, settings, dead_owner()).claim_submission(sid)
        assert not isinstance(job, str) and job is not None and job.attempt == attempt
    assert cluster.grade_submission(worker, sid) == "duplicate"  # the redelivered message ends it
    r = row(store, sid)
    assert r.status == "failed" and r.error is not None and "interrupted 3 times" in r.error
    assert reports(store, sid) == 0 and actions(store, sid)[-1] == "submission.failed"


def test_the_runtime_is_per_process(worker: cluster.WorkerRuntime) -> None:
    assert worker.pid == os.getpid() and cluster.worker_runtime() is worker
    assert worker.queue.owner.split(":")[1] == str(os.getpid())
    assert worker.leases.thread is not None and worker.leases.thread.is_alive()


# ---------------------------------------------------------------------------------------------- the sweeper


def test_the_republish_query(store: Store, settings: Settings) -> None:
    now = utcnow()
    fresh = new_submission(store, settings)  # its request is publishing it right now
    unpublished = new_submission(store, settings)
    set_row(store, unpublished, created_at=now - timedelta(seconds=FRESH_GRACE_S + 5))
    recent = new_submission(store, settings)
    set_row(store, recent, created_at=now - timedelta(hours=1), published_at=now - timedelta(seconds=10))
    lost = new_submission(store, settings)
    set_row(store, lost, created_at=now - timedelta(hours=1), published_at=now - timedelta(seconds=400))
    running = new_submission(store, settings)
    set_row(store, running, status="running", created_at=now - timedelta(hours=1), owner=owner_id("x"),
            attempts=1, lease_expires_at=in_s(60))
    done = new_submission(store, settings)
    set_row(store, done, status="done", created_at=now - timedelta(hours=1))
    assert due_for_publish(store, 300) == [lost, unpublished]  # oldest first
    assert set(due_for_publish(store, 5)) == {recent, unpublished, lost}
    assert fresh not in due_for_publish(store, 0.001)


def test_a_sweep_takes_back_expired_leases_and_republishes_what_may_be_lost(store: Store,
                                                                            settings: Settings) -> None:
    queue = open_queue(store, settings, owner_id("sweeper"))
    old = utcnow() - timedelta(hours=1)
    queued = new_submission(store, settings)
    set_row(store, queued, created_at=old)
    orphan = new_submission(store, settings)
    set_row(store, orphan, status="running", created_at=old, owner=live_foreign_owner(), attempts=1,
            lease_expires_at=in_s(-1), published_at=old)
    held = new_submission(store, settings)
    set_row(store, held, status="running", created_at=old, owner=live_foreign_owner(), attempts=1,
            lease_expires_at=in_s(60))
    published: list[str] = []
    assert sweep(store, queue, published.append, 300) == (1, 2)
    assert sorted(published) == sorted([queued, orphan])
    assert row(store, orphan).status == "queued" and row(store, held).status == "running"
    assert all(row(store, sid).published_at is not None for sid in (queued, orphan))
    published.clear()
    assert sweep(store, queue, published.append, 300) == (0, 0)  # nothing is published twice in a row
    assert published == []


def test_a_broker_that_is_down_leaves_the_submission_for_the_sweeper(store: Store, settings: Settings) -> None:
    sid = new_submission(store, settings)

    def down(submission_id: str) -> None:
        raise ConnectionRefusedError("broker down")

    assert publish_and_mark(store, down, sid) is False
    assert row(store, sid).published_at is None
    set_row(store, sid, created_at=utcnow() - timedelta(minutes=1))
    assert sweep(store, open_queue(store, settings), down, 300) == (0, 0)
    assert due_for_publish(store, 300) == [sid]


def test_the_api_accepts_a_submission_while_the_broker_is_down(tmp_path: Path) -> None:
    from grader.api.app import create_app
    from grader.service.auth import create_token

    settings = make_settings(tmp_path / "api", queue="celery", broker_url=DEAD_BROKER)
    app = create_app(settings, grade=standin_grade)
    token = create_token(app.state.store, "submitter", "ci").token
    with TestClient(app) as client:
        r = client.post("/v1/submissions", json={"problem": "mlp", "code": "affine_forward\n"},
                        headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        assert row(app.state.store, sid).status == "queued"
        assert row(app.state.store, sid).published_at is None  # the sweeper publishes it when the broker is back
        health = client.get("/healthz")
        assert health.status_code == 503
        queue = health.json()["queue"]
        assert queue["backend"] == "celery" and queue["broker"].startswith("error: ")
        assert queue["depth"] == 1 and queue["workers_alive"] == 0
        assert "grader_workers_alive 0" in client.get("/metrics").text


def test_the_embedded_health_counts_the_pool(tmp_path: Path) -> None:
    from grader.api.app import create_app

    for workers, alive in ((2, 2), (0, 0)):
        app = create_app(make_settings(tmp_path / f"w{workers}", workers=workers), grade=standin_grade)
        with TestClient(app) as client:
            body = client.get("/healthz").json()
            assert body["status"] == "ok"
            assert body["queue"] == {"backend": "embedded", "depth": 0, "broker": "ok", "workers_alive": alive}
            assert body["workers_running"] is (workers > 0)
            assert f"grader_workers_alive {alive}" in client.get("/metrics").text


def test_the_lease_is_renewed_while_the_task_grades(tmp_path: Path) -> None:
    from grader.store.db import open_store

    settings = make_settings(tmp_path / "lease", job_lease_s=0.8)  # the keeper beats every 0.2 s
    store = open_store(settings)
    seen: list[object] = []

    def slow_grade(problem_id: str, files: dict[str, str], s: Settings, entry: str) -> Any:
        import time

        for _ in range(6):  # 1.8 s: more than two leases
            time.sleep(0.3)
            seen.append(row(store, sid).lease_expires_at)
        assert open_queue(store, settings, owner_id("rival")).claim_submission(sid) == "later"
        return standin_grade(problem_id, files, s, entry)

    sid = new_submission(store, settings)
    cluster.configure_worker(settings, grade=slow_grade)
    runtime = cluster.worker_runtime()
    try:
        assert cluster.grade_submission(runtime, sid) == "graded"
    finally:
        runtime.leases.stop()
        runtime.store.close()
        cluster.configure_worker(settings)
    assert len(set(seen)) >= 4  # renewed again and again, so no rival could take it over
    assert row(store, sid).attempts == 1 and reports(store, sid) == 1
    store.close()


def test_start_up_lines_never_show_a_password(tmp_path: Path) -> None:
    from grader.api.commands import _where
    from grader.config import broker_display

    assert broker_display("redis://user:hunter2@broker.internal:6380/1") == "redis://broker.internal:6380/1"
    assert broker_display("rediss://:hunter2@broker.internal/0") == "rediss://broker.internal/0"
    pg = make_settings(tmp_path, database_url="postgresql+psycopg://grader:hunter2@db.internal:5432/grader")
    assert _where(pg) == "database postgresql on db.internal/grader"
    assert _where(make_settings(tmp_path)).startswith("SQLite in ")
