"""Real services for the cluster tests and the cluster benchmark: a throwaway Redis, PostgreSQL, the API and workers.

- `RedisServer`: `redis-server` on a free loopback port with a directory of its own and, by default, no
  persistence at all (`--save ''`, `--appendonly no`), so `restart()` really loses whatever the broker held.
- PostgreSQL: `tests/service/pg_cluster.py`'s `PgCluster` (one database per test module, `new_database()`).
- `Cluster`: `grader serve --workers 0` (the API alone, a `LiveServer`) and N `grader worker --concurrency 1`
  processes, each in a process group of its own, all with GRADER_QUEUE=celery on that broker and database.
- `Worker.pool_children()` / `grading_children()`: its prefork pool processes, and those grading now;
  `sandbox_processes(pid)`: what is left of the sandboxes a grading process started.

Nothing here skips: a missing program raises `MissingService` with what to install (the tests turn it into a
failure; `scripts/test.sh` installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.service.live_server import ROOT, LiveServer, alive, descendants, free_port
from tests.service.pg_cluster import MissingPostgres, PgCluster, start_cluster


class MissingService(RuntimeError):
    """A program the cluster needs is not installed; the message says what installs it."""


def children(pid: int) -> set[int]:
    """The direct children of `pid`, read from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(map(int, (task / "children").read_text().split()))
        except OSError:
            continue
    return found


def sandbox_processes(grader_pid: int) -> set[int]:
    """Live processes in a cgroup of a sandbox session or fork server that process `grader_pid` started
    (local backend: `s<pid>-...` and `z<pid>-...` under dl-grader), wherever they now are in the process tree."""
    mine = (f"/dl-grader/s{grader_pid}-", f"/dl-grader/z{grader_pid}-")
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(m in (proc / "cgroup").read_text() for m in mine):
                    found.add(int(proc.name))
            except OSError:
                continue
    return alive(found)


def find_redis_server() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        raise MissingService("redis-server is not installed (Debian: apt-get install redis-server; "
                             "scripts/test.sh installs it)")
    return Path(found)


def start_postgres() -> PgCluster:
    try:
        return start_cluster()
    except MissingPostgres as exc:
        raise MissingService(str(exc)) from None


def libpq_url(sqlalchemy_url: str) -> str:
    """PgCluster's SQLAlchemy URL as psycopg takes it (the same database, without the driver name)."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


class RedisServer:
    """`redis-server` on 127.0.0.1:<free port> in its own directory; in-memory only unless `persist`."""

    def __init__(self, root: Path | None = None, *, persist: bool = False) -> None:
        self.binary = find_redis_server()
        self.dir = root or Path(tempfile.mkdtemp(prefix="grader-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=2, socket_connect_timeout=2)

    def ping(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        """Start on this server's port (the same one again after `stop()`); returns when it answers PING."""
        durability = [] if self.persist else ["--save", "", "--appendonly", "no"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--daemonize", "no", "--protected-mode", "yes", *durability],
                cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer within {timeout_s} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM, as an operator's restart would (nothing is saved without `persist`)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill_9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port: without persistence, every message it held is gone."""
        self.stop()
        self.start()

    def waiting_messages(self) -> int:
        """Messages in the broker's lists (Celery's queues are Redis lists)."""
        c = self.client()
        return sum(int(c.llen(k)) for k in c.scan_iter(count=1000) if c.type(k) == b"list")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Worker:
    """One `grader worker --concurrency N` process, the leader of a process group of its own."""

    def __init__(self, index: int, env: dict[str, str], log_dir: Path, concurrency: int = 1) -> None:
        self.index, self.env, self.concurrency = index, env, concurrency
        self.log_path = log_dir / f"worker-{index}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"worker {self.index} is not running"
        return self.proc.pid

    def start(self) -> Worker:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "grader.cli", "worker", "--concurrency", str(self.concurrency)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sandboxes(self) -> set[int]:
        """Live sandbox-session processes below this worker: it is grading right now when there are any.

        A session's processes are in its own cgroups (dl-grader/s...), whether started by bwrap or forked by
        the image's fork server; the fork server itself (dl-grader/z...) stays up between sessions and is not
        a grading."""
        if not self.running():
            return set()
        found = set()
        for pid in alive(descendants(self.pid)):
            try:
                groups = Path(f"/proc/{pid}/cgroup").read_text()
            except OSError:
                continue
            if any(line.split(":", 2)[2].startswith("/dl-grader/s") for line in groups.splitlines()
                   if line.count(":") >= 2):
                found.add(pid)
        return found

    def pool_children(self) -> set[int]:
        """The worker's live prefork pool processes: its direct children that are forks of it (the same command
        line), not a sandbox's or a fork server's processes (those are in a dl-grader cgroup)."""
        if not self.running():
            return set()
        cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        found = set()
        for pid in alive(children(self.pid)):
            try:
                if (Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline
                        and "/dl-grader/" not in Path(f"/proc/{pid}/cgroup").read_text()):
                    found.add(pid)
            except OSError:
                continue
        return found

    def grading_children(self) -> set[int]:
        """The pool processes with a sandbox session below them: those grading right now."""
        sessions = self.sandboxes()
        return {pid for pid in self.pool_children() if descendants(pid) & sessions}

    def kill_9(self) -> None:
        """SIGKILL the whole process group (the worker, its pool children, the sandboxes they started)."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL to the group for whatever is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.proc = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Cluster:
    """The API alone (`grader serve --workers 0`) and `workers` Celery worker processes on one broker and store."""

    def __init__(self, root: Path, redis_url: str, database_url: str, *, workers: int = 2,
                 env: dict[str, str] | None = None, quick_recovery: bool = True) -> None:
        """`quick_recovery`: a lost message republished after 3 s and a dead worker's lease lapsing after 6 s,
        so the tests see recovery soon; without it, the settings' defaults (as the benchmark measures)."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        settings = {
            "GRADER_QUEUE": "celery",
            "GRADER_BROKER_URL": redis_url,
            "GRADER_DATABASE_URL": database_url,
            **({"GRADER_REDELIVER_AFTER_S": "3", "GRADER_JOB_LEASE_S": "6", "GRADER_JOB_MAX_ATTEMPTS": "3"}
               if quick_recovery else {}),
            **(env or {}),
        }
        self.api = LiveServer(root / "api", workers=0, env=settings, database_url=database_url)
        self.env = self.api.env  # the environment every process of the cluster gets
        self.workers = [Worker(i, self.env, root, concurrency=1) for i in range(workers)]

    @property
    def url(self) -> str:
        return self.api.url

    def cli(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "grader.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout_s)

    def token(self, role: str, name: str = "") -> str:
        return self.api.token(role, name)

    def start(self, timeout_s: float = 90.0) -> Cluster:
        migrated = self.cli("migrate")
        assert migrated.returncode == 0, f"grader migrate: {migrated.stderr}"
        for w in self.workers:
            w.start()
        self.api.start(timeout_s=timeout_s)
        self.wait_workers_alive(len(self.workers), timeout_s)
        return self

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/healthz", timeout=10).json()
        return body

    def wait_workers_alive(self, n: int, timeout_s: float = 90.0) -> dict[str, Any]:
        """Until /healthz counts `n` live workers; the last body."""
        deadline = time.monotonic() + timeout_s
        while True:
            for w in self.workers:
                if w.proc is not None:
                    assert w.proc.poll() is None or n == 0, f"worker {w.index} exited: {w.log_tail()}"
            body = self.health()
            if body.get("queue", {}).get("workers_alive") == n:
                return body
            assert time.monotonic() < deadline, f"/healthz never counted {n} live workers: {body}"
            time.sleep(0.25)

    def heartbeat(self, i: int) -> dict[str, Any] | None:
        """What worker `i` publishes in the broker for /healthz (pid, concurrency, time), None without a key."""
        import redis

        from grader.service.cluster import heartbeat_key

        with redis.Redis.from_url(self.env["GRADER_BROKER_URL"], socket_timeout=2,
                                  socket_connect_timeout=2) as client:
            value = client.get(heartbeat_key(pid=self.workers[i].pid))
        body: dict[str, Any] | None = json.loads(value) if value is not None else None
        return body

    def kill_9(self, i: int) -> None:
        self.workers[i].kill_9()

    def restart_worker(self, i: int) -> None:
        """Start worker `i` again (stopping it first if it still runs), as a supervisor would after a crash."""
        w = self.workers[i]
        w.stop()
        w.start()

    def holder(self, timeout_s: float = 60.0) -> int:
        """The index of the one worker that is grading right now (a sandbox below it)."""
        deadline = time.monotonic() + timeout_s
        while True:
            busy = [w.index for w in self.workers if w.sandboxes()]
            if len(busy) == 1:
                return busy[0]
            assert time.monotonic() < deadline, f"no single worker is grading: {busy}"
            time.sleep(0.05)

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows of a query on the cluster's PostgreSQL database, read directly (not through the API)."""
        import psycopg

        with psycopg.connect(libpq_url(self.database_url), autocommit=True) as conn:
            return list(conn.execute(query, params).fetchall())  # type: ignore[arg-type]

    def stop(self) -> None:
        for w in self.workers:
            try:
                w.stop(timeout_s=5)
            except Exception:  # teardown goes on: the API still has to stop
                pass
        self.api.stop()
