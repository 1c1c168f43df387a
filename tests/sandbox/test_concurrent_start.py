"""Starting sandboxes from many threads at once, as the service's worker pool does.

The child of a threaded parent must run nothing of Python between fork and exec
(a preexec_fn can block forever on a lock another thread held at the fork), yet
every process of a sandbox must be inside its session's cgroups and rlimits
before the runner or the candidate runs. These tests start sessions from eight
threads together and look at each one from the host and from the candidate's
first line of code.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from grader.isolation import get_backend
from grader.isolation.base import SandboxSpec, SessionStartFailed
from grader.isolation.local import CONTROLLERS, LAUNCHER, LocalSession
from tests.grading import grade_submission

ROOT = Path(__file__).resolve().parents[2]

THREADS = 8
SESSIONS_PER_THREAD = 3
DEADLINE_S = 180.0

# Read at import, the first candidate code that runs: what it sees is what it had from its first instruction.
PROBE = """
FIRST = (open("/proc/self/cgroup").read(), open("/proc/self/limits").read(), open("/proc/self/status").read())

def probe(a, b):
    return [a + b, *FIRST]
"""


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, read from the host's /proc."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def cgroups(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as controller -> path (cpu and cpuacct may share a line)."""
    paths = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            paths[c] = path
    return paths


def cgroups_of(pid: int) -> dict[str, str]:
    """A process's cgroups as the host sees them."""
    return cgroups(Path(f"/proc/{pid}/cgroup").read_text())


def limits_of(text: str) -> dict[str, str]:
    """/proc/<pid>/limits as name -> soft limit."""
    rows = text.splitlines()[1:]
    return {row[:26].strip(): row[26:].split()[0] for row in rows if row.strip()}


def check_session(session: LocalSession) -> None:
    name = "/" + "/".join(session.cgroups[0].parts[-2:])  # /dl-grader/s<pid>-<token>
    tree = descendants(session.proc.pid)
    assert len(tree) >= 3, tree  # bwrap, bwrap's init in the new PID namespace, the runner
    for pid in tree:
        paths = cgroups_of(pid)
        assert {c: paths.get(c) for c in CONTROLLERS} == {c: name for c in CONTROLLERS}, (pid, paths)
    lim = session.limits
    reply = session.load({"solution.py": PROBE}, "solution.py", timeout_s=30)
    assert reply.ok, reply.error
    reply = session.call({"fn": "probe"}, (2, 3), timeout_s=30)
    assert reply.ok, reply.error
    total, cgroup, limits, status = reply.value
    assert total == 5
    # The candidate sees the root of a cgroup namespace that bwrap made while already in the session's
    # cgroups (the host sees its pid there, above): its first line ran inside them.
    assert {c: cgroups(cgroup).get(c) for c in CONTROLLERS} == {c: "/" for c in CONTROLLERS}, cgroup
    expected = {"Max cpu time": str(lim.cpu_time_s), "Max file size": str(lim.file_size_mb << 20),
                "Max core file size": "0", "Max processes": str(lim.max_processes),
                "Max open files": str(lim.open_files)}
    got = limits_of(limits)
    assert {k: got.get(k) for k in expected} == expected, limits
    assert "Umask:\t0022" in status
    runner = [p for p in tree if Path(f"/proc/{p}/comm").read_text().startswith("python")]
    assert len(runner) == 1, tree
    assert cgroups_of(runner[0])["memory"] == name


def sandbox_leftovers() -> list[str]:
    """Cgroups and live processes of sandboxes this test process started."""
    mine = f"s{os.getpid()}-"
    left = [str(p) for c in CONTROLLERS for p in Path(f"/sys/fs/cgroup/{c}/dl-grader").glob(mine + "*")]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"/dl-grader/{mine}" in (proc / "cgroup").read_text():
                    left.append(f"process {proc.name}")
            except OSError:
                pass
    return left


@pytest.mark.slow
def test_sandboxes_started_from_many_threads_all_start_inside_their_limits() -> None:
    backend = get_backend("local")
    spec = SandboxSpec()
    barrier = threading.Barrier(THREADS)
    done: list[float] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=60)
            for _ in range(SESSIONS_PER_THREAD):
                t0 = time.monotonic()
                session = backend.start(spec)
                try:
                    assert isinstance(session, LocalSession)
                    check_session(session)
                finally:
                    session.close()
                done.append(time.monotonic() - t0)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, daemon=True, name=f"starter-{i}") for i in range(THREADS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + DEADLINE_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"{len(stuck)} threads never finished starting and closing their sandboxes: {stuck}"
    if failures:
        raise failures[0]
    assert len(done) == THREADS * SESSIONS_PER_THREAD
    end = time.monotonic() + 5
    while sandbox_leftovers() and time.monotonic() < end:
        time.sleep(0.1)
    assert sandbox_leftovers() == []


@pytest.mark.parametrize("gate", [b"", b"no\n", b"go"])
def test_the_launcher_starts_nothing_unless_the_parent_opens_the_gate(gate: bytes, tmp_path: Path) -> None:
    """A parent that failed to set the limits, died, or wrote anything but the gate line starts nothing."""
    marker = tmp_path / "ran"
    proc = subprocess.run([*LAUNCHER, "/usr/bin/touch", str(marker)], input=gate, timeout=10)
    assert proc.returncode == 125
    assert not marker.exists()


def test_the_launcher_leaves_what_follows_the_gate_for_the_runner() -> None:
    proc = subprocess.run([*LAUNCHER, "/bin/cat"], input=b"go\n\x00frame bytes\n", capture_output=True, timeout=10)
    assert proc.returncode == 0
    assert proc.stdout == b"\x00frame bytes\n"


@pytest.mark.slow
def test_a_start_that_cannot_join_its_cgroups_runs_nothing_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LocalSession, pid: int) -> None:
        raise PermissionError(13, "Permission denied", "cgroup.procs")

    monkeypatch.setattr(LocalSession, "_enter_limits", refuse)
    with pytest.raises(SessionStartFailed, match="cgroups and limits"):
        get_backend("local").start(SandboxSpec())
    assert sandbox_leftovers() == []
    # The launcher was killed and reaped, never having run bwrap.
    assert [pid for pid in descendants(os.getpid()) if pid != os.getpid()
            and Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:1] in ([b"/bin/sh"], [b"bwrap"])] == []


@pytest.mark.slow
def test_a_session_that_cannot_start_is_the_graders_passing_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the candidate's loss and not a missing backend: an incomplete report, which the queue grades again."""
    def refuse(self: LocalSession, pid: int) -> None:
        raise OSError(16, "Device or resource busy", "cgroup.procs")

    monkeypatch.setattr(LocalSession, "_enter_limits", refuse)
    report = grade_submission("mlp", {"solution.py": (ROOT / "reference" / "mlp.py").read_text()})
    assert report.status == "incomplete" and not report.complete
    assert {t.fault for t in report.tests} == {"grader"} and report.score == 0
    assert sandbox_leftovers() == []
