"""The host's view of a sandbox: backends, sessions, and the faults they report.

A backend starts sessions; a session is one single-use sandbox process speaking
the protocol in sandbox/wire.py. Everything here is backend-neutral: the local
(bubblewrap) backend, the Docker backend and the in-process fake differ only in
how the process is started and what isolation it reports.

    SandboxFault                   the sandbox, not the candidate's answer, failed
    ├── CallTimeout                a call ran past its time limit (the session is dead)
    ├── SandboxCrashed             the process exited, was killed, or ran out of memory
    └── ProtocolViolation          the process sent something that is not the protocol
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sandbox import wire
from sandbox.wire import Handle, Limits, TensorArray

__all__ = ["Handle", "TensorArray", "SandboxLimits", "SandboxSpec", "DockerOptions", "Isolation", "Reply",
           "CandidateError",
           "SandboxFault", "CallTimeout", "SandboxCrashed", "ProtocolViolation", "Session", "Backend",
           "PipeSession", "OutputCapture"]


@dataclass(frozen=True)
class SandboxLimits:
    """Per-submission limits; the problem spec may tighten or loosen them."""

    memory_mb: int = 1024
    max_processes: int = 32
    file_size_mb: int = 16
    tmp_size_mb: int = 64
    cpu_time_s: int = 900
    cpu_cores: float = 1.0  # CPU share (cgroup quota): a busy neighbour cannot take it, nor this sandbox more
    output_bytes: int = 64 * 1024
    open_files: int = 256
    start_timeout_s: float = 30.0
    max_reply_mb: float = 4.0  # one reply's bytes (header and arrays); decoded values never exceed it

    def wire_limits(self) -> Limits:
        return Limits(max_frame_bytes=int(self.max_reply_mb * (1 << 20)))


DEFAULT_IMAGES = {"numpy": "dl-grader/sandbox:numpy", "torch": "dl-grader/sandbox:torch"}


@dataclass(frozen=True)
class DockerOptions:
    """How the Docker backend reaches its daemon and what it starts; built from settings, or by a test."""

    pool_size: int = 2  # warm containers per image and limits; 0: every session starts a container (cold)
    docker_url: str | None = None  # None: DOCKER_HOST, else the default socket
    image_numpy: str = DEFAULT_IMAGES["numpy"]
    image_torch: str = DEFAULT_IMAGES["torch"]
    cgroup_root: str = "/sys/fs/cgroup"  # the host's cgroup file system, as this process sees it


@dataclass(frozen=True)
class SandboxSpec:
    """What a problem's sandbox contains: the packages the candidate may import, and the limits."""

    packages: tuple[str, ...] = ("numpy",)
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    @property
    def torch(self) -> bool:
        return "torch" in self.packages


@dataclass(frozen=True)
class Isolation:
    """What a backend actually enforces; goes into every report so a grade can be trusted or not."""

    backend: str
    enforced: tuple[str, ...]
    weaker: tuple[str, ...] = ()  # limits replaced by a weaker fallback, said out loud

    @property
    def full(self) -> bool:
        return not self.weaker


@dataclass
class CandidateError:
    """An exception raised by the candidate's code, as the sandbox described it."""

    type: str
    message: str
    traceback: str = ""
    line: int | None = None
    file: str | None = None
    missing: str | None = None

    @classmethod
    def from_wire(cls, info: Any) -> CandidateError:
        if type(info) is not dict:
            return cls("ProtocolError", "malformed error report")

        def text(key: str, cap: int = 4000) -> str:
            value = info.get(key, "")
            return value[:cap] if type(value) is str else ""

        line = info.get("line")
        return cls(type=text("type", 100) or "Exception", message=text("message"), traceback=text("traceback"),
                   line=line if type(line) is int else None, file=text("file", 200) or None,
                   missing=text("missing", 200) or None)

    def summary(self) -> str:
        where = f" ({self.file}, line {self.line})" if self.line and self.file and "line" not in self.message else ""
        return f"{self.type}: {self.message}{where}" if self.message else f"{self.type}{where}"


@dataclass
class Reply:
    ok: bool
    value: Any = None
    args_after: tuple[Any, ...] = ()
    error: CandidateError | None = None


def describe_exit(code: int | None, *, oom: bool, memory_mb: int) -> str:
    """What ended a sandbox, for the report: an OOM kill, no exit yet (None), a signal (-n, or 128 + n as a
    shell or an init reports it) or an exit status."""
    if oom:
        return f"the sandbox ran out of memory (limit {memory_mb} MB) and was killed"
    if code is None:
        return "the sandbox stopped answering"
    for number in (-code, code - 128):
        if number > 0:
            try:
                return f"the sandbox process was killed by signal {signal.Signals(number).name}"
            except ValueError:
                pass
    return f"the sandbox process exited with status {code}"


class SessionStartFailed(RuntimeError):
    """One session of a working backend could not be set up (a cgroup write refused, the gate pipe broken).

    Nothing of the candidate's ran: it is the grader's failure and a passing one, so it is neither the
    candidate's fault (a `SandboxFault`) nor a backend missing here for good (`SandboxUnavailable`). The engine
    records a grader fault, the report is incomplete, and the queue grades the submission again.
    """


class SandboxWithdrawn(RuntimeError):
    """The grader took the sandbox back (it is shutting down) while the candidate's code ran.

    Not a `SandboxFault`: the candidate did nothing wrong, so the engine records a grader fault and the
    submission is graded again, instead of a crash charged to the candidate.
    """


class SandboxFault(Exception):
    """The sandbox failed (hang, crash, garbage); the session cannot be used again."""

    kind = "error"


class CallTimeout(SandboxFault):
    kind = "timeout"


class SandboxCrashed(SandboxFault):
    kind = "crash"


class ProtocolViolation(SandboxFault):
    kind = "protocol"


class StandInRefused(Exception):
    """A stand-in handler's answer that the call cannot be run (its text is shown inside the sandbox)."""


StandInHandler = Callable[[str, list[Any], dict[str, Any]], Any]


class Session(Protocol):
    isolation: Isolation

    def load(self, files: dict[str, str], entry: str, timeout_s: float) -> Reply: ...

    def call(self, target: dict[str, Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, *,
             keep: list[int] | str | None = None, return_args: list[int] | None = None,
             timeout_s: float, wall_s: float | None = None) -> Reply: ...

    def call_many(self, target: dict[str, Any], cases: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], *,
                  keep: list[int] | str | None = None, stop_on_error: bool = False,
                  timeout_s: float, wall_s: float | None = None) -> list[Reply]: ...

    def getattr(self, handle: Handle, name: str, timeout_s: float, keep: bool = False,
                wall_s: float | None = None) -> Reply: ...

    def stand_in(self, names: Sequence[str], handler: StandInHandler, timeout_s: float) -> Reply: ...

    def cpu_seconds(self) -> float | None: ...

    def output(self) -> OutputCapture: ...

    def stray_processes(self) -> int: ...

    @property
    def dead(self) -> bool: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def start(self, spec: SandboxSpec) -> Session: ...


DRAIN_BYTES_PER_HOLD = 1 << 18
PIPE_MAX_BYTES = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size


class OutputCapture:
    """Drains the candidate's stdout/stderr pipe, keeping the first `cap` bytes and counting the rest.

    `take()` cuts what arrived since the last cut, so the engine can give each test its own output
    (and keep a hidden test's output from its submitter). It first reads what the pipe already holds:
    what the candidate printed before its reply is in the pipe by the time the reply is read, so it is
    the test's own, whether or not the drain thread has come round to it. The capture owns the pipe's
    read end and closes it at the pipe's end.
    """

    def __init__(self, fd: int | None, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.total = 0
        self._kept_taken = 0
        self._total_taken = 0
        self._lock = threading.Lock()
        self._fd = fd
        self._reading = threading.Lock()  # one reader at a time, and a chunk read is a chunk fed
        self._thread: threading.Thread | None = None
        if fd is not None:
            os.set_blocking(fd, False)
            self._thread = threading.Thread(target=self._drain, args=(fd,), daemon=True)
            self._thread.start()

    def _drain(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            try:
                poller.poll()  # readable, or the writers are gone (POLLHUP)
            except OSError:
                pass
            with self._reading:  # a bounded read per hold, so a flood never keeps `take()` waiting for long
                if not self._read_pending(DRAIN_BYTES_PER_HOLD, close=True):
                    return

    def _read_pending(self, max_bytes: int, close: bool) -> bool:
        """Feed what the pipe holds now, up to `max_bytes`; False at the pipe's end. Under `_reading`.

        Only the drain thread closes the pipe (`close`): it is the one polling it, and a number closed
        elsewhere could be reused by another file while it waits on it."""
        fd = self._fd
        if fd is None:
            return False
        read = 0
        while read < max_bytes:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return True
            except OSError:
                chunk = b""
            if not chunk:
                if close:
                    self._fd = None
                    os.close(fd)
                return False
            self.feed(chunk)
            read += len(chunk)
        return True

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            room = self.cap - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]
            self.total += len(chunk)

    def join(self, timeout_s: float = 1.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def take(self) -> tuple[bytes, int]:
        """(bytes kept, bytes printed) since the previous take, including what the pipe holds right now."""
        if self._thread is not None:
            with self._reading:
                # What was printed before the reply is in the pipe, whose capacity bounds it (1 MiB at most).
                self._read_pending(PIPE_MAX_BYTES, close=False)
        with self._lock:
            kept = bytes(self.kept[self._kept_taken:])
            printed = self.total - self._total_taken
            self._kept_taken, self._total_taken = len(self.kept), self.total
            return kept, printed



# A call may use `timeout_s` of the sandbox's CPU time; waiting (sleep, blocking reads) uses none, so a
# wall-clock backstop of WALL_FACTOR * timeout + WALL_SLACK_S ends a call that neither computes nor answers.
WALL_FACTOR = 2.0
WALL_SLACK_S = 10.0
CPU_POLL_S = 0.25


class _Budget:
    """The limit of one exchange: CPU seconds on the sandbox's own clock when it has one, else wall time.

    `wait()` is how long to block before looking again; it raises TimeoutError once the limit is spent.
    """

    def __init__(self, timeout_s: float, cpu_clock: Callable[[], float | None], wall_s: float | None = None) -> None:
        now = time.monotonic()
        self.cpu_clock = cpu_clock
        self.cpu_start = cpu_clock()  # None: this backend has no CPU clock, the limit is wall time
        self.timeout_s = max(0.0, timeout_s)
        if self.cpu_start is None:
            self.wall_deadline = now + min(self.timeout_s, wall_s if wall_s is not None else self.timeout_s)
        else:
            backstop = WALL_FACTOR * self.timeout_s + WALL_SLACK_S
            self.wall_deadline = now + min(backstop, wall_s if wall_s is not None else backstop)

    def wait(self) -> float:
        wall_left = self.wall_deadline - time.monotonic()
        if wall_left <= 0:
            raise TimeoutError
        if self.cpu_start is None:
            return wall_left
        used = (self.cpu_clock() or self.cpu_start) - self.cpu_start
        if used >= self.timeout_s:
            raise TimeoutError
        return max(0.01, min(wall_left, CPU_POLL_S, self.timeout_s - used))


class _DeadlineReader:
    """A file-like reader over a pipe fd that gives up when its budget is spent."""

    def __init__(self, fd: int, budget: _Budget) -> None:
        self.fd = fd
        self.budget = budget

    def read(self, n: int) -> bytes:
        poller = select.poll()  # not select(): an fd numbered 1024 or more would fail there
        poller.register(self.fd, select.POLLIN)
        while True:
            if poller.poll(self.budget.wait() * 1000):
                try:
                    return os.read(self.fd, min(n, 1 << 20))
                except BlockingIOError:
                    continue


class _DeadlineWriter:
    def __init__(self, fd: int, budget: _Budget) -> None:
        self.fd = fd
        self.budget = budget

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        while view:
            if not poller.poll(self.budget.wait() * 1000):
                continue
            try:
                written = os.write(self.fd, view[: 1 << 16])
            except BlockingIOError:
                continue
            view = view[written:]

    def flush(self) -> None:
        pass


def _is_error_pair(pair: Any) -> bool:
    return type(pair) is tuple and len(pair) == 2 and pair[0] is False


class PipeSession:
    """Speaks the protocol over two pipe fds; subclasses start and stop the process.

    Any fault kills the session (`_terminate`) before it is raised, so a session
    that raised SandboxFault never runs anything again.
    """

    isolation: Isolation

    def __init__(self, to_fd: int, from_fd: int, output: OutputCapture, limits: Limits) -> None:
        self._to = to_fd
        self._from = from_fd
        self._output = output
        self._limits = limits
        self._dead: SandboxFault | None = None
        self._stand_in: StandInHandler | None = None
        self._stand_in_names: frozenset[str] = frozenset()
        for fd in (to_fd, from_fd):
            os.set_blocking(fd, False)

    # subclass hooks ----------------------------------------------------------------
    def _terminate(self) -> None:
        raise NotImplementedError

    def _describe_death(self) -> str:
        return "the sandbox process exited"

    def stray_processes(self) -> int:
        return 0

    def cpu_seconds(self) -> float | None:
        """The sandbox's CPU clock, when the backend has one (time limits are then CPU seconds)."""
        return None

    # protocol ---------------------------------------------------------------------
    def _handshake(self, timeout_s: float) -> dict[str, Any]:
        header, _ = self._exchange(None, None, timeout_s, what="start-up", wall_s=timeout_s)
        if not header.get("ready"):
            self._fail(ProtocolViolation("the sandbox did not start correctly"))
        return header

    def _fail(self, fault: SandboxFault) -> None:
        if self._dead is None:
            self._dead = fault
            self._terminate()
        raise fault

    def _exchange(self, request: dict[str, Any] | None, payload: Any, timeout_s: float,
                  what: str = "call", wall_s: float | None = None) -> tuple[dict[str, Any], Any]:
        if self._dead is not None:
            raise self._dead
        budget = _Budget(timeout_s, self.cpu_seconds, wall_s)
        try:
            writer = _DeadlineWriter(self._to, budget)
            if request is not None:
                wire.send(writer, request, payload)  # type: ignore[arg-type]
            while True:
                header, value = wire.receive(_DeadlineReader(self._from, budget), self._limits)  # type: ignore[arg-type]
                if "host_call" not in header:
                    return header, value
                self._answer_host_call(writer, header, value)
        except TimeoutError:
            clock = "CPU seconds" if budget.cpu_start is not None else "s"
            self._fail(CallTimeout(f"{what} did not finish within {timeout_s:.1f} {clock}"))
        except (EOFError, BrokenPipeError, ConnectionError):
            self._fail(SandboxCrashed(self._describe_death()))
        except wire.WireError as exc:
            self._fail(ProtocolViolation(f"malformed reply: {exc}"))
        raise AssertionError("unreachable")

    def _answer_host_call(self, writer: _DeadlineWriter, header: dict[str, Any], value: Any) -> None:
        """A stand-in proxy's call (sandbox/runner.py op_stand_in): only for names this session offered."""
        name = header.get("host_call")
        if self._stand_in is None or type(name) is not str or name not in self._stand_in_names:
            self._fail(ProtocolViolation("a call to the host that was not offered"))
        if type(value) is not tuple or len(value) != 2 or type(value[0]) is not list or type(value[1]) is not dict:
            self._fail(ProtocolViolation("malformed call to the host: not (args, kwargs)"))
        assert self._stand_in is not None and type(name) is str
        try:
            result = self._stand_in(name, value[0], value[1])
        except StandInRefused as exc:
            wire.send(writer, {"ok": False, "error": str(exc)})  # type: ignore[arg-type]
            return
        except Exception:  # a fault of the host's handler: the call is refused, the session goes on
            wire.send(writer, {"ok": False, "error": "the host could not run this call"})  # type: ignore[arg-type]
            return
        wire.send(writer, {"ok": True}, result)  # type: ignore[arg-type]

    def stand_in(self, names: Sequence[str], handler: StandInHandler, timeout_s: float) -> Reply:
        """Replace the submission's functions `names` by proxies whose calls `handler` answers on the host.

        The handler gets (name, args, kwargs) decoded under this session's caps, exactly as a reply is, and
        returns plain data or raises StandInRefused (its text becomes a StandInError inside). A session offers
        host calls only after this; a host call at any other time, or for another name, is a ProtocolViolation.
        """
        self._stand_in, self._stand_in_names = handler, frozenset(names)
        return self._reply(*self._exchange({"op": "stand_in", "names": list(names)}, None, timeout_s,
                                           what="installing stand-ins"))

    def _reply(self, header: dict[str, Any], value: Any) -> Reply:
        if header.get("ok") is True:
            if header.get("with_args"):
                if type(value) is not tuple or len(value) != 2 or type(value[1]) is not tuple:
                    self._fail(ProtocolViolation("malformed reply: the arguments after the call are missing"))
                return Reply(ok=True, value=value[0], args_after=value[1])
            return Reply(ok=True, value=value)
        return Reply(ok=False, error=CandidateError.from_wire(header.get("error")))

    def load(self, files: dict[str, str], entry: str, timeout_s: float) -> Reply:
        return self._reply(*self._exchange({"op": "load", "files": files, "entry": entry}, None, timeout_s,
                                           what="loading the submission"))

    def call(self, target: dict[str, Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, *,
             keep: list[int] | str | None = None, return_args: list[int] | None = None,
             timeout_s: float, wall_s: float | None = None) -> Reply:
        request: dict[str, Any] = {"op": "call", "target": target}
        if keep:
            request["keep"] = keep
        if return_args:
            request["return_args"] = return_args
        return self._reply(*self._exchange(request, (list(args), dict(kwargs or {})), timeout_s, wall_s=wall_s))

    def call_many(self, target: dict[str, Any], cases: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], *,
                  keep: list[int] | str | None = None, stop_on_error: bool = False,
                  timeout_s: float, wall_s: float | None = None) -> list[Reply]:
        """`call` on each (args, kwargs) case in order, in one exchange: one Reply per case.

        `timeout_s` (and `wall_s`) bound the whole batch: a case that hangs ends the session with a
        CallTimeout, as a single call would. The reply is one frame, decoded under the same caps as a single
        reply, so a batch can never bring in more than one reply may. A case that raised (or returned a value
        that cannot be sent) is that case's Reply(ok=False); with `stop_on_error` the list ends at the first
        such case and later cases never ran. A target the sandbox cannot resolve is one error Reply for
        every case (the first only, with `stop_on_error`).
        """
        if not cases:
            return []
        request: dict[str, Any] = {"op": "call_many", "target": target, "calls": len(cases)}
        if keep:
            request["keep"] = keep
        if stop_on_error:
            request["stop_on_error"] = True
        header, value = self._exchange(request, [(list(args), dict(kwargs)) for args, kwargs in cases], timeout_s,
                                       wall_s=wall_s)
        if header.get("ok") is not True:
            failed = self._reply(header, value)
            return [failed] if stop_on_error else [failed] * len(cases)
        if type(value) is not list or not value or len(value) > len(cases) or (
                len(value) < len(cases) and not (stop_on_error and _is_error_pair(value[-1]))) or (
                stop_on_error and any(_is_error_pair(pair) for pair in value[:-1])):
            self._fail(ProtocolViolation("malformed reply: a batch's results do not match its calls"))
        replies = []
        for pair in value:
            if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not bool:
                self._fail(ProtocolViolation("malformed reply: a batch's result is not an (ok, value) pair"))
            replies.append(Reply(ok=True, value=pair[1]) if pair[0]
                           else Reply(ok=False, error=CandidateError.from_wire(pair[1])))
        return replies

    def getattr(self, handle: Handle, name: str, timeout_s: float, keep: bool = False,
                wall_s: float | None = None) -> Reply:
        return self._reply(*self._exchange({"op": "getattr", "handle": handle.id, "name": name, "keep": keep},
                                           None, timeout_s, wall_s=wall_s))

    def output(self) -> OutputCapture:
        return self._output

    @property
    def dead(self) -> bool:
        """True once the session faulted or was closed; it never runs anything again."""
        return self._dead is not None

    def close(self) -> None:
        if self._dead is None:
            self._dead = SandboxCrashed("the session was closed")
        self._terminate()
