"""The local sandbox's fork server (zygote): sandboxes forked from one zygote are as isolated as fresh ones.

Real sandboxes, no mocks: two sessions of one zygote side by side, what a forked child holds (capabilities,
no_new_privs, seccomp, fds, network), the limits, crashes, a zygote killed from outside, and the start-up
cost after a fault.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grader.isolation import local
from grader.isolation.base import (
    CallTimeout,
    SandboxCrashed,
    SandboxLimits,
    SandboxSpec,
    SandboxWithdrawn,
    SessionStartFailed,
)
from grader.isolation.local import CGROUP_PARENT, CGROUP_ROOT, CONTROLLERS, LocalBackend, LocalSession

pytestmark = pytest.mark.slow

PROBE = r'''
import os, socket

def _fds():
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the directory's own fd, closed by now
    return found

FDS_AT_IMPORT = _fds()

def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    return True

def exists(path):
    return os.path.exists(path)

def me():
    status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
    return {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "init": open("/proc/1/comm").read().strip(),
            "status": {k: v.strip() for k, v in status.items()},
            "fds": FDS_AT_IMPORT, "cwd": os.getcwd()}

def writable_dirs():
    found = []
    for root, dirs, _ in os.walk("/"):
        if root in ("/proc", "/sys"):
            dirs[:] = []
            continue
        if os.access(root, os.W_OK):
            found.append(root)
    return sorted(found)

def network():
    out = {}
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2).close()
        out["outside"] = "connected"
    except OSError as exc:
        out["outside"] = type(exc).__name__
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname(), timeout=2)
    out["loopback"] = "ok"
    c.close(); srv.close()
    return out

def unshare():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(0x00020000), ctypes.get_errno()

def exit_now(code):
    os._exit(code)

def signal_init():
    os.kill(1, 9)

def kill_self():
    os.kill(os.getpid(), 9)

def hog():
    keep = []
    while True:
        keep.append(bytearray(32 * 2**20))

def forks():
    n = 0
    children = []
    try:
        while n < 200:
            pid = os.fork()
            if pid == 0:
                import time
                time.sleep(30)
                os._exit(0)
            children.append(pid)
            n += 1
    except OSError:
        pass
    return n

def spin():
    while True:
        pass

def ids():
    import ctypes
    st = os.stat("/dev/shm")
    return {"sid": os.getsid(0), "pgid": os.getpgid(0), "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0),
            "shm": [st.st_mode & 0o7777, st.st_uid, os.access("/dev/shm", os.W_OK)]}

SIGNALS = []

def listen():
    import signal
    signal.signal(signal.SIGCONT, lambda *_: SIGNALS.append(1))

def received():
    return len(SIGNALS)

def signal_own_group():
    import signal
    for _ in range(5):
        os.kill(0, signal.SIGCONT)

def zygote_state():
    import gc
    return [{"children": dict(o.children), "sock": o.sock.fileno()} for o in gc.get_objects()
            if type(o).__name__ == "Server"]
'''

SPEC = SandboxSpec(limits=SandboxLimits(memory_mb=256, max_processes=16, start_timeout_s=60))


def leftovers() -> list[str]:
    """Cgroups and processes of sandboxes and zygotes this test process started."""
    left = []
    for prefix in (f"s{os.getpid()}-", f"z{os.getpid()}-"):
        left += [str(p) for c in CONTROLLERS for p in (CGROUP_ROOT / c / CGROUP_PARENT).glob(prefix + "*")]
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if f"/{CGROUP_PARENT}/{prefix}" in (proc / "cgroup").read_text():
                        left.append(f"process {proc.name} {(proc / 'comm').read_text().strip()}")
                except OSError:
                    pass
    return left


def assert_nothing_left(before: set[str]) -> None:
    """Nothing but what was there before the test (the zygote of another test's shared backend)."""
    deadline = time.monotonic() + 5
    while set(leftovers()) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(set(leftovers()) - before) == []


@pytest.fixture
def backend() -> Iterator[LocalBackend]:
    before = set(leftovers())
    b = LocalBackend(zygote=True)
    try:
        yield b
    finally:
        b.shutdown()
        assert_nothing_left(before)


def session(backend: LocalBackend, spec: SandboxSpec = SPEC) -> LocalSession:
    s = backend.start(spec)
    try:
        assert "fork server" in s.isolation.enforced
        reply = s.load({"solution.py": PROBE}, "solution.py", timeout_s=30)
        assert reply.ok, reply.error
    except BaseException:
        s.close()
        raise
    return s


def call(s: LocalSession, fn: str, *args: Any, timeout_s: float = 30) -> Any:
    reply = s.call({"fn": fn}, args, timeout_s=timeout_s)
    assert reply.ok, reply.error
    return reply.value


def test_two_sessions_of_one_zygote_cannot_see_each_other(backend: LocalBackend) -> None:
    a, b = session(backend), session(backend)
    try:
        assert len(backend._zygotes) == 1
        assert call(a, "write", "/tmp/secret", "a's") is True
        assert call(a, "exists", "/tmp/secret") is True
        assert call(b, "exists", "/tmp/secret") is False
        me_a, me_b = call(a, "me"), call(b, "me")
        assert me_a["uid"] != me_b["uid"] and me_a["uid"] >= 100_000 and me_a["gid"] == me_a["uid"]
        assert me_a["groups"] == [] and me_a["cwd"] == "/tmp"
        for me in (me_a, me_b):
            # pid 1 is the session's own init (as bwrap's was), the runner pid 2: nothing of the other session
            assert me["pids"] == [1, 2] and me["pid"] == 2 and me["init"] == "sandbox-init", me
        # its init is root without capabilities: out of the candidate's reach
        reply = a.call({"fn": "signal_init"}, timeout_s=30)
        assert not reply.ok and reply.error is not None and reply.error.type == "PermissionError"
        # the only place a candidate can write is its own fresh /tmp, as on the fresh path
        assert set(call(a, "writable_dirs")) <= {"/tmp"} | {d for d in call(a, "writable_dirs") if
                                                            d.startswith("/tmp/")}
        assert "/tmp" in call(b, "writable_dirs")
    finally:
        a.close()
        b.close()


def test_a_forked_sandbox_holds_no_privilege_and_no_fd_of_the_zygote(backend: LocalBackend) -> None:
    s = session(backend)
    try:
        me = call(s, "me")
        status = me["status"]
        for key in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
            assert int(status[key], 16) == 0, (key, status[key])
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
        fds = me["fds"]
        assert not [t for t in fds.values() if t.startswith("socket:")], fds
        assert {"0", "1", "2"} <= set(fds)
        assert call(s, "network") == {"outside": "OSError", "loopback": "ok"} or \
            call(s, "network")["outside"] != "connected"
        assert call(s, "unshare")[0] == -1  # seccomp refuses it
    finally:
        s.close()
    # the fresh path's runner holds the same fds at import: the zygote added none
    fresh = LocalBackend(zygote=False).start(SPEC)
    try:
        reply = fresh.load({"solution.py": PROBE}, "solution.py", timeout_s=30)
        assert reply.ok, reply.error
        assert sorted(call(fresh, "me")["fds"]) == sorted(fds)
    finally:
        fresh.close()


def test_limits_hold_in_a_forked_sandbox(backend: LocalBackend) -> None:
    s = session(backend)
    try:
        assert call(s, "forks") < SPEC.limits.max_processes
        assert s.stray_processes() > 0
        before = s.cpu_seconds()
        assert before is not None
        with pytest.raises(CallTimeout):
            s.call({"fn": "spin"}, timeout_s=1.0)
        after = s.cpu_seconds()
        assert after is None or after - before >= 0.9
    finally:
        s.close()
    s = session(backend)
    try:
        with pytest.raises(SandboxCrashed, match="out of memory"):
            s.call({"fn": "hog"}, timeout_s=30)
    finally:
        s.close()


@pytest.mark.parametrize(("fn", "args", "message"), [
    ("exit_now", (3,), "exited with status 3"),
    ("kill_self", (), "signal SIGKILL"),
])
def test_a_crash_is_reported_as_before(backend: LocalBackend, fn: str, args: tuple[Any, ...], message: str) -> None:
    s = session(backend)
    try:
        with pytest.raises(SandboxCrashed, match=message):
            s.call({"fn": fn}, args, timeout_s=10)
    finally:
        s.close()


def assert_served_by_a_new_zygote(backend: LocalBackend, old: object) -> None:
    """The next session works, and a replacement zygote (not `old`) forked it."""
    s = session(backend)
    try:
        assert call(s, "exists", "/tmp") is True
        (replacement,) = backend._zygotes.values()
        assert replacement is not old
    finally:
        s.close()


def test_a_zygote_killed_from_outside_is_replaced(backend: LocalBackend) -> None:
    first = session(backend)
    (zygote,) = backend._zygotes.values()
    for pid in zygote._pids():
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while zygote.broken is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert zygote.broken is not None
    # the running session died with it: the grader's failure, not the candidate's crash
    with pytest.raises(SandboxWithdrawn, match="fork server"):
        first.call({"fn": "exists"}, ("/tmp",), timeout_s=10)
    first.close()
    assert_served_by_a_new_zygote(backend, zygote)


def test_a_restart_after_a_fault_costs_far_less_than_a_cold_start(backend: LocalBackend) -> None:
    session(backend).close()  # the zygote is up
    s = session(backend)
    with pytest.raises(SandboxCrashed):
        s.call({"fn": "exit_now"}, (1,), timeout_s=10)
    s.close()
    t0 = time.monotonic()
    backend.start(SPEC).close()
    forked = time.monotonic() - t0
    t0 = time.monotonic()
    LocalBackend(zygote=False).start(SPEC).close()
    cold = time.monotonic() - t0
    print(f"\nsession start after a fault: forked {forked:.3f} s, cold {cold:.3f} s")
    assert forked < cold * 3 + 1  # a loose sanity bound; the figures are printed


def fresh_session() -> LocalSession:
    s = LocalBackend(zygote=False).start(SPEC)
    try:
        reply = s.load({"solution.py": PROBE}, "solution.py", timeout_s=30)
        assert reply.ok, reply.error
    except BaseException:
        s.close()
        raise
    return s


def test_a_forked_sandbox_has_its_own_session_and_cannot_signal_a_sibling(backend: LocalBackend) -> None:
    a, b = session(backend), session(backend)
    try:
        fresh = fresh_session()
        try:
            expected = call(fresh, "ids")
        finally:
            fresh.close()
        # session and process group 1 (led by the sandbox's init), /dev/shm root's and not writable, a
        # dumpable runner: as on the fresh path
        assert expected["sid"] == expected["pgid"] == 1, expected
        assert call(a, "ids") == call(b, "ids") == expected
        call(b, "listen")
        call(a, "signal_own_group")  # SIGCONT crosses uids within one session: it must stay in a's
        time.sleep(0.2)
        assert call(b, "received") == 0
        assert call(a, "exists", "/tmp") is True
    finally:
        a.close()
        b.close()


def test_live_sessions_of_one_process_never_share_a_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([7, 7, 7, 8, 7])
    monkeypatch.setattr(local.secrets, "randbelow", lambda n: next(draws))
    first = local._take_uid()
    second = local._take_uid()
    assert first != second
    local._release_uid(first)
    assert local._take_uid() == first  # released at the session's end, so it can be drawn again
    local._release_uid(first)
    local._release_uid(second)


def test_a_child_failing_its_set_up_is_a_start_failure_and_its_zygote_is_discarded(backend: LocalBackend) -> None:
    session(backend).close()
    (zygote,) = backend._zygotes.values()
    # a hard limit above what the kernel allows: the forked child's setrlimit fails before the runner starts
    bad = SandboxSpec(limits=dataclasses.replace(SPEC.limits, open_files=1 << 40))
    with pytest.raises(SessionStartFailed, match="did not start"):
        backend.start(bad)
    assert zygote.broken is not None
    assert_served_by_a_new_zygote(backend, zygote)


def test_a_forked_sandbox_holds_nothing_of_its_siblings(backend: LocalBackend) -> None:
    others = [backend.start(SPEC) for _ in range(2)]
    try:
        s = session(backend)
        try:
            for state in call(s, "zygote_state"):
                assert state == {"children": {}, "sock": -1}
        finally:
            s.close()
    finally:
        for o in others:
            o.close()


def test_the_monitor_keeps_no_privilege_and_is_signalled_by_pidfd(backend: LocalBackend) -> None:
    s = session(backend)
    try:
        assert isinstance(s.proc, local.ForkedProcess)
        monitor = s.proc.pid
        assert monitor and s.proc.pidfd >= 0
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{monitor}/status").read_text().splitlines()
                      if ":\t" in line)
        for key in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
            assert int(status[key], 16) == 0, (key, status[key])
        assert os.getsid(monitor) == monitor  # its own session, not the zygote's
        # every process of the session is in all four of its cgroups
        s._check_placement()
    finally:
        s.close()
    assert s.proc.pidfd == -1


def test_a_session_with_a_process_outside_its_cgroups_does_not_start(backend: LocalBackend,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    session(backend).close()
    (zygote,) = backend._zygotes.values()
    first_pid = LocalSession._first_pid

    def escape(self: LocalSession) -> int:
        first = first_pid(self)
        other = next(p for p in self._pids() if p != first)  # the init or the runner
        (CGROUP_ROOT / "memory" / CGROUP_PARENT / "cgroup.procs").write_text(str(other))
        return first

    monkeypatch.setattr(LocalSession, "_first_pid", escape)
    with pytest.raises(SessionStartFailed, match="not in the session's memory cgroup"):
        backend.start(SPEC)
    assert zygote.broken is not None
    monkeypatch.undo()
    session(backend).close()


def test_stale_session_cgroups_of_dead_graders_are_swept_and_live_ones_kept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    paths = {}
    for owner in (dead.pid, 1):
        path = CGROUP_ROOT / "pids" / CGROUP_PARENT / f"s{owner}-zygotetest"
        path.mkdir(parents=True, exist_ok=True)
        os.utime(path, (time.time() - 3600, time.time() - 3600))
        paths[owner] = path
    try:
        LocalBackend(zygote=False)
        assert not paths[dead.pid].exists()
        assert paths[1].exists()  # its owner is alive: never touched
    finally:
        for path in paths.values():
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
