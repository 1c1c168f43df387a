"""The fork server (zygote) of the local sandbox: one per sandbox image, forking one sandbox per session.

Started by bubblewrap with the same file-system layout and environment as a
session, in its own PID, network, IPC and UTS namespaces, as root with only
CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_NET_ADMIN. It imports
the runner and the image's libraries once, checks that it is single-threaded,
then serves the host on a SOCK_SEQPACKET unix socket (its number is argv[1]).
It never runs candidate code: every session is a fresh child that drops
everything before the runner starts.

Messages are JSON, one per packet:
    host -> zygote  {"op": "init", "seccomp": hex of the BPF program}   (first, once)
    zygote -> host  {"ready": true, "pid": n, "threads": 1}
    host -> zygote  {"op": "fork", "token": t, "uid": u, "rlimits": {...}, "tmp_bytes": n}
                    + SCM_RIGHTS: protocol stdin (read end), protocol stdout (write end), output (write end),
                      then one writable cgroup.procs fd per session cgroup directory
    zygote -> host  {"forked": t, "pid": n}  or  {"failed": t, "message": m}
    zygote -> host  {"exited": t, "status": code}   (subprocess convention: -signal or the exit status)
    host -> zygote  {"op": "ping", "n": k}  ->  {"pong": k}

A session's processes, from the zygote down:
    monitor (in the zygote's PID namespace): PR_SET_PDEATHSIG, forgets the zygote's table of its siblings,
        setsid (out of the zygote's session and process group, which every sibling would share), joins the
        session's cgroups, sets the rlimits, unshares mount/PID/network/IPC/UTS/cgroup namespaces, makes /
        private, forks the init, then drops every capability (bounding set included), sets no_new_privs and
        the seccomp filter, and only waits to exit with the init's status;
    init (pid 1 of the new PID namespace): a fresh /proc, a fresh size-capped 1777 tmpfs on /tmp, a fresh
        root-owned 0755 tmpfs on /dev/shm (not writable by the sandbox, as bwrap's), a new devpts instance,
        loopback up, the environment reset, the three pipes on 0/1/2 and every other fd closed, setsid (the
        session and process group 1, as under bwrap's init); forks the runner, drops its own capabilities
        and reaps until the runner exits (as bwrap's init did, so that the candidate is never pid 1: pid 1
        ignores its own SIGKILL and inherits every orphan);
    runner (pid 2): the bounding set, groups, uid/gid, inheritable and ambient capabilities dropped,
        no_new_privs, the seccomp filter, dumpable again (as exec made the fresh path's runner), then
        sandbox.runner.main().
Any failure before the runner starts ends that process with status 125.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import sys
import traceback
from typing import Any

libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
UNSHARE_FLAGS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

FAILED_START = 125
MAX_FDS = 16
MAX_FD = 1 << 20
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    _check(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)), f"prctl({option})")


def _set_name(name: bytes) -> None:
    libc.prctl(ctypes.c_int(PR_SET_NAME), ctypes.c_char_p(name[:15]), ctypes.c_ulong(0), ctypes.c_ulong(0),
               ctypes.c_ulong(0))


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {fstype or source} on {target}")


def _exit_code(status: int) -> int:
    """A wait status as a shell (or bwrap's init) reports it: the exit status, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else FAILED_START


def _writable_mounts() -> list[str]:
    """Mount points, other than /tmp, that a fresh root-owned 0755 tmpfs replaces in each sandbox."""
    return [p for p in ("/dev/shm", "/dev/mqueue", "/run", "/var/tmp") if os.path.isdir(p)
            and not os.path.islink(p)]


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def _drop_privileges(uid: int | None, program: bytes) -> None:
    """Bounding set, groups, uid and gid (unless None), every other capability set, no_new_privs, seccomp."""
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        last_cap = int(fh.read())
    for cap in range(last_cap + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    os.setgroups([])
    if uid is not None:
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog),
                      ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp")


def _run_runner() -> None:
    """The candidate's process: fresh random state (the zygote's would be shared by every sandbox), then the runner."""
    code = 0
    try:
        if "random" in sys.modules:
            sys.modules["random"].seed()
        if "numpy.random" in sys.modules:
            sys.modules["numpy.random"].seed()
        import sandbox.runner

        sys.argv = [sandbox.runner.__file__]  # as `python -m sandbox.runner` would have it
        sandbox.runner.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        code = 1
        try:
            traceback.print_exc()
        except BaseException:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


def _init(request: dict[str, Any], pipes: list[int], program: bytes, env: dict[str, str]) -> None:
    """Pid 1 of the session's PID namespace: builds its private mounts, starts the runner, drops everything."""
    _set_name(b"sandbox-init")
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in PROC_READ_ONLY:
        if os.path.exists(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    size = int(request["tmp_bytes"])
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
    for path in _writable_mounts():
        # fresh per sandbox, but root's and 0755 as on the fresh path (bwrap's /dev/shm): not writable
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0755")
    if os.path.isdir("/dev/pts"):
        _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    _loopback_up()
    os.chdir("/tmp")
    os.umask(0o022)
    os.environ.clear()
    os.environ.update(env)
    for target, fd in enumerate(pipes):
        os.dup2(fd, target)
    os.closerange(3, MAX_FD)
    if os.getpid() != 1:
        os._exit(FAILED_START)
    # A session of its own, led by the init as bwrap's init led it: the runner's session and process group
    # are 1, and its kill(0, sig) reaches only this sandbox.
    os.setsid()
    uid = int(request["uid"])
    runner = os.fork()
    if runner == 0:
        try:
            _drop_privileges(uid, program)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the change of credentials cleared it
            _set_name(os.path.basename(sys.executable).encode())  # as a fresh runner is named
            # setresuid without exec left the runner non-dumpable, where the fresh path's exec made it
            # dumpable again: as there, so /proc/self/* reads as on the fresh path (RLIMIT_CORE is 0 and
            # seccomp refuses ptrace, so nothing else follows from it).
            _prctl(PR_SET_DUMPABLE, 1)
        except BaseException:
            os._exit(FAILED_START)
        _run_runner()
    for fd in (0, 1, 2):
        os.close(fd)  # only the runner holds the pipes: its end is the session's end
    # The init stays root (so the candidate, another uid, cannot signal it) but keeps no capability.
    _drop_privileges(None, program)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(FAILED_START)
        if pid == runner:
            os._exit(_exit_code(status))


def _child(request: dict[str, Any], fds: list[int], program: bytes, env: dict[str, str], zygote_pid: int) -> None:
    """The session's monitor, forked by the zygote: never returns."""
    try:
        _set_name(b"sandbox-monitor")
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote_pid:
            os._exit(FAILED_START)
        os.setsid()  # out of the zygote's session and process group, which every sibling shares
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pipes, cgroup_fds = fds[:3], fds[3:]
        for fd in cgroup_fds:
            os.write(fd, b"0")
            os.close(fd)
        lim = request["rlimits"]
        resource.setrlimit(resource.RLIMIT_CPU, (int(lim["cpu"][0]), int(lim["cpu"][1])))
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(lim["fsize"]),) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(lim["nofile"]),) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (int(lim["nproc"]),) * 2)
        _check(libc.unshare(ctypes.c_int(UNSHARE_FLAGS)), "unshare")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        init = os.fork()
        if init == 0:
            try:
                _init(request, pipes, program, env)
            except BaseException:
                pass
            os._exit(FAILED_START)
        os.closerange(0, MAX_FD)
        # From here the monitor only waits: it keeps no capability and no way to gain one.
        _drop_privileges(None, program)
        while True:
            pid, status = os.waitpid(init, 0)
            if pid == init:
                os._exit(_exit_code(status))
    except BaseException:
        pass
    os._exit(FAILED_START)


class Server:
    def __init__(self, sock: socket.socket, program: bytes, env: dict[str, str]) -> None:
        self.sock = sock
        self.program = program
        self.env = env
        self.children: dict[int, str] = {}
        self.zygote_pid = os.getpid()

    def _forget(self) -> None:
        """In a freshly forked monitor: nothing of the siblings (their tokens and pids) and no socket object."""
        self.children.clear()
        self.children = {}
        self.sock.detach()  # the fd itself is closed with all the others before the init starts

    def send(self, message: dict[str, Any]) -> None:
        self.sock.send(json.dumps(message).encode())

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            token = self.children.pop(pid, None)
            if token is not None:
                self.send({"exited": token, "status": os.waitstatus_to_exitcode(status)})

    def handle(self, data: bytes, fds: list[int]) -> None:
        token = None
        try:
            request = json.loads(data)
            op = request.get("op")
            token = request.get("token")
            if op == "ping":
                self.send({"pong": request.get("n")})
                return
            if op != "fork" or type(token) is not str or len(fds) < 3:
                raise ValueError(f"malformed request {op!r} with {len(fds)} fds")
            pid = os.fork()
            if pid == 0:
                self._forget()
                _child(request, fds, self.program, self.env, self.zygote_pid)
                os._exit(FAILED_START)
            self.children[pid] = token
            self.send({"forked": token, "pid": pid})
        except OSError as exc:
            if exc.errno in (32, 104, 107):  # the host is gone
                raise
            self.send({"failed": token, "message": str(exc)[:500]})
        except (ValueError, TypeError, KeyError) as exc:
            self.send({"failed": token, "message": str(exc)[:500]})
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def serve(self) -> None:
        import select

        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if wake_r in events:
                try:
                    while os.read(wake_r, 256):
                        pass
                except BlockingIOError:
                    pass
            self.reap()
            if self.sock.fileno() in events:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, MAX_FDS)
                if not data:
                    return  # the host closed its end: end, and the sandboxes with us
                self.handle(data, list(fds))


def _warm_torch(torch: Any) -> None:
    """Pay torch's lazy first-use costs once, here, instead of in every session: the first optimizer built in a
    process imports torch._dynamo and sympy (about 1.4 s here), which the gan exercise's trusted builders
    (sandbox/builtins/gan.py) do in nearly every test. Trusted code on a throwaway parameter; it draws no
    random numbers and starts no thread (the single-thread check below would refuse the zygote otherwise)."""
    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    for optimizer in (torch.optim.SGD([param], lr=0.1), torch.optim.Adam([param], lr=0.1)):
        (param * 2.0).sum().backward()
        optimizer.step()
        optimizer.zero_grad()


def main() -> None:
    _set_name(b"grader-zygote")
    env = dict(os.environ)
    sock = socket.socket(fileno=int(sys.argv[1]))
    init = json.loads(sock.recv(1 << 20))
    program = bytes.fromhex(init["seccomp"])
    import numpy  # noqa: F401

    import sandbox.runner  # noqa: F401

    if os.environ.get("GRADER_TORCH") == "1":
        import torch

        torch.set_num_threads(1)
        _warm_torch(torch)
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        sock.send(json.dumps({"ready": False, "message": f"the zygote has {threads} threads"}).encode())
        sys.exit(1)
    sock.send(json.dumps({"ready": True, "pid": os.getpid(), "threads": threads}).encode())
    Server(sock, program, env).serve()


if __name__ == "__main__":
    main()
