"""The Docker sandbox backend against the real daemon: every hardening asserted, on the container Docker
reports and from inside it; one container per session, never reused; nothing left behind.

Without a daemon or the images these tests fail with what to run (scripts/setup-docker.sh); deselect them
with -m 'not docker'. The hostile and integrity suites (tests/sandbox/) also run on this backend.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from grader.engine.catalog import get_problem
from grader.isolation import DockerOptions, get_backend
from grader.isolation.base import CallTimeout, SandboxLimits, SandboxSpec
from grader.isolation.docker import LABEL, OWNER_LABEL, DockerBackend, DockerSession

pytestmark = [pytest.mark.slow, pytest.mark.docker]

NUMPY = get_problem("mlp").sandbox
TORCH = get_problem("gan").sandbox

PROBE = r'''
import ctypes, errno, os, socket

def probe():
    found = {}
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    for key in ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters"):
        found[key] = status.get(key, "").split()
    init = dict(line.split(":", 1) for line in open("/proc/1/status").read().splitlines() if ":" in line)
    found["init Seccomp_filters"] = init.get("Seccomp_filters", "").split()
    try:
        open("/proc/1/mem", "rb").close()
        found["init mem"] = "opened"
    except OSError as exc:
        found["init mem"] = errno.errorcode.get(exc.errno, str(exc.errno))
    for path in ("/usr/evil", "/evil", "/opt/runner/evil", "/tmp/ok"):
        try:
            with open(path, "w") as fh:
                fh.write("x")
            found[path] = "written"
        except OSError as exc:
            found[path] = errno.errorcode.get(exc.errno, str(exc.errno))
    for path in ("/var/run/docker.sock", "/run/docker.sock", "/work", "/srv/grader", "/var/lib/grader"):
        found["exists " + path] = os.path.exists(path)
    try:
        open("/etc/shadow").read()
        found["shadow"] = "read"
    except OSError as exc:
        found["shadow"] = errno.errorcode.get(exc.errno, str(exc.errno))
    try:
        socket.create_connection(("10.0.0.1", 80), timeout=1)
        found["net"] = "connected"
    except OSError as exc:
        found["net"] = type(exc).__name__
    found["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    libc = ctypes.CDLL(None, use_errno=True)
    for name, call in (("unshare", lambda: libc.unshare(0x10000000)),
                       ("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, b"size=4g")),
                       ("keyctl", lambda: libc.syscall(250, 0, 0, 0, 0, 0)),
                       ("userfaultfd", lambda: libc.syscall(323, 0)),
                       ("io_uring_setup", lambda: libc.syscall(425, 1, 0))):
        rc = call()
        found["call " + name] = "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    found["mounts"] = open("/proc/self/mounts").read()
    found["environ"] = sorted(os.environ)
    return found
'''


@pytest.fixture(scope="module")
def backend() -> DockerBackend:
    b = get_backend("docker", docker=DockerOptions(pool_size=1))
    assert isinstance(b, DockerBackend)
    return b


@pytest.fixture
def session(backend: DockerBackend) -> Iterator[DockerSession]:
    s = backend.start(NUMPY)
    yield s
    s.close()


def inspect(backend: DockerBackend, session: DockerSession) -> dict:
    return backend.api.inspect_container(session.container_id)


def test_container_is_configured_as_hardened(backend: DockerBackend, session: DockerSession) -> None:
    info = inspect(backend, session)
    host = info["HostConfig"]
    limits = NUMPY.limits
    assert host["NetworkMode"] == "none" and info["Config"]["NetworkDisabled"] is True
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": f"rw,nosuid,nodev,noexec,size={limits.tmp_size_mb}m,mode=1777"}
    assert host["Memory"] == limits.memory_mb << 20 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 1_000_000_000
    assert host["PidsLimit"] == limits.max_processes
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert ulimits["fsize"] == (limits.file_size_mb << 20,) * 2
    assert ulimits["nofile"] == (limits.open_files,) * 2
    assert ulimits["nproc"] == (limits.max_processes,) * 2 and ulimits["core"] == (0, 0)
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"]  # and Docker's default seccomp profile, not unconfined
    assert host["Privileged"] is False
    assert not host["Binds"] and info["Mounts"] == [] and not host["Devices"]
    assert host["LogConfig"]["Type"] == "none"
    assert info["Config"]["User"] == f"{session.uid}:{session.uid}" and session.uid >= 100_000
    assert info["Config"]["Labels"][LABEL] == "1" and info["Config"]["Labels"][OWNER_LABEL] == backend.owner
    assert session.isolation.full and session.isolation.backend == "docker"


def test_from_inside_no_network_no_privileges_no_host_paths(session: DockerSession) -> None:
    assert session.load({"solution.py": PROBE}, "solution.py", 30).ok
    reply = session.call({"fn": "probe"}, timeout_s=30)
    assert reply.ok, reply.error
    found = reply.value
    assert int(found["Uid"][0]) == session.uid and int(found["Gid"][0]) == session.uid
    for caps in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(found[caps][0], 16) == 0, caps
    assert found["NoNewPrivs"] == ["1"] and found["Seccomp"] == ["2"]
    assert int(found["Seccomp_filters"][0]) >= 2, "Docker's profile and the grader's filter, stacked"
    assert int(found["init Seccomp_filters"][0]) >= 2, "pid 1 is confined like the runner"
    assert found["init mem"] == "EACCES", "pid 1's memory is out of the candidate's reach"
    assert found["/usr/evil"] in ("EROFS", "EACCES") and found["/evil"] in ("EROFS", "EACCES")
    assert found["/opt/runner/evil"] in ("EROFS", "EACCES") and found["/tmp/ok"] == "written"
    assert not [k for k, v in found.items() if k.startswith("exists ") and v]
    assert found["shadow"] in ("EACCES", "ENOENT")
    assert found["net"] != "connected" and found["interfaces"] == ["lo"]
    for name in ("unshare", "mount", "keyctl", "userfaultfd", "io_uring_setup"):
        assert found["call " + name] in ("EPERM", "ENOSYS"), (name, found["call " + name])
    assert "docker.sock" not in found["mounts"]
    assert "GRADER_SECCOMP" not in found["environ"]


def test_tmp_is_size_limited(session: DockerSession) -> None:
    code = ("def fill():\n    n = 0\n    try:\n        with open('/tmp/fill', 'wb') as fh:\n"
            "            while True:\n                fh.write(b'0' * 2**20)\n                n += 1\n"
            "    except OSError as exc:\n        return n, exc.errno\n")
    assert session.load({"solution.py": code}, "solution.py", 30).ok
    reply = session.call({"fn": "fill"}, timeout_s=30)
    assert reply.ok, reply.error
    written_mb, err = reply.value
    # the file-size ulimit (16 MB) or the tmpfs (64 MB) stops it, whichever is smaller
    assert written_mb <= min(NUMPY.limits.file_size_mb, NUMPY.limits.tmp_size_mb)


def test_memory_limit_kills_and_is_named(backend: DockerBackend) -> None:
    spec = SandboxSpec(packages=("numpy",), limits=SandboxLimits(memory_mb=128))
    s = backend.start(spec)
    try:
        assert s.load({"solution.py": "def hog():\n    x = []\n    while True:\n        x.append(bytearray(2**24))\n"},
                      "solution.py", 30).ok
        with pytest.raises(Exception) as caught:
            s.call({"fn": "hog"}, timeout_s=30)
        assert "out of memory" in str(caught.value)
    finally:
        s.close()


def test_wall_clock_backstop_kills_the_container_from_outside(backend: DockerBackend) -> None:
    s = backend.start(NUMPY)
    cid = s.container_id
    assert s.load({"solution.py": "import time\ndef wait():\n    time.sleep(1000)\n"}, "solution.py", 30).ok
    started = time.monotonic()
    with pytest.raises(CallTimeout):
        s.call({"fn": "wait"}, timeout_s=30, wall_s=1.0)
    assert time.monotonic() - started < 10
    assert cid not in backend.containers(), "the container is removed, not only stopped"


def test_cpu_time_is_the_containers_clock(session: DockerSession) -> None:
    spin = "def spin(s):\n    import time\n    t = time.process_time()\n    while time.process_time() - t < s:\n" \
           "        pass\n"
    assert session.load({"solution.py": spin}, "solution.py", 30).ok
    before = session.cpu_seconds()
    assert before is not None
    assert session.call({"fn": "spin"}, (0.5,), timeout_s=30).ok
    used = (session.cpu_seconds() or 0) - before
    assert 0.4 < used < 5, used


def test_a_session_is_never_reused_and_its_container_is_removed(backend: DockerBackend) -> None:
    pool = backend.pool(backend.image_for(NUMPY), NUMPY)
    assert pool.wait_ready(1, 120)
    warm_before = pool.warm_acquired
    first = backend.start(NUMPY)
    assert pool.warm_acquired == warm_before + 1, "a waiting container is handed out"
    assert first.load({"solution.py": "STATE = []\ndef mark():\n    STATE.append(1)\n    return len(STATE)\n"},
                      "solution.py", 30).ok
    assert first.call({"fn": "mark"}, timeout_s=10).value == 1
    first.close()
    assert first.container_id not in backend.containers()
    second = backend.start(NUMPY)
    try:
        assert second.container_id != first.container_id
        assert second.load({"solution.py": "STATE = []\ndef mark():\n    STATE.append(1)\n    return len(STATE)\n"},
                           "solution.py", 30).ok
        assert second.call({"fn": "mark"}, timeout_s=10).value == 1
    finally:
        second.close()


def test_a_pool_container_that_died_waiting_is_not_handed_out(backend: DockerBackend) -> None:
    pool = backend.pool(backend.image_for(NUMPY), NUMPY)
    assert pool.wait_ready(1, 120)
    victim = pool.waiting()[0]
    backend.api.kill(victim.container_id)
    deadline = time.monotonic() + 10
    while victim.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    s = backend.start(NUMPY)
    try:
        assert s.container_id != victim.container_id
        assert s.load({"solution.py": "def f():\n    return 1\n"}, "solution.py", 30).ok
    finally:
        s.close()
    assert victim.container_id not in backend.containers()


def test_torch_only_in_the_torch_image(backend: DockerBackend) -> None:
    code = "def has_torch():\n    try:\n        import torch\n        return True\n    except ImportError:\n" \
           "        return False\n"
    for spec, expected in ((NUMPY, False), (TORCH, True)):
        s = backend.start(spec)
        try:
            assert s.load({"solution.py": code}, "solution.py", 60).ok
            assert s.call({"fn": "has_torch"}, timeout_s=60).value is expected
        finally:
            s.close()


def test_output_keeps_its_cap(session: DockerSession) -> None:
    code = "import sys\ndef shout():\n    for _ in range(64):\n        sys.stderr.write('e' * 2**20)\n" \
           "        sys.stdout.write('o' * 2**20)\n    return 7\n"
    assert session.load({"solution.py": code}, "solution.py", 30).ok
    assert session.call({"fn": "shout"}, timeout_s=60).value == 7
    kept, printed = session.output().take()
    deadline = time.monotonic() + 10
    while printed < 128 * 2**20 and time.monotonic() < deadline:  # stderr may trail the reply on stdout
        time.sleep(0.05)
        printed += session.output().take()[1]
    assert len(kept) == NUMPY.limits.output_bytes and printed == 128 * 2**20


def test_leftovers_of_a_crashed_grader_are_swept(backend: DockerBackend) -> None:
    """A container labelled with a grader process that no longer runs is removed at the next start-up sweep;
    one of a live grader is kept."""
    dead_owner = f"{socket.gethostname()}/999999999-1"
    orphan = backend.api.create_container(backend.image_for(NUMPY), command=["true"],
                                          labels={LABEL: "1", OWNER_LABEL: dead_owner})["Id"]
    kept = backend.api.create_container(backend.image_for(NUMPY), command=["true"],
                                        labels={LABEL: "1", OWNER_LABEL: backend.owner})["Id"]
    try:
        backend.sweep()
        ids = {c["Id"] for c in backend.api.containers(all=True, filters={"label": LABEL})}
        assert orphan not in ids and kept in ids
    finally:
        for cid in (orphan, kept):
            try:
                backend.api.remove_container(cid, force=True)
            except Exception:
                pass


def test_a_stale_image_is_refused(backend: DockerBackend) -> None:
    from grader.errors import SandboxUnavailable

    stale = DockerBackend(DockerOptions(pool_size=0, image_numpy="dl-grader/base:bookworm"))
    with pytest.raises(SandboxUnavailable, match="runner"):
        stale.start(NUMPY)


def test_no_docker_daemon_fails_with_the_reason() -> None:
    from grader.errors import SandboxUnavailable

    with pytest.raises(SandboxUnavailable, match="setup-docker.sh"):
        DockerBackend(DockerOptions(docker_url=f"unix:///tmp/no-daemon-{os.getpid()}.sock"))


def test_settings_and_the_cli_choose_the_docker_backend(monkeypatch, tmp_path, capsys) -> None:
    from grader import cli
    from grader.config import Settings
    from tests.conftest import ROOT

    monkeypatch.setenv("GRADER_SANDBOX_BACKEND", "docker")
    monkeypatch.setenv("GRADER_DOCKER_POOL_SIZE", "1")
    settings = Settings()
    backend = settings.sandbox()
    assert isinstance(backend, DockerBackend) and backend.options.pool_size == 1
    assert settings.sandbox("local").name == "local"
    path = tmp_path / "solution.py"
    path.write_text((ROOT / "reference" / "rnn.py").read_text())
    assert cli.main(["grade", "rnn", str(path)]) == cli.EXIT_OK
    assert "sandbox docker" in capsys.readouterr().out


def test_sessions_started_at_once_from_threads_are_each_their_own(backend: DockerBackend) -> None:
    """The service grades several submissions at once: every session gets a container and a uid of its own,
    warm or cold, and every one is removed when closed."""
    import threading

    sessions: list[DockerSession] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            for _ in range(2):
                s = backend.start(NUMPY)
                with lock:
                    sessions.append(s)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    try:
        assert not errors, errors
        assert len({s.container_id for s in sessions}) == len(sessions) == 8
        assert len({s.uid for s in sessions}) >= 7  # random per session; a collision is possible, not shared state
        for s in sessions:
            assert s.load({"solution.py": "def f():\n    return 1\n"}, "solution.py", 30).ok
    finally:
        for s in sessions:
            s.close()
    assert backend.in_use() == []


def test_a_grader_killed_mid_grading_leaves_nothing_after_the_next_sweep(backend: DockerBackend) -> None:
    """SIGKILL gives the grader no chance to clean up: its containers (the one grading, the pool's) stay
    until a grader on the same host starts and sweeps them."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = ("from grader.engine import grade\nfrom grader.isolation import get_backend\n"
              "grade('mlp', {'solution.py': 'import time\\ntime.sleep(600)\\n'}, backend=get_backend('docker'))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    owner = f"{socket.gethostname()}/"
    try:
        deadline = time.monotonic() + 120
        theirs: list[str] = []
        while time.monotonic() < deadline and not theirs:
            time.sleep(0.5)
            theirs = [c["Id"] for c in backend.api.containers(filters={"label": LABEL})
                      if c["Labels"].get(OWNER_LABEL, "").startswith(f"{owner}{proc.pid}-")]
        assert theirs, "the grader started no container"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    remaining = {c["Id"] for c in backend.api.containers(all=True, filters={"label": LABEL})}
    assert set(theirs) <= remaining, "still there after the crash"
    backend.sweep()
    remaining = {c["Id"] for c in backend.api.containers(all=True, filters={"label": LABEL})}
    assert not set(theirs) & remaining


STACK_PROBE = r"""
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
for name, number, args in (("io_uring_setup", 425, (1, 0)), ("userfaultfd", 323, (0,)), ("keyctl", 250, (0, 0)),
                           ("unshare", 272, (0x10000000,)), ("bpf", 321, (0, 0, 0)),
                           ("perf_event_open", 298, (0, 0, -1, -1, 0)), ("add_key", 248, (0, 0, 0, 0, 0))):
    rc = libc.syscall(number, *args)
    print(name, "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?"))
"""


def test_the_stacked_filter_refuses_what_dockers_default_profile_allows(backend: DockerBackend) -> None:
    """The same calls from a container with only Docker's default profile, then from a sandbox session."""
    import platform

    if platform.machine() != "x86_64":
        pytest.fail("the probe uses x86_64 system call numbers; add this architecture's")
    image = backend.image_for(NUMPY)
    plain = backend.client.containers.run(image, ["/opt/py/bin/python", "-c", STACK_PROBE], remove=True,
                                          network_mode="none", user="123456:123456", cap_drop=["ALL"],
                                          security_opt=["no-new-privileges"], read_only=True)
    docker_default = dict(line.split() for line in plain.decode().splitlines())
    s = backend.start(NUMPY)
    try:
        code = "import io, contextlib\ndef probe():\n    out = io.StringIO()\n" \
               "    with contextlib.redirect_stdout(out):\n        exec(PROBE)\n    return out.getvalue()\n" \
               f"PROBE = {STACK_PROBE!r}\n"
        assert s.load({"solution.py": code}, "solution.py", 30).ok
        reply = s.call({"fn": "probe"}, timeout_s=30)
        assert reply.ok, reply.error
        ours = dict(line.split() for line in reply.value.splitlines())
    finally:
        s.close()
    assert all(v in ("EPERM", "ENOSYS") for v in ours.values()), ours
    added = [name for name, v in docker_default.items() if v not in ("EPERM", "ENOSYS")]
    assert added, f"Docker's default profile here already refuses every probed call: {docker_default}"


def test_a_shutdown_mid_call_is_the_graders_fault_not_the_candidates() -> None:
    """At shutdown the backend removes every container, in use or not; the call that was running gets an
    error the engine charges to the grader (the submission is graded again), not a crash of the candidate's."""
    import threading

    from grader.isolation.base import SandboxFault, SandboxWithdrawn

    own = DockerBackend(DockerOptions(pool_size=0))
    s = own.start(NUMPY)
    assert s.load({"solution.py": "import time\ndef wait():\n    time.sleep(60)\n"}, "solution.py", 30).ok
    timer = threading.Timer(1.0, own.shutdown)
    timer.start()
    with pytest.raises(SandboxWithdrawn) as caught:
        s.call({"fn": "wait"}, timeout_s=30)
    timer.join(60)
    assert not isinstance(caught.value, SandboxFault)
    assert own.containers() == []
