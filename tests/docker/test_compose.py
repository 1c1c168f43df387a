"""The one-machine deployment end to end: docker-compose.yml with the service image, real HTTP, real sandbox
containers started through the host's daemon, then `docker-compose down` and nothing left behind.

Brings up its own compose project (`dlgrader-test-<pid>`) on a free host port (GRADER_PORT), creates a
submitter token inside the container, grades the mlp reference, a known-wrong mlp solution and the gan
reference (torch image), and checks the scores and the report's environment (sandbox backend `docker`,
nothing weaker). After `down -v` no sandbox container of the compose service's grader (owner label
`grader/...`, the `hostname:` of docker-compose.yml) may remain.

Without docker-compose, a daemon or the service image it fails with what to run (scripts/setup-docker.sh
--service); deselect it with -m 'not docker'. It runs the service image as built: after changing grader/,
rebuild it with scripts/build-images.sh --service. Timings are printed (pytest -s to see them on success).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICE = "grader"
SERVICE_IMAGE = "dl-grader/service:latest"
SANDBOX_LABEL = "dl-grader.sandbox=1"
OWNER_LABEL = "dl-grader.owner"
OWNER_PREFIX = "grader/"  # the compose service's `hostname:`, then /<pid>-<start time> of its grader process
WEBHOOK_SECRET = "compose-test-webhook-secret-" + "0" * 32
SETUP = "run scripts/setup-docker.sh --service (as root: installs docker.io and docker-compose, starts dockerd, " \
        "builds the sandbox and service images)"

HEALTH_TIMEOUT_S = 120  # up to /healthz answering with the workers running
GRADE_TIMEOUT_S = 600  # all three submissions graded (they queue on the service's workers)
DOWN_TIMEOUT_S = 120  # docker-compose down, its stop timeout included
LEFTOVER_WAIT_S = 10  # the grader removes its sandbox containers at exit; give the daemon a moment

MLP_WRONG = "wrong_db_mean.py"


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


def sandbox_containers() -> dict[str, str]:
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
class Stack:
    project: str
    port: int
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    preexisting: dict[str, str] = field(default_factory=dict)  # grader/ sandbox containers from before `up`
    is_down: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run(["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args], timeout, self.env)

    def logs(self) -> str:
        out = self.compose("logs", "--no-color", "--tail", "300", timeout=60)
        return out.stdout + out.stderr

    def container_id(self) -> str:
        out = self.compose("ps", "-q", SERVICE, timeout=60)
        return out.stdout.strip()

    def health_status(self) -> str:
        cid = self.container_id()
        if not cid:
            return "no container"
        out = docker("inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", cid)
        return out.stdout.strip() or out.stderr.strip()

    def own_sandboxes(self) -> dict[str, str]:
        """Sandbox containers of a grader on the compose service's host name, but for those from before `up`."""
        return {cid: owner for cid, owner in sandbox_containers().items()
                if owner.startswith(OWNER_PREFIX) and cid not in self.preexisting}

    def down(self) -> subprocess.CompletedProcess[str] | None:
        """`docker-compose down -v`, once; prints the service's logs first (pytest shows them on failure)."""
        if self.is_down:
            return None
        self.is_down = True
        print(f"--- docker-compose logs ({self.project}) ---\n{self.logs()}\n--- end of logs ---")
        t0 = time.monotonic()
        out = self.compose("down", "-v", "--remove-orphans", timeout=DOWN_TIMEOUT_S)
        self.timings["down"] = time.monotonic() - t0
        print(f"docker-compose down: {self.timings['down']:.1f} s (exit {out.returncode})")
        return out


def _check_prerequisites() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail(f"no docker-compose command on PATH; {SETUP}")
    if shutil.which("docker") is None:
        pytest.fail(f"no docker command on PATH; {SETUP}")
    info = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    if info.returncode != 0:
        pytest.fail(f"the Docker daemon is not reachable ({info.stderr.strip()[:300]}); {SETUP}")
    if docker("image", "inspect", SERVICE_IMAGE, timeout=30).returncode != 0:
        pytest.fail(f"the image {SERVICE_IMAGE} is missing; {SETUP}")


def _wait_healthy(stack: Stack) -> None:
    """Until GET /healthz answers 200 with the worker pool running (or the container exits)."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{stack.url}/healthz", timeout=5)
            last = f"{r.status_code} {r.text[:200]}"
            if r.status_code == 200 and r.json().get("workers_running"):
                return
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        state = stack.compose("ps", SERVICE, timeout=60).stdout
        if "Exit" in state or "Restarting" in state:
            raise AssertionError(f"the grader container stopped before it was healthy:\n{state}")
        time.sleep(1)
    raise AssertionError(f"GET /healthz not healthy within {HEALTH_TIMEOUT_S} s (last: {last})")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    _check_prerequisites()
    port = free_port()
    env = {**os.environ, "GRADER_PORT": str(port), "GRADER_WEBHOOK_SECRET": WEBHOOK_SECRET}
    s = Stack(project=f"dlgrader-test-{os.getpid()}", port=port, env=env)
    s.preexisting = {cid: owner for cid, owner in sandbox_containers().items() if owner.startswith(OWNER_PREFIX)}
    try:
        t0 = time.monotonic()
        up = s.compose("up", "-d", "--no-build", timeout=HEALTH_TIMEOUT_S)
        assert up.returncode == 0, f"docker-compose up failed:\n{up.stdout}{up.stderr}"
        _wait_healthy(s)
        s.timings["up to healthy"] = time.monotonic() - t0
        print(f"docker-compose up to healthy (GET /healthz): {s.timings['up to healthy']:.1f} s (port {port})")
        yield s
    finally:
        s.down()  # prints the logs first; pytest shows them when the test or this fixture failed


def _token(stack: Stack) -> str:
    out = stack.compose("exec", "-T", SERVICE, "grader", "tokens", "create", "--role", "submitter",
                        "--name", "compose-test", timeout=120)
    assert out.returncode == 0, f"grader tokens create failed:\n{out.stdout}{out.stderr}"
    token = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    assert token.startswith("grd_"), f"unexpected output of grader tokens create: {out.stdout!r} {out.stderr!r}"
    return token


def test_compose_grades_over_http_in_docker_sandboxes_and_leaves_nothing_behind(stack: Stack) -> None:
    token = _token(stack)
    submissions = {
        "mlp reference": ("mlp", ROOT / "reference" / "mlp.py"),
        f"mlp {MLP_WRONG}": ("mlp", ROOT / "tests" / "solutions" / "mlp" / MLP_WRONG),
        "gan reference": ("gan", ROOT / "reference" / "gan.py"),
    }
    ids: dict[str, str] = {}
    posted: dict[str, float] = {}
    finished: dict[str, float] = {}
    summaries: dict[str, dict[str, Any]] = {}
    reports: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for name, (problem, path) in submissions.items():
            r = client.post("/v1/submissions", json={"problem": problem, "code": path.read_text(),
                                                     "candidate": "compose-test"})
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
                    finished[name] = time.monotonic()
            time.sleep(1)
        pending = {name: sid for name, sid in ids.items() if name not in summaries}
        assert not pending, f"not graded within {GRADE_TIMEOUT_S} s: {pending}"

        # While the stack runs, its grader's sandbox containers (the warm pool) carry the owner label checked
        # after `down`: otherwise that check would pass vacuously.
        running = stack.own_sandboxes()
        assert running, f"no sandbox container with an owner label starting with {OWNER_PREFIX!r} while up"

        for name, sid in ids.items():
            assert summaries[name]["status"] == "done", f"{name}: {summaries[name]}"
            r = client.get(f"/v1/submissions/{sid}/report")
            assert r.status_code == 200, f"GET report of {name}: {r.status_code} {r.text}"
            reports[name] = r.json()  # the Report itself (candidate view)

    for name, summary in summaries.items():
        report = reports[name]
        failing = [(t["id"], t["status"], t["message"][:200]) for t in report["tests"] if t["earned"] < t["points"]]
        worked = (datetime.fromisoformat(summary["finished_at"].replace("Z", "+00:00"))
                  - datetime.fromisoformat(summary["started_at"].replace("Z", "+00:00"))).total_seconds()
        stack.timings[f"grading {name}"] = finished[name] - posted[name]
        print(f"{name}: {summary['score']:g}/{summary['max_score']:g} points, {finished[name] - posted[name]:.1f} s "
              f"from POST to done ({worked:.1f} s on a worker)")
        env = report["environment"]
        assert env["sandbox_backend"] == "docker", f"{name}: {env}"
        assert env["isolation"], f"{name}: no isolation listed: {env}"
        assert env["isolation_weaker"] == [], f"{name}: isolation weaker than the Docker backend's: {env}"
        assert report["status"] == "graded", f"{name}: {report['status']} ({report.get('error')})"
        if "reference" in name:
            assert summary["score"] == summary["max_score"] > 0, f"{name} lost points: {failing}"
        else:
            assert summary["score"] < summary["max_score"], f"{name} earned full marks"
            assert failing, name

    # The compose healthcheck (its first run is one interval after the start) passes too.
    deadline = time.monotonic() + 60
    while stack.health_status() not in ("healthy", "unhealthy") and time.monotonic() < deadline:
        time.sleep(2)
    assert stack.health_status() == "healthy", f"compose healthcheck: {stack.health_status()}"

    # `stop` first (SIGTERM, then SIGKILL after the stop timeout), to read how the grader process ended before
    # `down -v` removes its container; both are counted as the time of down.
    cid = stack.container_id()
    t0 = time.monotonic()
    stopped = stack.compose("stop", timeout=DOWN_TIMEOUT_S)
    stop_s = time.monotonic() - t0
    assert stopped.returncode == 0, f"docker-compose stop failed:\n{stopped.stdout}{stopped.stderr}"
    ended = docker("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}} {{.State.FinishedAt}}", cid)
    print(f"docker-compose stop: {stop_s:.1f} s; the grader container ended with: {ended.stdout.strip()}")
    out = stack.down()
    assert out is not None and out.returncode == 0, f"docker-compose down failed: {out}"
    stack.timings["down"] += stop_s
    state = docker("inspect", "--format", "{{json .State}}", cid)
    assert state.returncode != 0, f"the grader container is still there after down: {state.stdout}"

    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while True:
        left = stack.own_sandboxes()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    print("timings: " + json.dumps({k: round(v, 1) for k, v in stack.timings.items()}))
    exit_code = ended.stdout.split()[0] if ended.stdout.split() else "?"
    why = {"137": "137: killed by SIGKILL once the stop timeout ran out",
           "143": "143: killed by SIGTERM, so no atexit handler ran (uvicorn raises the stop signal again after its "
                  "graceful shutdown; see _exit_on_sigterm in grader/api/commands.py)"}.get(exit_code, "")
    assert not left, (
        f"sandbox containers of the compose grader left after down ({len(left)}): "
        + ", ".join(f"{c[:12]} ({o})" for c, o in left.items())
        + f"; the grader exited with {exit_code} after {stop_s:.1f} s {why}")
    assert exit_code == "0", f"the grader exited with {exit_code} on docker-compose stop after {stop_s:.1f} s {why}"
