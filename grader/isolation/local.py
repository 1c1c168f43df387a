"""The local sandbox backend: bubblewrap namespaces, cgroup limits (v1 or v2), an unprivileged uid.

Each session is one `bwrap` process tree:
- new PID, network (loopback only, unreachable from the host), IPC and UTS namespaces;
- a root made of read-only binds: /usr, the interpreter's prefix (its own
  site-packages hidden under an empty tmpfs), and only the packages the problem
  allows at /opt/site; the runner at /opt/runner; a private size-capped /tmp;
- a clean environment, no capabilities, no_new_privs, and a uid of its own;
- a seccomp filter (grader/isolation/seccomp.py) refusing namespace creation, mount,
  ptrace, keyctl, bpf, perf_event_open, userfaultfd, io_uring and the like;
- cgroup memory, pids and cpu limits (a CPU quota of `cpu_cores`, so a
  neighbour's busy loop cannot starve a correct solution) whose CPU usage is the
  sandbox's clock (time limits are CPU seconds, with a wall-clock backstop), on
  cgroup v1 or the unified v2 hierarchy, whichever the host has
  (grader/isolation/cgroups.py, detected at start), plus rlimits (CPU time, file size, open files,
  processes, no core dumps); all in force before bwrap starts (see `LAUNCHER`).

Nothing of the grader, the reference code, the problems or the data is mounted.
Without bubblewrap, root or the cgroup controllers the backend refuses to start
and says why: there is no weaker fallback, so a report always means full isolation.
"""

from __future__ import annotations

import atexit
import importlib.metadata as metadata
import logging
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import cache
from pathlib import Path

from grader.errors import SandboxUnavailable
from grader.isolation import cgroups, seccomp
from grader.isolation.base import (
    Isolation,
    OutputCapture,
    PipeSession,
    SandboxCrashed,
    SandboxFault,
    SandboxSpec,
    SandboxWithdrawn,
    SessionStartFailed,
    describe_exit,
)
from grader.isolation.cgroups import CGROUP_ROOT, CgroupsUnavailable, Group, Hierarchy, detect
from grader.isolation.zygote import (
    ZYGOTE_MEMORY_MB,
    ZYGOTE_PIDS,
    ForkedChild,
    Zygote,
    ZygoteError,
)

log = logging.getLogger(__name__)

RUNNER_DIR = Path(__file__).resolve().parents[2] / "sandbox"
CGROUP_PARENT = cgroups.PARENT
CONTROLLERS = cgroups.V1_CONTROLLERS  # where the host has cgroup v1; v2 has one leaf with memory, pids and cpu
SANDBOX_SITE = "/opt/site"
UID_RANGE = (100_000, 165_000)
_uids_in_use: set[int] = set()
_uids_lock = threading.Lock()
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

# The first program of every sandbox, in place of a preexec_fn: the service starts sandboxes from several
# threads, and a child forked from a threaded parent can block forever, before exec, on a lock another
# thread held at the fork. The launcher instead waits on its stdin until the parent has put its pid in the
# session's cgroups and set its rlimits (`LocalSession._enter_limits`), then execs bwrap, so bwrap and
# everything it starts are inside them from their first instruction. No line (the parent failed or died):
# it exits without starting anything. A shell's `read` takes a pipe one byte at a time and stops at the
# newline, so the frames that follow the gate line stay in the pipe for the runner.
LAUNCHER = ("/bin/sh", "-c", 'umask 022; IFS= read -r gate || exit 125; [ "$gate" = go ] || exit 125; exec "$@"',
            "grader-launcher")
GATE = b"go\n"


@cache
def package_paths(packages: tuple[str, ...]) -> tuple[Path, ...]:
    """Top-level files and folders of the given distributions and their non-optional dependencies."""
    seen: set[str] = set()
    paths: set[Path] = set()
    todo = list(packages)
    while todo:
        name = re.split(r"[ ;<>=!~\[]", todo.pop(), maxsplit=1)[0].strip().lower()
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(req)
        base = Path(str(dist.locate_file("")))
        for f in dist.files or []:
            top = f.parts[0]
            if top == ".." or top.endswith(".pth") or top == "__pycache__":
                continue
            candidate = base / top
            if candidate.exists():
                paths.add(candidate)
    return tuple(sorted(paths))


def sandbox_layout(bwrap: str, packages: tuple[str, ...], torch: bool, tmp_bytes: int, *,
                   cgroup_namespace: bool) -> list[str]:
    """bwrap's options shared by a session and a zygote: namespaces, the file system and the environment."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    cmd = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    if cgroup_namespace:
        cmd += ["--unshare-cgroup-try"]
    cmd += ["--die-with-parent", "--new-session", "--clearenv", "--ro-bind", "/usr", "/usr"]
    for link in ("lib", "lib64", "bin", "sbin"):
        if Path(f"/usr/{link}").exists():
            cmd += ["--symlink", f"usr/{link}", f"/{link}"]
    cmd += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # The interpreter's prefix at its own path (its libpython is found by RUNPATH there),
    # with every parent readable by the sandbox's uid.
    for parent in reversed(prefix.parents[:-1]):
        cmd += ["--perms", "0755", "--dir", str(parent)]
    cmd += ["--ro-bind", str(prefix), str(prefix)]
    base_site = prefix / "lib" / version / "site-packages"
    if base_site.is_dir():
        cmd += ["--tmpfs", str(base_site)]
    cmd += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", SANDBOX_SITE]
    for path in package_paths(packages):
        cmd += ["--ro-bind", str(path), f"{SANDBOX_SITE}/{path.name}"]
    cmd += ["--perms", "0755", "--dir", "/opt/runner", "--ro-bind", str(RUNNER_DIR), "/opt/runner/sandbox",
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp",
            "--chdir", "/tmp"]
    for key, value in sandbox_env(torch).items():
        cmd += ["--setenv", key, value]
    return cmd


def sandbox_env(torch: bool) -> dict[str, str]:
    env = {"PYTHONPATH": f"/opt/runner:{SANDBOX_SITE}", "HOME": "/tmp", "LANG": "C.UTF-8",
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
           "GRADER_TORCH": "1" if torch else "0", "PATH": "/usr/bin:/bin"}
    env.update({k: "1" for k in THREAD_ENV})
    return env


class LocalBackend:
    """Starts one bubblewrap sandbox per session; with `zygote`, each forked by its image's fork server."""

    name = "local"

    def __init__(self, zygote: bool = True) -> None:
        self.use_zygote = zygote
        self._zygotes: dict[tuple[tuple[str, ...], bool], Zygote] = {}
        self._zygote_lock = threading.Lock()
        self.bwrap = shutil.which("bwrap")
        self.setpriv = shutil.which("setpriv")
        if self.bwrap is None or self.setpriv is None:
            raise SandboxUnavailable(
                "the local sandbox needs bubblewrap and setpriv: run scripts/setup.sh "
                "(it installs the 'bubblewrap' package), or choose another backend with --sandbox")
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "the local sandbox runs as root so that it can drop to an unprivileged uid and set cgroup "
                "limits; run the grader as root (it never runs candidate code as root)")
        try:
            self.hierarchy: Hierarchy = detect(CGROUP_ROOT)
            self.hierarchy.prepare()
        except (CgroupsUnavailable, OSError) as exc:
            raise SandboxUnavailable(
                f"{exc}. Without them memory, processes and CPU share cannot be limited, and the sandbox does "
                "not run with weaker isolation") from exc
        log.info("local sandbox cgroups: %s", self.hierarchy.describe())
        self.hierarchy.sweep()
        if zygote:
            atexit.register(self.shutdown)

    def start(self, spec: SandboxSpec) -> LocalSession:
        return LocalSession(self, spec)

    # the fork servers ----------------------------------------------------------------------
    def zygote(self, spec: SandboxSpec) -> Zygote:
        """The running fork server of this spec's image; a broken one is replaced by a new one."""
        key = (tuple(spec.packages), spec.torch)
        with self._zygote_lock:
            current = self._zygotes.get(key)
            if current is not None and current.owner == os.getpid():
                if current.broken is None:
                    return current
                if not current.was_ready and time.monotonic() - current.broken_at < ZYGOTE_RETRY_S:
                    raise ZygoteError(f"the last zygote of this image did not start ({current.broken})")
            prefix = Path(sys.base_prefix)
            python = str(prefix / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")

            def command(fd: int) -> list[str]:
                caps = ["--cap-drop", "ALL"]
                for cap in ZYGOTE_CAPS:
                    caps += ["--cap-add", cap]
                return [*sandbox_layout(self.bwrap or "bwrap", key[0], key[1], ZYGOTE_TMP_BYTES,
                                        cgroup_namespace=False), *caps, "--", python, "-s", "-m", "sandbox.zygote",
                        str(fd)]

            name = "+".join(key[0]) + ("+torch" if key[1] else "")
            zygote = Zygote(name, command, seccomp.build_filter(), _launch_zygote, self._zygote_cgroup,
                            start_timeout_s=max(60.0, spec.limits.start_timeout_s * 2))
            self._zygotes[key] = zygote
            return zygote

    def _zygote_cgroup(self, name: str) -> Group:
        """A zygote's memory and pids cgroup (generous: its sessions move to cgroups of their own at once)."""
        self.hierarchy.sweep(("z",))
        return self.hierarchy.zygote(name, memory_bytes=ZYGOTE_MEMORY_MB << 20, pids=ZYGOTE_PIDS)

    def shutdown(self) -> None:
        """Stop every fork server (their sandboxes end with them); at exit, and by close_backends."""
        with self._zygote_lock:
            zygotes = list(self._zygotes.values())
            self._zygotes.clear()
        for zygote in zygotes:
            zygote.shutdown()


# A zygote keeps only what building a session's namespaces and dropping to its uid needs.
ZYGOTE_CAPS = ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_NET_ADMIN")
ZYGOTE_TMP_BYTES = 16 << 20
ZYGOTE_RETRY_S = 60.0  # after a zygote that never became ready, sessions start fresh for this long


def _launch_zygote(command: list[str], pass_fds: tuple[int, ...], procs_files: list[Path],
                   stderr_fd: int) -> subprocess.Popen[bytes]:
    """Start a zygote behind the launcher's gate, in its cgroups from its first instruction."""
    gate_r, gate_w = os.pipe()
    try:
        proc = subprocess.Popen([*LAUNCHER, *command], stdin=gate_r, stdout=subprocess.DEVNULL, stderr=stderr_fd,
                                close_fds=True, pass_fds=pass_fds, env={"PATH": "/usr/bin:/bin"})
    finally:
        os.close(gate_r)
    try:
        for procs in procs_files:
            procs.write_text(str(proc.pid))
        resource.prlimit(proc.pid, resource.RLIMIT_CORE, (0, 0))
        os.write(gate_w, GATE)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(gate_w)
    return proc


class ForkedProcess:
    """A zygote-forked session as `LocalSession.proc`: its exit status comes from the zygote's notice."""

    def __init__(self, child: ForkedChild) -> None:
        self.child = child
        self.pid = 0  # the host's pid of the session's first process, once known (see `LocalSession._first_pid`)
        self.pidfd = -1  # and a pidfd of it: the zygote reaps it, so its pid number may be reused afterwards

    def poll(self) -> int | None:
        return self.child.status if self.child.exited.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        if not self.child.exited.wait(timeout):
            raise subprocess.TimeoutExpired("sandbox", timeout or 0)
        return self.child.status

    def kill(self) -> None:
        if self.pidfd >= 0 and not self.child.exited.is_set():
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def _take_uid() -> int:
    """A uid no other live session of this process has (a shared uid could signal and ptrace-inspect the other
    sandbox's processes); random in the range, so concurrent graders rarely meet either."""
    with _uids_lock:
        while True:
            uid = secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]) + UID_RANGE[0]
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int) -> None:
    with _uids_lock:
        _uids_in_use.discard(uid)


class LocalSession(PipeSession):
    def __init__(self, backend: LocalBackend, spec: SandboxSpec) -> None:
        self.spec = spec
        self.limits = spec.limits
        self.uid = _take_uid()
        self._uid_held = True
        self.hierarchy = backend.hierarchy
        self.group: Group | None = None
        enforced = ["namespaces(pid,net,ipc,uts)", "read-only root", "clean environment", "no capabilities",
                    f"uid {self.uid}", f"cpu {self.limits.cpu_time_s}s", f"file size {self.limits.file_size_mb}MB",
                    f"/tmp {self.limits.tmp_size_mb}MB"]
        try:
            self._make_cgroups()
        except OSError as exc:
            self._remove_cgroups()
            raise SessionStartFailed(f"could not create the sandbox's cgroups: {exc}") from exc
        enforced += [f"memory {self.limits.memory_mb}MB (cgroup)", f"processes {self.limits.max_processes} (cgroup)",
                     f"cpu share {self.limits.cpu_cores:g} core(s) (cgroup)", "time limits in CPU seconds (cgroup)",
                     f"seccomp ({len(seccomp.REFUSED)} system calls refused)"]
        self.isolation = Isolation(backend="local", enforced=tuple(enforced))

        self.proc: subprocess.Popen[bytes] | ForkedProcess
        zygote = None
        if backend.use_zygote:
            try:
                zygote = backend.zygote(spec)
            except (OSError, SandboxUnavailable, ZygoteError) as exc:
                log.warning("no sandbox zygote, starting a fresh sandbox: %s", exc)
        if zygote is not None and self._start_forked(zygote):
            enforced.append("fork server")
            self.isolation = Isolation(backend="local", enforced=tuple(enforced))
        else:
            self._start_fresh(backend)
        if isinstance(self.proc, ForkedProcess):
            assert zygote is not None
            self._handshake_forked(zygote)
            self._confirm_forked(zygote)
        else:
            self._handshake(self.limits.start_timeout_s)
        self.baseline = set(self._pids())

    def _handshake_forked(self, zygote: Zygote) -> None:
        """The runner's hello. Before it no candidate code has run, so a forked child that failed its set-up
        (cgroups, rlimits, namespaces, mounts, the privilege drop, seccomp: exit 125) is the grader's failure,
        not a crash of the candidate's, and its zygote is in doubt: discarded, the next session gets a new one."""
        try:
            self._handshake(self.limits.start_timeout_s)
        except (SandboxFault, SandboxWithdrawn) as exc:
            zygote.discard(f"a forked sandbox did not start: {exc}")
            raise SessionStartFailed(f"the forked sandbox did not start: {exc}") from exc

    def _confirm_forked(self, zygote: Zygote) -> None:
        """The host's own placement of a forked session: every process of it (monitor, init, runner) must be
        in all of the session's cgroups, and its first process (which joined them and set its rlimits itself)
        is written into them again by the host, so that a session whose cgroups the host cannot write fails
        to start exactly as on the fresh path."""
        assert isinstance(self.proc, ForkedProcess)
        self.proc.pid = self._first_pid()
        try:
            if not self.proc.pid:
                raise OSError("the forked sandbox is not in its cgroups")
            self.proc.pidfd = os.pidfd_open(self.proc.pid)
            self._check_placement()  # after pidfd_open: the pid is still the session's, so is the pidfd
            self._enter_limits(self.proc.pid)
        except BaseException as exc:
            self._dead = SandboxCrashed("the sandbox did not start")
            self._terminate()
            if isinstance(exc, OSError):
                zygote.discard(f"a forked sandbox was not in its cgroups and limits: {exc}")
                raise SessionStartFailed(f"could not put the sandbox in its cgroups and limits: {exc}") from exc
            raise

    def _start_fresh(self, backend: LocalBackend) -> None:
        """Today's path: the launcher, its gate, then bwrap and setpriv."""
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            filter_fd = seccomp.filter_fd()
            try:
                self.proc = subprocess.Popen(
                    [*LAUNCHER, *self._command(backend, filter_fd)], stdin=to_r, stdout=from_w, stderr=out_w,
                    close_fds=True, pass_fds=(filter_fd,), env={"PATH": "/usr/bin:/bin"})
            finally:
                os.close(filter_fd)
        except BaseException:
            for fd in (to_w, from_r, out_r):
                os.close(fd)
            self._remove_cgroups()
            raise
        finally:
            for fd in (to_r, from_w, out_w):
                os.close(fd)
        super().__init__(to_w, from_r, OutputCapture(out_r, self.limits.output_bytes), self.limits.wire_limits())
        try:
            self._enter_limits(self.proc.pid)
            os.write(to_w, GATE)  # a fresh pipe has room for it: never blocks
        except BaseException as exc:
            self._dead = SandboxCrashed("the sandbox did not start")
            self._terminate()
            if isinstance(exc, OSError):
                raise SessionStartFailed(f"could not put the sandbox in its cgroups and limits: {exc}") from exc
            raise

    def _start_forked(self, zygote: Zygote) -> bool:
        """Fork the session from the zygote; False (nothing started) when the zygote failed."""
        lim = self.limits
        rlimits = {"cpu": [lim.cpu_time_s, lim.cpu_time_s + 5], "fsize": lim.file_size_mb << 20,
                   "nofile": lim.open_files, "nproc": lim.max_processes}
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        out_r, out_w = os.pipe()
        passed = [to_r, from_w, out_w]
        try:
            for procs in self.group.procs_files if self.group else []:
                passed.append(os.open(procs, os.O_WRONLY | os.O_CLOEXEC))
            child = zygote.fork(uid=self.uid, rlimits=rlimits, tmp_bytes=lim.tmp_size_mb << 20, fds=passed)
        except ZygoteError as exc:
            log.warning("the sandbox zygote failed, starting a fresh sandbox: %s", exc)
            for fd in (to_w, from_r, out_r):
                os.close(fd)
            return False
        except BaseException as exc:
            for fd in (to_w, from_r, out_r):
                os.close(fd)
            self._remove_cgroups()
            if isinstance(exc, OSError):
                raise SessionStartFailed(f"could not pass the sandbox its cgroups: {exc}") from exc
            raise
        finally:
            for fd in passed:
                os.close(fd)
        self.proc = ForkedProcess(child)
        super().__init__(to_w, from_r, OutputCapture(out_r, self.limits.output_bytes), self.limits.wire_limits())
        return True

    def _check_placement(self) -> None:
        """Every process in the session's pids cgroup is in the session's cgroup of every controller."""
        pids = self._pids()
        if not pids or self.group is None:
            raise OSError("the forked sandbox has no process in its cgroups")
        for pid in pids:
            missing = self.group.misplaced(pid)
            if missing:
                raise OSError(f"sandbox process {pid} is not in the session's {', '.join(missing)} cgroup(s)")

    def _first_pid(self) -> int:
        """The host's pid of the forked session's first process: the one in its cgroup whose parent is not."""
        pids = set(self._pids())
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                ppid = int(status.split("PPid:")[1].split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if ppid not in pids:
                return pid
        return 0

    # set-up --------------------------------------------------------------------------
    @property
    def cgroups(self) -> list[Path]:
        """The session's cgroup folders (v1: memory, pids, cpu, cpuacct; v2: its one leaf); [] once removed."""
        return self.group.dirs if self.group is not None else []

    def _make_cgroups(self) -> None:
        self.group = self.hierarchy.session(f"s{os.getpid()}-{secrets.token_hex(6)}",
                                            memory_bytes=self.limits.memory_mb << 20,
                                            pids=self.limits.max_processes, cpu_cores=self.limits.cpu_cores)

    def _enter_limits(self, pid: int) -> None:
        """Put the launcher, still waiting at its gate, in the session's cgroups and under its rlimits.

        Done from the parent, so the child runs no Python between fork and exec; whatever
        the launcher execs inherits both.
        """
        for procs in self.group.procs_files if self.group else []:
            procs.write_text(str(pid))
        lim = self.limits
        resource.prlimit(pid, resource.RLIMIT_CPU, (lim.cpu_time_s, lim.cpu_time_s + 5))
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (lim.file_size_mb << 20,) * 2)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (lim.open_files,) * 2)
        resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))
        # Counted per uid, and every session has its own uid, so sessions never share the count.
        resource.prlimit(pid, resource.RLIMIT_NPROC, (lim.max_processes,) * 2)

    def _command(self, backend: LocalBackend, filter_fd: int) -> list[str]:
        prefix = Path(sys.base_prefix)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        cmd = sandbox_layout(backend.bwrap or "bwrap", self.spec.packages, self.spec.torch,
                             self.limits.tmp_size_mb << 20, cgroup_namespace=True)
        cmd += ["--seccomp", str(filter_fd)]  # applied before setpriv runs: nothing the candidate starts escapes it
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
                "--", backend.setpriv or "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
                str(prefix / "bin" / version), "-s", "-m", "sandbox.runner"]
        return cmd

    def _fail(self, fault: SandboxFault) -> None:
        """A forked session that died with its zygote (which the grader discards when in doubt, or stops at
        shutdown) was taken back by the grader: an error the engine charges to the grader, not the candidate."""
        if isinstance(self.proc, ForkedProcess) and self.proc.child.lost is not None:
            if self._dead is None:
                self._dead = fault
                self._terminate()
            raise SandboxWithdrawn(f"the sandbox's fork server failed ({self.proc.child.lost}) while this "
                                   f"sandbox ran ({fault})") from fault
        super()._fail(fault)

    # observation -----------------------------------------------------------------------
    def cpu_seconds(self) -> float | None:
        """CPU time used by every process of the sandbox so far (the cgroup's clock, not the candidate's claim)."""
        # Read on every wait of every call: one pread on a kept descriptor, not an open, read and close.
        group = self.group
        ns = group.cpu_ns() if group is not None else None
        return None if ns is None else ns / 1e9

    def _pids(self) -> list[int]:
        group = self.group
        return group.procs() if group is not None else []

    def stray_processes(self) -> int:
        """Kill processes the candidate left running after a call; return how many there were."""
        strays = [p for p in self._pids() if p not in self.baseline]
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(strays)

    def _oom_killed(self) -> bool:
        group = self.group
        return group.oom_killed() if group is not None else False

    def _describe_death(self) -> str:
        # A forked session's status comes from the zygote's notice; when the zygote itself died, its reader
        # thread marks the session lost (withdrawn, not a crash) as soon as it notices: wait for either.
        try:
            code = self.proc.wait(timeout=10 if isinstance(self.proc, ForkedProcess) else 2)
        except subprocess.TimeoutExpired:
            code = None
        return describe_exit(code, oom=self._oom_killed(), memory_mb=self.limits.memory_mb)

    def _terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for pid in self._pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("sandbox process %s did not exit after SIGKILL", self.proc.pid)
        self._output.join(1.0)
        for fd in (self._to, self._from):
            try:
                os.close(fd)
            except OSError:
                pass
        self._to = self._from = -1
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        """The session's end (every path out of it comes here): its cgroups go, its pidfd, and its uid unless
        a cgroup could not be removed (a process may still run as that uid)."""
        removed = True
        group, self.group = self.group, None
        if group is not None:
            removed = group.remove()
        proc = getattr(self, "proc", None)
        if isinstance(proc, ForkedProcess):
            proc.close()
        if removed and self._uid_held:
            self._uid_held = False  # once: by then another session may hold the same number
            _release_uid(self.uid)
