"""The images of the Docker backend against the real daemon: what the backend relies on (docker/sandbox.Dockerfile,
scripts/build-images.sh) holds in the images as built; the cluster's Redis and PostgreSQL images start and answer.

Without a daemon or the images these tests fail with what to run (scripts/setup-docker.sh); deselect them
with -m 'not docker'.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.isolation.images import runner_digest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
RUNNER_DIR = ROOT / "sandbox"
# The names and labels the backend relies on (grader/isolation/images.py, grader/config.py).
SANDBOX_IMAGES = {"numpy": "dl-grader/sandbox:numpy", "torch": "dl-grader/sandbox:torch"}
SERVICE_IMAGE = "dl-grader/service:latest"
RUNNER_LABEL = "dl-grader.runner"
VARIANT_LABEL = "dl-grader.variant"
PYTHON = "/opt/py/bin/python"
# How the backend runs a sandbox: no network, read-only root, an unprivileged uid with no passwd entry.
LOCKED = ["--network", "none", "--read-only", "--user", "123456:123456", "--tmpfs", "/tmp", "--cap-drop", "ALL",
          "--security-opt", "no-new-privileges"]
SETUP = "run scripts/setup-docker.sh (as root: installs docker.io, starts dockerd, builds the images)"


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def daemon() -> None:
    if shutil.which("docker") is None:
        pytest.fail(f"no docker command on PATH; {SETUP}")
    info = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    if info.returncode != 0:
        pytest.fail(f"the Docker daemon is not reachable ({info.stderr.strip()[:300]}); {SETUP}")


def inspect(image: str) -> dict:
    found = docker("image", "inspect", image, timeout=30)
    if found.returncode != 0:
        pytest.fail(f"image {image} is missing; run scripts/build-images.sh (or {SETUP})")
    return json.loads(found.stdout)[0]


def run(image: str, *command: str, locked: bool = True) -> subprocess.CompletedProcess[str]:
    return docker("run", "--rm", *(LOCKED if locked else ["--network", "none"]), image, *command, timeout=300)


@pytest.fixture(scope="module", params=sorted(SANDBOX_IMAGES))
def sandbox_image(request: pytest.FixtureRequest, daemon: None) -> tuple[str, str]:
    variant = request.param
    inspect(SANDBOX_IMAGES[variant])
    return variant, SANDBOX_IMAGES[variant]


def test_labels_name_this_runner_and_the_variant(sandbox_image: tuple[str, str]) -> None:
    variant, image = sandbox_image
    labels = inspect(image)["Config"]["Labels"] or {}
    assert labels.get(RUNNER_LABEL) == runner_digest(), (
        f"{image} carries another runner than sandbox/ (rebuild: scripts/build-images.sh)")
    assert labels.get(VARIANT_LABEL) == variant
    assert labels.get("dl-grader.build"), "build-images.sh labels every image with the hash of its inputs"


def test_config_is_what_the_backend_expects(sandbox_image: tuple[str, str]) -> None:
    _, image = sandbox_image
    config = inspect(image)["Config"]
    assert config["WorkingDir"] == "/tmp"
    assert config["Cmd"] == [PYTHON, "-s", "-m", "sandbox.boot"]
    assert {"PYTHONPATH=/opt/runner", "PYTHONDONTWRITEBYTECODE=1"} <= set(config["Env"])
    assert not config.get("User"), "the backend chooses the uid; the image names none"


def test_numpy_imports_in_both_torch_only_in_its_variant(sandbox_image: tuple[str, str]) -> None:
    variant, image = sandbox_image
    numpy = run(image, PYTHON, "-s", "-c", "import numpy; print(numpy.__version__)")
    assert numpy.returncode == 0, numpy.stderr
    import numpy as host_numpy

    assert numpy.stdout.strip() == host_numpy.__version__, "the image's numpy is the version the tests ran"
    torch = run(image, PYTHON, "-s", "-c", "import torch; print(torch.__version__)")
    if variant == "torch":
        assert torch.returncode == 0, torch.stderr
        assert torch.stdout.strip() == "2.13.0+cpu"
    else:
        assert torch.returncode != 0 and "ModuleNotFoundError" in torch.stderr, (torch.stdout, torch.stderr)


def test_the_runner_imports_as_an_unknown_uid_on_a_read_only_root(sandbox_image: tuple[str, str]) -> None:
    _, image = sandbox_image
    done = run(image, PYTHON, "-s", "-c", "import sandbox.runner, sandbox.wire; print('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_runner_copy_is_sandbox_without_caches(sandbox_image: tuple[str, str]) -> None:
    _, image = sandbox_image
    listing = ("import hashlib, json, pathlib; r = pathlib.Path('/opt/runner/sandbox'); "
               "print(json.dumps({p.relative_to(r).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() "
               "for p in r.rglob('*') if p.is_file()}))")
    done = run(image, PYTHON, "-s", "-c", listing)
    assert done.returncode == 0, done.stderr
    expected = {p.relative_to(RUNNER_DIR).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in RUNNER_DIR.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert json.loads(done.stdout) == expected


def test_python_is_3_11_and_the_venv_holds_no_installer(sandbox_image: tuple[str, str]) -> None:
    _, image = sandbox_image
    done = run(image, PYTHON, "-s", "-c",
               "import sys, importlib.util; print(sys.version_info[:2], importlib.util.find_spec('pip') is None)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(3, 11) True"


def test_no_setuid_or_setgid_file(sandbox_image: tuple[str, str]) -> None:
    _, image = sandbox_image
    # As root in the container, so that find can read every directory.
    done = run(image, "find", "/", "-xdev", "-perm", "/6000", "-type", "f", locked=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_no_wheels_left_in_the_image(sandbox_image: tuple[str, str]) -> None:
    _, image = sandbox_image
    # (The base's own ensurepip wheels in /usr/share/python-wheels are not the build's.)
    done = run(image, "sh", "-c", "find / -xdev \\( -name 'numpy-*.whl' -o -name 'torch-*.whl' \\) | head -n 5; "
                                  "test ! -e /wheels", locked=False)
    assert done.returncode == 0 and done.stdout.strip() == "", (done.stdout, done.stderr)


def test_the_service_image_carries_the_same_runner(daemon: None) -> None:
    if docker("image", "inspect", SERVICE_IMAGE, timeout=30).returncode != 0:
        pytest.fail(f"{SERVICE_IMAGE} is missing; run scripts/build-images.sh --service "
                    f"(or deselect with -m 'not docker')")
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "python3", SERVICE_IMAGE, "-W", "ignore",
                  "-m", "grader.isolation.images", "digest", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == runner_digest(), (
        "the service image would refuse the sandbox images (rebuild: scripts/build-images.sh --service)")


# The cluster's images (docker/redis.Dockerfile, docker/postgres.Dockerfile): started as docker-compose.cluster.yml
# starts them (a password in the environment, the image's entrypoint and user), each must answer as uid 999.
CLUSTER_IMAGES = {"redis": "dl-grader/redis:7", "postgres": "dl-grader/postgres:15"}
CLUSTER_UID = 999
READY_TIMEOUT_S = 60  # a first start runs initdb; a loaded two-core machine is slow


def cluster_image(name: str) -> str:
    image = CLUSTER_IMAGES[name]
    if docker("image", "inspect", image, timeout=30).returncode != 0:
        pytest.fail(f"image {image} is missing; run scripts/build-images.sh --only-cluster "
                    f"(or --cluster; or deselect with -m 'not docker')")
    return image


@contextlib.contextmanager
def started(image: str, *env: str) -> Iterator[str]:
    args = [a for e in env for a in ("-e", e)]
    done = docker("run", "-d", "--network", "none", *args, image, timeout=60)
    assert done.returncode == 0, done.stderr
    cid = done.stdout.strip()
    try:
        yield cid
    finally:
        docker("rm", "-f", "-v", cid, timeout=60)


def wait_until(cid: str, *command: str) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        done = docker("exec", cid, *command, timeout=30)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        running = docker("inspect", "-f", "{{.State.Running}}", cid, timeout=30).stdout.strip()
        assert running == "true", f"the container stopped: {docker('logs', cid, timeout=30).stderr[-2000:]}"
        time.sleep(0.5)


def server_process(cid: str) -> tuple[str, int]:
    """The name and real uid of the container's process 1 (the server, after the entrypoint's exec)."""
    done = docker("exec", cid, "cat", "/proc/1/comm", "/proc/1/status", timeout=30)
    assert done.returncode == 0, done.stderr
    comm = done.stdout.splitlines()[0]
    uid = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("Uid:"))
    return comm, uid


def test_redis_image_answers_ping_with_the_password_as_uid_999(daemon: None) -> None:
    image = cluster_image("redis")
    assert (inspect(image)["Config"]["Labels"] or {}).get("dl-grader.build")
    password = secrets.token_hex(16)
    with started(image, f"REDIS_PASSWORD={password}") as cid:
        health = wait_until(cid, "redis-entrypoint", "health")
        assert health.returncode == 0, f"no PONG within {READY_TIMEOUT_S} s: {docker('logs', cid).stdout[-2000:]}"
        assert server_process(cid) == ("redis-server", CLUSTER_UID)
        ping = docker("exec", "-e", f"REDISCLI_AUTH={password}", cid, "redis-cli", "ping", timeout=30)
        assert ping.stdout.strip() == "PONG", (ping.stdout, ping.stderr)
        anonymous = docker("exec", cid, "redis-cli", "ping", timeout=30)
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr, (anonymous.stdout, anonymous.stderr)


def test_postgres_image_accepts_the_grader_role_over_tcp_as_uid_999(daemon: None) -> None:
    image = cluster_image("postgres")
    assert (inspect(image)["Config"]["Labels"] or {}).get("dl-grader.build")
    password = secrets.token_hex(16)
    with started(image, f"POSTGRES_PASSWORD={password}") as cid:
        ready = wait_until(cid, "pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432", "-U", "grader", "-d", "grader")
        assert ready.returncode == 0, f"not ready within {READY_TIMEOUT_S} s: {docker('logs', cid).stderr[-2000:]}"
        assert server_process(cid) == ("postgres", CLUSTER_UID)
        query = ["psql", "-h", "127.0.0.1", "-U", "grader", "-d", "grader", "-tAc", "select current_user"]
        done = docker("exec", "-e", f"PGPASSWORD={password}", cid, *query, timeout=30)
        assert done.returncode == 0 and done.stdout.strip() == "grader", (done.stdout, done.stderr)
        wrong = docker("exec", "-e", "PGPASSWORD=not-the-password", cid, *query, timeout=30)
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr, wrong.stderr


@pytest.mark.parametrize("name", sorted(CLUSTER_IMAGES))
def test_cluster_images_refuse_a_placeholder_password(daemon: None, name: str) -> None:
    image = cluster_image(name)
    variable = "REDIS_PASSWORD" if name == "redis" else "POSTGRES_PASSWORD"
    name_ = f"dl-grader-test-placeholder-{name}-{os.getpid()}"
    try:  # named, so a server that wrongly starts is removed, not left running past the CLI's timeout
        done = docker("run", "--rm", "--name", name_, "--network", "none", "-e", f"{variable}=change-me", image,
                      timeout=60)
    finally:
        docker("rm", "-f", name_, timeout=30)
    assert done.returncode != 0 and "real password" in done.stderr, (done.returncode, done.stderr)


def test_compose_file_is_valid() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail(f"no docker-compose command; {SETUP}")
    env = {**os.environ, "GRADER_WEBHOOK_SECRET": "compose-config-check"}
    done = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    config = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60).stdout
    assert "/var/run/docker.sock" in config and "pid: host" in config
    assert "/host/sys/fs/cgroup" in config and "GRADER_DOCKER_CGROUP_ROOT: /host/sys/fs/cgroup" in config


def test_compose_refuses_to_run_without_a_webhook_secret() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail(f"no docker-compose command; {SETUP}")
    env = {k: v for k, v in os.environ.items() if k != "GRADER_WEBHOOK_SECRET"}
    done = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode != 0 and "GRADER_WEBHOOK_SECRET" in done.stderr
