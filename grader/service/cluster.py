"""The queue across machines (GRADER_QUEUE=celery): Celery on Redis carries "grade submission <id>" messages.

The database stays the source of truth: a submission row is its job, claimed with a
compare-and-set (`DatabaseQueue.claim_submission`), held with a lease renewed while it is
graded, fenced by its attempt counter, and failed with the reason after `job_max_attempts`.
A message is only a nudge: it may be lost (the sweeper publishes the row again) or
duplicated (the claim drops it), and neither costs a grading or stores a second report.

Delivery: `task_acks_late` acknowledges a message only after its grading ended, and
`task_reject_on_worker_lost` gives back the message of a grading child that died (a
SIGKILL, an OOM kill): it is redelivered at once, the claim sees the dead owner and
takes the row back, counting an attempt. A message whose whole worker machine vanished is
redelivered by Redis after the visibility timeout, and before that the sweeper takes the
row back when its lease expires and publishes it again.

Each worker process keeps a heartbeat key in Redis (`grader:worker:<host>:<pid>`) for
/healthz, /metrics and `grader worker --health`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from grader import logs
from grader.config import Settings, broker_display
from grader.engine.report import Report
from grader.queue.broker import Publish, Sweeper, publish_and_mark
from grader.queue.database import DatabaseQueue, owner_id
from grader.queue.pool import LeaseKeeper, run_job
from grader.service.grading import QueueHealth, ServiceGradeFn, engine_grade, open_queue
from grader.store.db import Store, database_problem, open_store

if TYPE_CHECKING:
    from celery import Celery
    from redis import Redis

log = logging.getLogger(__name__)

QUEUE_NAME = "grader"
TASK_NAME = "grader.grade"
HEARTBEAT_PREFIX = "grader:worker:"
HEARTBEAT_S = 10.0
HEARTBEAT_TTL_S = 3 * HEARTBEAT_S
REQUEUED_COUNTDOWN_S = 1.0
BROKER_TIMEOUT_S = 3.0

TaskResult = Literal["graded", "failed", "requeued", "stale", "lost", "duplicate", "later"]


def make_celery(settings: Settings) -> Celery:
    """The Celery app of these settings: JSON messages only, one queue, late acks, one message prefetched."""
    from celery import Celery
    from kombu.entity import Queue as KombuQueue

    app = Celery("grader", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # a message is acknowledged after its grading, so a lost worker's is redelivered
        task_reject_on_worker_lost=True,  # a grading child killed by a signal: its message goes back at once
        worker_prefetch_multiplier=1,  # a worker holds only the messages it grades
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_s,
                                  "socket_connect_timeout": BROKER_TIMEOUT_S},
        broker_connection_timeout=BROKER_TIMEOUT_S,
        broker_connection_retry_on_startup=True,
        task_serializer="json", result_serializer="json", accept_content=["json"],  # never pickle
        task_ignore_result=True, result_backend=None,
        task_default_queue=QUEUE_NAME, task_queues=(KombuQueue(QUEUE_NAME),),  # type: ignore[no-untyped-call]
        task_routes={TASK_NAME: {"queue": QUEUE_NAME}},
        worker_hijack_root_logger=False, worker_send_task_events=False,
    )

    # shared=False: the task belongs to this app only (a shared one would reach every app created later)
    @app.task(bind=True, name=TASK_NAME, max_retries=None, acks_late=True,  # type: ignore[untyped-decorator]
              shared=False)
    def grade(self: Any, submission_id: str) -> str:
        lease_s = settings.job_lease_s
        # The whole task names its submission: the claim, a duplicate dropped, a failure of the task itself.
        with logs.bind(submission_id=submission_id):
            try:
                runtime = worker_runtime()
                lease_s = runtime.settings.job_lease_s
                result = grade_submission(runtime, submission_id)
            except Exception as exc:  # the database is unreachable: ask again later, the row is untouched or leased
                log.exception("submission %s: grading task failed; retrying in %g s", submission_id, lease_s)
                raise self.retry(countdown=lease_s, exc=exc) from None
        if result == "later":
            raise self.retry(countdown=lease_s)
        if result == "requeued":
            raise self.retry(countdown=REQUEUED_COUNTDOWN_S)
        return result

    return app


def publisher(app: Celery, settings: Settings) -> Publish:
    """Publish "grade submission <id>" (raises when the broker does not take it).

    A ping first: a broker that is down answers it at once, where the publish itself would retry its
    connection for seconds, and a request must answer 202 promptly (the sweeper publishes it later).
    """
    client = _redis(settings)

    def publish(submission_id: str) -> None:
        client.ping()
        app.send_task(TASK_NAME, args=[submission_id], queue=QUEUE_NAME, retry=False)

    return publish


# ---------------------------------------------------------------------------------------------------------------
# The worker side: one runtime per process (created after the fork), the task's logic, the heartbeat.


@dataclass
class WorkerRuntime:
    """What a grading process needs: its own store connections, queue identity and lease keeper."""

    settings: Settings
    store: Store
    queue: DatabaseQueue
    leases: LeaseKeeper
    grade: ServiceGradeFn
    pid: int


_config: dict[str, Any] = {}
_runtimes: dict[int, WorkerRuntime] = {}
_runtime_lock = threading.Lock()


def configure_worker(settings: Settings, *, grade: ServiceGradeFn = engine_grade) -> None:
    """The settings and grade function this process's tasks use (set before the worker forks)."""
    _config.update(settings=settings, grade=grade)
    with _runtime_lock:
        _runtimes.clear()


def worker_runtime() -> WorkerRuntime:
    """This process's runtime, created on first use in each process: a forked child never shares its
    parent's database connections, lease thread or sandbox backend."""
    pid = os.getpid()
    with _runtime_lock:
        runtime = _runtimes.get(pid)
        if runtime is None:
            settings: Settings = _config.get("settings") or Settings()
            store = open_store(settings, migrate=False)
            queue = open_queue(store, settings, owner=owner_id(uuid.uuid4().hex[:8]))
            leases = LeaseKeeper(queue, settings.job_lease_s)
            leases.start()
            runtime = WorkerRuntime(settings, store, queue, leases, _config.get("grade", engine_grade), pid)
            _runtimes.clear()  # a parent's runtime, inherited through fork, is not ours
            _runtimes[pid] = runtime
        return runtime


def grade_submission(runtime: WorkerRuntime, submission_id: str) -> TaskResult:
    """The task's logic: claim the row, grade it with its lease kept alive, store the outcome (fenced).

    "duplicate": nothing to grade (done, failed or missing), the message is acknowledged and dropped;
    "later": another live worker holds it, ask again when its lease may have lapsed; "requeued": the
    grader failed and the row waits for another attempt; else the outcome of the grading.
    """
    claimed = runtime.queue.claim_submission(submission_id)
    if claimed is None:
        log.info("submission %s: already graded, failed or gone; duplicate message dropped", submission_id)
        return "duplicate"
    if claimed == "later":
        log.info("submission %s: held by another live worker; asking again in %g s", submission_id,
                 runtime.settings.job_lease_s)
        return "later"
    settings, grade = runtime.settings, runtime.grade

    def bound(problem_id: str, files: dict[str, str], entry: str) -> Report:
        return grade(problem_id, files, settings, entry)

    with runtime.leases.hold(claimed):  # run_job logs the grading's start and end
        return run_job(runtime.queue, bound, claimed).kind


def _redis(settings: Settings) -> Redis:
    from redis import Redis

    assert settings.broker_url is not None
    return Redis.from_url(settings.broker_url, socket_connect_timeout=BROKER_TIMEOUT_S,
                          socket_timeout=BROKER_TIMEOUT_S)


def heartbeat_key(host: str | None = None, pid: int | None = None) -> str:
    return f"{HEARTBEAT_PREFIX}{host or socket.gethostname()}:{pid or os.getpid()}"


class Heartbeat:
    """Keeps `grader:worker:<host>:<pid>` in Redis with a TTL of three beats, from a daemon thread."""

    def __init__(self, settings: Settings, *, concurrency: int, interval_s: float = HEARTBEAT_S) -> None:
        self.settings, self.concurrency, self.interval_s = settings, concurrency, interval_s
        self.key = heartbeat_key()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        value = json.dumps({"pid": os.getpid(), "concurrency": self.concurrency, "at": time.time()})
        _redis(self.settings).set(self.key, value, ex=int(3 * self.interval_s))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="grader-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as exc:
                log.warning("worker heartbeat failed: %s: %s", type(exc).__name__, exc)
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        try:
            _redis(self.settings).delete(self.key)
        except Exception:
            pass


def broker_status(settings: Settings) -> str:
    """"ok" when the broker answers a ping, else "error: <why>" (never the URL's password)."""
    try:
        _redis(settings).ping()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"


def live_workers(settings: Settings, host: str | None = None) -> int:
    """Heartbeat keys in Redis: all workers, or those of one host."""
    pattern = f"{HEARTBEAT_PREFIX}{host}:*" if host else f"{HEARTBEAT_PREFIX}*"
    return sum(1 for _ in _redis(settings).scan_iter(match=pattern, count=100))


def worker_health(settings: Settings) -> list[str]:
    """What is wrong for a worker on this host (empty when healthy): broker, database, a live heartbeat."""
    problems = []
    broker = broker_status(settings)
    if broker != "ok":
        problems.append(f"broker {broker_display(settings.broker_url)}: {broker}")
    database = database_problem(settings)
    if database:
        problems.append(database)
    if broker == "ok" and live_workers(settings, socket.gethostname()) == 0:
        problems.append(f"no worker heartbeat of host {socket.gethostname()} in the broker")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# The API side.


class CeleryDispatch:
    """Publishes accepted submissions to the broker, and sweeps: takes back expired leases, republishes
    queued rows whose message may be lost. This process grades nothing."""

    backend: Literal["embedded", "celery"] = "celery"

    def __init__(self, store: Store, settings: Settings, app: Celery | None = None) -> None:
        self.store, self.settings = store, settings
        self.app = app or make_celery(settings)
        self.publish = publisher(self.app, settings)
        self.sweeper = Sweeper(store, open_queue(store, settings), self.publish,
                               redeliver_after_s=settings.redeliver_after_s)

    def start(self) -> None:
        self.sweeper.start()

    def stop(self) -> None:
        self.sweeper.stop()

    def submitted(self, submission_id: str) -> None:
        publish_and_mark(self.store, self.publish, submission_id)

    def health(self) -> QueueHealth:
        broker = broker_status(self.settings)
        alive = 0
        if broker == "ok":
            try:
                alive = live_workers(self.settings)
            except Exception as exc:
                broker = f"error: {type(exc).__name__}: {str(exc)[:200]}"
        return QueueHealth(backend="celery", broker=broker, workers_alive=alive)


def run_celery_worker(settings: Settings, *, concurrency: int) -> int:
    """A Celery worker (prefork: a grading child killed by a signal is seen by the parent and its message
    rejected and redelivered) with a heartbeat and a sweeper in the parent; SIGTERM is Celery's warm
    shutdown (current gradings finish, or their messages go back). Returns the exit status."""
    from celery.signals import worker_process_init, worker_process_shutdown

    from grader.service.grading import release_sandbox

    configure_worker(settings)
    app = make_celery(settings)

    def _child_ready(**_: Any) -> None:
        # the parent's database connections are the parent's: forget them here without closing them
        store.engine.dispose(close=False)
        # the sandbox backend of this child, created after the fork (threads and connections never cross it)
        try:
            settings.sandbox()
        except Exception as exc:
            log.error("the sandbox backend %s does not start in worker process %d: %s",
                      settings.sandbox_backend, os.getpid(), exc)
        worker_runtime()

    def _child_exit(**_: Any) -> None:
        # a child ends with os._exit (no atexit): its sandbox backend removes its own warm containers here,
        # or they would outlive the worker until some sweep
        release_sandbox()

    store = open_store(settings, migrate=False)
    worker_process_init.connect(_child_ready, weak=False)
    worker_process_shutdown.connect(_child_exit, weak=False)
    heartbeat = Heartbeat(settings, concurrency=concurrency)
    sweeper = Sweeper(store, open_queue(store, settings), publisher(app, settings),
                      redeliver_after_s=settings.redeliver_after_s)
    heartbeat.start()
    sweeper.start()
    try:
        worker = app.Worker(concurrency=concurrency, pool="prefork", queues=[QUEUE_NAME], loglevel="INFO",
                            hostname=f"grader@{socket.gethostname()}:{os.getpid()}", without_gossip=True,
                            without_mingle=True, optimization="fair",
                            quiet=settings.log_format == "json")  # no multi-line text banner in a JSON log
        worker.start()
        return int(getattr(worker, "exitcode", 0) or 0)
    finally:
        sweeper.stop()
        heartbeat.stop()
        store.close()
