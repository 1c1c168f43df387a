"""The cluster deployment end to end: docker-compose.cluster.yml with the PostgreSQL, Redis and service images, the
API alone in one container, two worker containers (`--scale worker=2`) grading in Docker sandboxes, real HTTP.

Brings up its own compose project (`dlgrader-cluster-<pid>`) with random secrets, the API on a free host port
and PostgreSQL and Redis on ports the daemon picks (127.0.0.1 only), creates a submitter token inside the API
container, submits a correct and a wrong solution of the regularization exercise (fast, numpy only), and waits
for both reports with the expected scores (full marks, fewer than full) graded in the Docker sandbox. Then
/healthz shows the database, the Celery queue, its broker and the two live workers, and the compose health
checks of PostgreSQL, Redis, the API and both workers pass. `down -v` (volumes included) always runs at the end;
after it no sandbox container of the project's workers may remain.

Builds nothing: without docker-compose, a daemon or one of the images it fails with what to run
(scripts/setup-docker.sh --service --cluster, which scripts/test.sh runs); deselect it with -m 'not docker'. It
runs the images as built: after changing grader/, rebuild with scripts/build-images.sh --service. Timings are
printed (pytest -s to see them on success).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

# The timeout bounds the whole test, bring-up and `down -v` included.
pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(330)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.cluster.yml"
SERVICE_IMAGE = "dl-grader/service:latest"
# The services that stay up (migrate runs once), each with a compose health check.
LONG_RUNNING = ("postgres", "redis", "api", "worker")
IMAGES = (SERVICE_IMAGE, "dl-grader/postgres:15", "dl-grader/redis:7", "dl-grader/sandbox:numpy")
WORKERS = 2
SANDBOX_LABEL = "dl-grader.sandbox=1"
OWNER_LABEL = "dl-grader.owner"
SETUP = ("run scripts/setup-docker.sh --service --cluster (as root: installs docker.io and docker-compose, starts "
         "dockerd, builds the sandbox, service, Redis and PostgreSQL images)")

UP_TIMEOUT_S = 120  # docker-compose up: PostgreSQL and Redis healthy, migrations run, API and workers started
HEALTH_TIMEOUT_S = 60  # then /healthz with both workers alive, and the compose health checks passing
GRADE_TIMEOUT_S = 90  # both submissions graded
DOWN_TIMEOUT_S = 90  # docker-compose down -v (the workers' stop_grace_period is 60 s)
LEFTOVER_WAIT_S = 10  # the workers remove their sandbox containers at exit; give the daemon a moment

CORRECT = ROOT / "reference" / "regularization.py"
WRONG = ROOT / "tests" / "solutions" / "regularization" / "wrong_dropout_not_inverted.py"


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout:g} s (stderr: {exc.stderr!r})")


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return _run(["docker", *args], timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def compose_command() -> list[str]:
    """docker-compose (v1, what Debian packages), else the v2 plugin `docker compose`."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and _run(["docker", "compose", "version"], 30).returncode == 0:
        return ["docker", "compose"]
    pytest.fail(f"neither docker-compose nor `docker compose` is available; {SETUP}")


def sandbox_owners() -> dict[str, str]:
    """Every sandbox container on the daemon (running or not): id -> owner label."""
    listed = docker("ps", "-a", "--no-trunc", "--filter", f"label={SANDBOX_LABEL}",
                    "--format", f'{{{{.ID}}}} {{{{.Label "{OWNER_LABEL}"}}}}')
    assert listed.returncode == 0, listed.stderr
    found: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        cid, _, owner = line.strip().partition(" ")
        if cid:
            found[cid] = owner
    return found


@dataclass
class Cluster:
    command: list[str]
    project: str
    port: int
    env: dict[str, str]
    env_file: Path
    timings: dict[str, float] = field(default_factory=dict)
    worker_hosts: set[str] = field(default_factory=set)  # the worker containers' host names (owner label prefix)
    is_down: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run([*self.command, "-p", self.project, "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file),
                     *args], timeout, self.env)

    def container_ids(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service, timeout=60)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def health(self, cid: str) -> str:
        out = docker("inspect", "--format", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                     cid)
        return out.stdout.strip() or out.stderr.strip()

    def states(self) -> dict[str, str]:
        """Each long-running container: '<service> <short id>' -> 'running healthy' and the like."""
        return {f"{service} {cid[:12]}": self.health(cid)
                for service in LONG_RUNNING for cid in self.container_ids(service)}

    def own_sandboxes(self) -> dict[str, str]:
        """Sandbox containers whose owner is one of this project's worker containers."""
        return {cid: owner for cid, owner in sandbox_owners().items()
                if owner.partition("/")[0] in self.worker_hosts}

    def logs(self) -> str:
        out = self.compose("logs", "--no-color", "--tail", "150", timeout=60)
        return out.stdout + out.stderr

    def down(self) -> subprocess.CompletedProcess[str] | None:
        """`down -v`, once; prints the services' logs first (pytest shows them on failure)."""
        if self.is_down:
            return None
        self.is_down = True
        print(f"--- docker-compose logs ({self.project}) ---\n{self.logs()}\n--- end of logs ---")
        t0 = time.monotonic()
        out = self.compose("down", "-v", "--remove-orphans", timeout=DOWN_TIMEOUT_S)
        self.timings["down -v"] = time.monotonic() - t0
        print(f"docker-compose down -v: {self.timings['down -v']:.1f} s (exit {out.returncode})\n{out.stderr[-2000:]}")
        return out


def _check_prerequisites() -> list[str]:
    command = compose_command()
    info = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    if info.returncode != 0:
        pytest.fail(f"the Docker daemon is not reachable ({info.stderr.strip()[:300]}); {SETUP}")
    missing = [image for image in IMAGES if docker("image", "inspect", image, timeout=30).returncode != 0]
    if missing:
        pytest.fail(f"missing image(s) {', '.join(missing)}; {SETUP}")
    # A service image built before the cluster's commands would fail in `up` with a less helpful message.
    probe = docker("run", "--rm", "--network", "none", SERVICE_IMAGE, "grader", "worker", "--help", timeout=60)
    if probe.returncode != 0:
        pytest.fail(f"{SERVICE_IMAGE} has no `grader worker` (built from older sources?): rebuild it with "
                    f"scripts/build-images.sh --service ({probe.stderr.strip()[-300:]})")
    return command


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    command = _check_prerequisites()
    port = free_port()
    values = {
        "GRADER_PORT": str(port),
        "GRADER_WEBHOOK_SECRET": secrets.token_hex(32),
        "GRADER_POSTGRES_PASSWORD": secrets.token_hex(24),
        "GRADER_REDIS_PASSWORD": secrets.token_hex(24),
    }
    # The test's own env file, so that a .env in the checkout (a real deployment's settings) changes nothing here;
    # and no GRADER_* of the calling environment either.
    env_file = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "cluster.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")} | values
    c = Cluster(command=command, project=f"dlgrader-cluster-{os.getpid()}", port=port, env=env, env_file=env_file)
    try:
        t0 = time.monotonic()
        up = c.compose("up", "-d", "--no-build", "--scale", f"worker={WORKERS}", timeout=UP_TIMEOUT_S)
        c.timings["up"] = time.monotonic() - t0
        assert up.returncode == 0, f"docker-compose up failed:\n{up.stdout}{up.stderr}"
        print(f"docker-compose up -d --scale worker={WORKERS}: {c.timings['up']:.1f} s (API on port {port})")
        workers = c.container_ids("worker")
        assert len(workers) == WORKERS, f"{len(workers)} worker containers, not {WORKERS}: {workers}"
        # A container's host name is its short id (the compose file sets none for the workers).
        c.worker_hosts = {cid[:12] for cid in workers}
        yield c
    finally:
        c.down()


def _wait_healthz(c: Cluster) -> dict[str, Any]:
    """Until GET /healthz answers 200 with the Celery queue and both workers alive."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{c.url}/healthz", timeout=5)
            last = f"{r.status_code} {r.text[:400]}"
            body: dict[str, Any] = r.json() if r.status_code == 200 else {}
            if body.get("queue", {}).get("workers_alive") == WORKERS:
                return body
        except (httpx.HTTPError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        stopped = {name: state for name, state in c.states().items() if not state.startswith("running")}
        assert not stopped, f"containers stopped before /healthz showed {WORKERS} workers: {stopped}"
        time.sleep(1)
    raise AssertionError(f"GET /healthz without {WORKERS} live workers within {HEALTH_TIMEOUT_S} s (last: {last})")


def _token(c: Cluster) -> str:
    out = c.compose("exec", "-T", "api", "grader", "tokens", "create", "--role", "submitter",
                    "--name", "cluster-test", timeout=120)
    assert out.returncode == 0, f"grader tokens create failed:\n{out.stdout}{out.stderr}"
    token = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    assert token.startswith("grd_"), f"unexpected output of grader tokens create: {out.stdout!r} {out.stderr!r}"
    return token


def test_cluster_grades_over_http_on_two_workers_in_docker_sandboxes(cluster: Cluster) -> None:
    c = cluster
    t0 = time.monotonic()
    health = _wait_healthz(c)
    c.timings["up to /healthz with 2 workers"] = c.timings["up"] + time.monotonic() - t0
    print(f"/healthz: {json.dumps(health)}")
    assert health["status"] == "ok" and health["database"] == "ok", health
    queue = health["queue"]
    assert queue["backend"] == "celery" and queue["broker"] == "ok", health
    assert health["workers_running"] is True, health

    token = _token(c)
    # A comment of their own, so that no earlier submission (another run on a kept database) is replayed.
    tag = f"\n# cluster test {uuid.uuid4().hex}\n"
    submissions = {"correct": CORRECT.read_text() + tag, "wrong": WRONG.read_text() + tag}
    ids: dict[str, str] = {}
    posted: dict[str, float] = {}
    summaries: dict[str, dict[str, Any]] = {}
    reports: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=c.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for name, code in submissions.items():
            r = client.post("/v1/submissions",
                            json={"problem": "regularization", "code": code, "candidate": f"cluster-{name}"})
            assert r.status_code == 202, f"POST {name}: {r.status_code} {r.text}"
            ids[name] = r.json()["id"]
            posted[name] = time.monotonic()
        deadline = time.monotonic() + GRADE_TIMEOUT_S
        while len(summaries) < len(ids) and time.monotonic() < deadline:
            for name, sid in ids.items():
                if name in summaries:
                    continue
                r = client.get(f"/v1/submissions/{sid}")
                assert r.status_code == 200, f"GET {name}: {r.status_code} {r.text}"
                if r.json()["status"] in ("done", "failed"):
                    summaries[name] = r.json()
                    c.timings[f"grading {name} (POST to done)"] = time.monotonic() - posted[name]
            time.sleep(0.5)
        pending = {name: client.get(f"/v1/submissions/{sid}").json()["status"]
                   for name, sid in ids.items() if name not in summaries}
        assert not pending, f"not graded within {GRADE_TIMEOUT_S} s: {pending}; containers: {c.states()}"
        for name, sid in ids.items():
            assert summaries[name]["status"] == "done", f"{name}: {summaries[name]}"
            r = client.get(f"/v1/submissions/{sid}/report")
            assert r.status_code == 200, f"GET report of {name}: {r.status_code} {r.text}"
            reports[name] = r.json()

    for name, report in reports.items():
        summary = summaries[name]
        print(f"{name}: {summary['score']:g}/{summary['max_score']:g} points, "
              f"{c.timings[f'grading {name} (POST to done)']:.1f} s from POST to done")
        assert report["status"] == "graded", f"{name}: {report['status']} ({report.get('error')})"
        env = report["environment"]
        assert env["sandbox_backend"] == "docker", f"{name}: {env}"
        assert env["isolation_weaker"] == [], f"{name}: isolation weaker than the Docker backend's: {env}"
    lost = [(t["id"], t["message"][:200]) for t in reports["correct"]["tests"] if t["earned"] < t["points"]]
    assert summaries["correct"]["score"] == summaries["correct"]["max_score"] > 0, f"the reference lost points: {lost}"
    assert summaries["wrong"]["score"] < summaries["wrong"]["max_score"], "the wrong solution earned full marks"
    assert [t for t in reports["wrong"]["tests"] if t["earned"] < t["points"]], "no failing test in the wrong one"

    # The graders were the worker containers: their sandboxes carry a worker's host name as owner (which also
    # keeps the check after `down` from passing vacuously).
    assert c.own_sandboxes(), f"no sandbox container owned by the workers {sorted(c.worker_hosts)}"

    # Still two live workers after grading, and the compose health checks (PostgreSQL: pg_isready over TCP;
    # Redis: PING with the password; API: /healthz; workers: `grader worker --health`) pass for every container.
    r = httpx.get(f"{c.url}/healthz", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["queue"]["workers_alive"] == WORKERS, r.text
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    states = c.states()
    while time.monotonic() < deadline:
        states = c.states()
        if any(s.endswith("unhealthy") or not s.startswith("running") for s in states.values()):
            break
        if all(s == "running healthy" for s in states.values()):
            break
        time.sleep(2)
    assert len(states) == len(LONG_RUNNING) - 1 + WORKERS and all(s == "running healthy" for s in states.values()), (
        f"compose health checks: {states}")

    out = c.down()
    assert out is not None and out.returncode == 0, f"docker-compose down -v failed: {out}"
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while (left := c.own_sandboxes()) and time.monotonic() < deadline:
        time.sleep(1)
    print("timings: " + json.dumps({k: round(v, 1) for k, v in c.timings.items()}))
    assert not left, (f"sandbox containers of the workers left after down -v ({len(left)}): "
                      + ", ".join(f"{cid[:12]} ({owner})" for cid, owner in left.items()))
    volumes = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={c.project}")
    assert volumes.stdout.strip() == "", f"volumes left after down -v: {volumes.stdout}"
