"""The reference standing in for a submission's functions, in a process of its own.

The root-cause analysis (grader/engine/rootcause.py) grades a failed test again with some of the
candidate's functions replaced by the reference's. Reference code never enters a sandbox
(DESIGN.md), so the sandbox gets proxies (sandbox/runner.py `op_stand_in`) whose calls come to the
host, and the host hands them to this worker: `python -m grader.engine.standins PROBLEM`, a child
that imports `reference.<PROBLEM>` and nothing of the grader's state.

The arguments of those calls are chosen by the candidate's code, so they are hostile: a padding of
10**6 or a shape that asks for gigabytes must not cost the grader's own process anything. The worker
therefore runs with an address-space limit and a CPU-time limit of its own, each call has a
wall-clock limit, the host decodes its answers under the problem's wire caps, and anything that goes
wrong (a limit, a crash, an answer that is not the protocol) ends the worker and answers the proxy
with `StandInRefused`: the test then simply does not pass with the stand-in, and no root cause is
claimed. A stand-in reports what it did to its arguments as well (running statistics written into
a dict, parameters updated in place) and the proxy writes that back into the candidate's objects.

Frames are sandbox/wire.py's: {"call": name} with (args, kwargs); the answer {"ok": true} with
(result, args_after, kwargs_after), or {"ok": false, "error": text}.
"""

from __future__ import annotations

import importlib
import inspect
import os
import resource
import subprocess
import sys
from types import ModuleType
from typing import Any

from grader.isolation.base import StandInRefused, _Budget, _DeadlineReader, _DeadlineWriter
from sandbox import wire

ADDRESS_SPACE_BYTES = 4 * 1024**3  # torch's import alone maps well over 1 GB of address space
CPU_SECONDS = 120
CALL_TIMEOUT_S = 20.0
START_TIMEOUT_S = 60.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def public_functions(module: ModuleType) -> frozenset[str]:
    """The functions a reference module defines itself (no classes, nothing private or imported)."""
    return frozenset(name for name, value in vars(module).items()
                     if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_"))


def reference_functions(problem_id: str) -> frozenset[str]:
    """The functions of `reference/<problem_id>.py` that can stand in for a submission's own."""
    return public_functions(importlib.import_module(f"reference.{problem_id}"))


def with_partners(names: frozenset[str], available: frozenset[str]) -> frozenset[str]:
    """`names` and the other half of each forward/backward pair among them: a backward reads its own forward's
    cache, so the reference's backward can only stand in beside the reference's forward (and the other way)."""
    partners = {name.replace("forward", "backward") if "forward" in name else name.replace("backward", "forward")
                for name in names}
    return names | (frozenset(partners) & available)


class StandInWorker:
    """The host's end: starts the worker on first use, answers stand-in calls, ends it on any doubt."""

    def __init__(self, problem_id: str, limits: wire.Limits) -> None:
        self.problem_id = problem_id
        self.limits = limits
        self.calls = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self.failure: str | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "grader.engine.standins", self.problem_id],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT,
                                     "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        header, _ = wire.receive(_DeadlineReader(proc.stdout.fileno(), _Budget(START_TIMEOUT_S, lambda: None)),  # type: ignore[arg-type]
                                 self.limits)
        if header.get("ready") is not True:
            raise StandInRefused("the reference worker did not start")
        return proc

    def __call__(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self.failure is not None:
            raise StandInRefused(self.failure)
        self.calls += 1
        try:
            if self._proc is None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            budget = _Budget(CALL_TIMEOUT_S, lambda: None)
            wire.send(_DeadlineWriter(proc.stdin.fileno(), budget), {"call": name}, (args, kwargs))  # type: ignore[arg-type]
            header, value = wire.receive(_DeadlineReader(proc.stdout.fileno(), budget), self.limits)  # type: ignore[arg-type]
        except StandInRefused as exc:
            self._give_up(str(exc))
            raise
        except (TimeoutError, EOFError, OSError, wire.WireError) as exc:
            reason = ("the reference took too long for these arguments" if isinstance(exc, TimeoutError)
                      else "the reference could not run these arguments")
            self._give_up(reason)
            raise StandInRefused(reason) from None
        if header.get("ok") is not True:
            raise StandInRefused(str(header.get("error", "the reference raised"))[:500])
        return value

    def _give_up(self, reason: str) -> None:
        self.failure = reason
        self.close()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
            self._proc = None


def _serve(problem_id: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    module = importlib.import_module(f"reference.{problem_id}")
    allowed = public_functions(module)
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a print in the reference can never corrupt a frame
    wire.send(proto_out, {"ready": True})
    while True:
        try:
            header, value = wire.receive(proto_in)
        except EOFError:
            return
        name = header.get("call")
        try:
            if name not in allowed:
                raise LookupError(f"no reference function {name!r}")
            args, kwargs = value
            result = getattr(module, name)(*args, **kwargs)
            wire.send(proto_out, {"ok": True}, (result, list(args), dict(kwargs)))
        except Exception as exc:  # the reference refused the arguments: the proxy raises it inside the sandbox
            wire.send(proto_out, {"ok": False, "error": f"the reference raised {type(exc).__name__}: {exc}"[:500]})


if __name__ == "__main__":
    _serve(sys.argv[1])
