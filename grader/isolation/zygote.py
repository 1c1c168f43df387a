"""The host's side of the local sandbox's fork server (sandbox/zygote.py): one zygote per sandbox image.

A `Zygote` starts its bwrap process lazily, from its own reader thread (bwrap's --die-with-parent is tied to
the thread that started it, so that thread lives exactly as long as the zygote), in cgroups of its own under
CGROUP_PARENT. The reader thread dispatches every message: fork replies, exit notices, pongs. `fork` is
serialized by a lock and has a time limit. Anything in doubt (the process died, the socket errored or closed,
a reply was malformed, late or named an unknown token, a ping went unanswered) breaks the zygote for good:
its whole cgroup is killed and the backend starts a new one for the next session.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.isolation.base import OutputCapture
from grader.isolation.cgroups import Group

log = logging.getLogger(__name__)

ZYGOTE_MEMORY_MB = 4096
ZYGOTE_PIDS = 256
FORK_TIMEOUT_S = 30.0  # a fork takes milliseconds; this only bounds a zygote that stopped serving
PING_AFTER_IDLE_S = 30.0
PING_TIMEOUT_S = 15.0


class ZygoteError(RuntimeError):
    """The zygote could not fork a session; it is broken and will not be used again."""


@dataclass
class ForkedChild:
    """A session's first process, as the zygote reported it (its pid is in the zygote's PID namespace)."""

    token: str
    pid: int = 0
    status: int | None = None
    exited: threading.Event = field(default_factory=threading.Event)
    lost: str | None = None  # the zygote broke while this child ran (its processes die with the zygote)


@dataclass
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None


class Zygote:
    """One fork server. `command(fd)` is its bwrap command line, serving on socket fd `fd`;
    `launch(command, pass_fds, procs_files, stderr_fd)` starts it inside the cgroup whose `cgroup.procs` files
    are `procs_files` and returns the Popen; `cgroup(name)` makes that cgroup."""

    def __init__(self, name: str, command: Callable[[int], list[str]], seccomp_program: bytes,
                 launch: Callable[[list[str], tuple[int, ...], list[Path], int], subprocess.Popen[bytes]],
                 cgroup: Callable[[str], Group], start_timeout_s: float = 120.0) -> None:
        self.name = name
        self.owner = os.getpid()  # a process forked from the owner inherits this object, never the zygote
        self._command = command
        self._program = seccomp_program
        self._launch = launch
        self._make_cgroup = cgroup
        self.start_timeout_s = start_timeout_s
        self.cgroup: Group | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._stderr: OutputCapture | None = None
        self._lock = threading.Lock()  # one request at a time
        self._state = threading.Lock()
        self._ready = threading.Event()
        self._broken: str | None = None
        self.broken_at = 0.0
        self.was_ready = False
        self._children: dict[str, ForkedChild] = {}
        self._pending: dict[str, _Pending] = {}
        self._last_reply = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"zygote-{name}")
        self._thread.start()

    # state --------------------------------------------------------------------------
    @property
    def broken(self) -> str | None:
        return self._broken

    def _break(self, reason: str) -> None:
        with self._state:
            first = self._broken is None
            if first:
                self._broken = reason
                self.broken_at = time.monotonic()
            pending = list(self._pending.values())
            self._pending.clear()
            children = list(self._children.values())
            self._children.clear()
        if first and reason != "shut down":
            log.warning("sandbox zygote %s discarded: %s", self.name, reason)
        self._ready.set()
        for p in pending:
            p.event.set()
        for child in children:
            child.lost = reason
            child.exited.set()  # no status will come
        self._kill()

    def _kill(self) -> None:
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _ in range(100):
            pids = self._pids()
            if self.proc is not None and self.proc.poll() is None:
                pids.append(self.proc.pid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("sandbox zygote %s did not exit after SIGKILL", self.proc.pid)
        group, self.cgroup = self.cgroup, None
        if group is not None:
            group.remove(attempts=100)

    def _pids(self) -> list[int]:
        group = self.cgroup  # read once: _kill, on another thread, may drop it meanwhile
        return group.procs() if group is not None else []

    def discard(self, reason: str) -> None:
        """Break it from outside (a session it forked failed its set-up): in doubt, never used again."""
        if self.owner == os.getpid():
            self._break(reason)

    def shutdown(self) -> None:
        if self.owner != os.getpid():
            return  # the zygote of the process this one was forked from: not ours to stop
        self._break("shut down")
        if self._thread is not threading.current_thread():
            self._thread.join(5)

    # the reader thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._start()
            assert self._sock is not None
            while self._broken is None:
                data = self._sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("the zygote closed its socket")
                self._dispatch(data)
        except BaseException as exc:
            detail = ""
            if self._stderr is not None:
                self._stderr.join(0.2)
                detail = bytes(self._stderr.kept[-2000:]).decode(errors="replace").strip()
            self._break(f"{exc}" + (f" (its stderr: {detail})" if detail else ""))
        finally:
            # _break shut the socket down; it is closed under the request lock, so a request that is
            # sending on it never finds its fd number reused by another file in the meantime.
            if self._sock is not None:
                with self._lock:
                    self._sock.close()

    def _start(self) -> None:
        host, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._sock = host
            self.cgroup = self._make_cgroup(f"z{os.getpid()}-{secrets.token_hex(6)}")
            err_r, err_w = os.pipe()
            try:
                self.proc = self._launch(self._command(inside.fileno()), (inside.fileno(),), self.cgroup.procs_files,
                                         err_w)
            except BaseException:
                os.close(err_r)
                raise
            finally:
                os.close(err_w)
            self._stderr = OutputCapture(err_r, 16 * 1024)
        finally:
            inside.close()
        host.send(json.dumps({"op": "init", "seccomp": self._program.hex()}).encode())
        poller = select.poll()
        poller.register(host.fileno(), select.POLLIN)
        if not poller.poll(self.start_timeout_s * 1000):
            raise TimeoutError(f"the zygote was not ready within {self.start_timeout_s:g} s")
        data = host.recv(1 << 16)
        if not data:
            raise ConnectionError("the zygote exited before it was ready")
        message = json.loads(data)
        if type(message) is not dict or message.get("ready") is not True or message.get("threads") != 1:
            raise ValueError(f"the zygote did not start correctly: {message!r}")
        self._last_reply = time.monotonic()
        self.was_ready = True
        self._ready.set()

    def _dispatch(self, data: bytes) -> None:
        message = json.loads(data)
        if type(message) is not dict:
            raise ValueError(f"malformed message {data[:200]!r}")
        self._last_reply = time.monotonic()
        with self._state:
            if "exited" in message:
                child = self._children.pop(str(message["exited"]), None)
                status = message.get("status")
                if child is None or type(status) is not int:
                    raise ValueError(f"an exit notice for an unknown session: {message!r}")
                child.status = status
                child.exited.set()
                return
            key = next((k for k in ("forked", "failed", "pong") if k in message), None)
            pending = self._pending.pop(str(message[key]), None) if key else None
            if pending is None:
                raise ValueError(f"a reply nobody waits for: {message!r}")
            pending.reply = message
            pending.event.set()

    # requests ---------------------------------------------------------------------------
    def _request(self, token: str, message: dict[str, Any], fds: list[int], timeout_s: float) -> dict[str, Any]:
        pending = _Pending()
        with self._state:
            if self._broken is not None:
                raise ZygoteError(self._broken)
            self._pending[token] = pending
        assert self._sock is not None
        try:
            socket.send_fds(self._sock, [json.dumps(message).encode()], fds)
        except OSError as exc:
            self._break(f"could not send a request: {exc}")
            raise ZygoteError(f"could not send a request: {exc}") from exc
        if not pending.event.wait(timeout_s) or pending.reply is None:
            reason = self._broken or f"no reply within {timeout_s:g} s"
            self._break(reason)
            raise ZygoteError(reason)
        return pending.reply

    def _wait_ready(self) -> None:
        if not self._ready.wait(self.start_timeout_s + 5):
            self._break("not ready in time")
        if self._broken is not None:
            raise ZygoteError(self._broken)

    def ping(self, timeout_s: float = PING_TIMEOUT_S) -> None:
        with self._lock:
            self._wait_ready()
            n = secrets.token_hex(4)
            self._request(n, {"op": "ping", "n": n}, [], timeout_s)

    def fork(self, *, uid: int, rlimits: dict[str, Any], tmp_bytes: int, fds: list[int],
             timeout_s: float = FORK_TIMEOUT_S) -> ForkedChild:
        """A new sandbox whose pipes and cgroup.procs files are `fds`; the caller closes its copies."""
        with self._lock:
            self._wait_ready()
            if time.monotonic() - self._last_reply > PING_AFTER_IDLE_S:
                n = secrets.token_hex(4)
                self._request(n, {"op": "ping", "n": n}, [], PING_TIMEOUT_S)
            token = secrets.token_hex(8)
            child = ForkedChild(token)
            with self._state:
                self._children[token] = child  # registered first: the exit notice may come before the reply
            reply = self._request(token, {"op": "fork", "token": token, "uid": uid, "rlimits": rlimits,
                                          "tmp_bytes": tmp_bytes}, fds, timeout_s)
            if "forked" not in reply or type(reply.get("pid")) is not int:
                self._break(f"the fork failed: {reply.get('message', reply)!r}")
                raise ZygoteError(f"the fork failed: {reply.get('message', reply)!r}")
            child.pid = reply["pid"]
            return child
