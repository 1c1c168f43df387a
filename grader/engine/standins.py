"""The reference standing in for a submission's functions, in a process of its own.

The root-cause analysis (grader/engine/rootcause.py) grades a failed test again with some of the
candidate's functions replaced by the reference's. Reference code never enters a sandbox
(DESIGN.md), so the sandbox gets proxies (sandbox/runner.py `op_stand_in`) whose calls come to the
host, and the host hands them to a worker: grader/standin_worker.py, a child that imports numpy,
the wire format and `reference.<PROBLEM>`, and nothing of the grader's state.

The arguments of those calls are chosen by the candidate's code, so they are hostile: a padding of
10**4 or a shape that asks for gigabytes must not cost the grader's own process anything. The worker
therefore limits its own address space (1 GB, as a sandbox), CPU time and core files; each call has
a wall-clock limit; the host decodes its answers under twice the problem's reply cap (a result and
the arguments it changed); and anything that goes wrong (a limit, a crash, an answer that is not
the protocol) ends the worker and answers the proxy with `StandInRefused`: the test then does not
pass with the stand-in, and no root cause is claimed. The host also caps how many stand-in calls
one regrading may make.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from dataclasses import replace
from typing import Any

from grader.isolation.base import StandInRefused, _Budget, _DeadlineReader, _DeadlineWriter
from grader.standin_worker import public_functions
from sandbox import wire

CALL_TIMEOUT_S = 20.0
START_TIMEOUT_S = 30.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reference_functions(problem_id: str) -> frozenset[str]:
    """The functions of `reference/<problem_id>.py` that can stand in for a submission's own."""
    return public_functions(importlib.import_module(f"reference.{problem_id}"))


def reference_names(problem_id: str) -> frozenset[str]:
    """The public functions and classes `reference/<problem_id>.py` defines itself: the names a submission is
    asked for (a NameError for another name is a mistake inside the candidate's own code, not a missing part)."""
    module = importlib.import_module(f"reference.{problem_id}")
    return frozenset(name for name, value in vars(module).items()
                     if (inspect.isfunction(value) or inspect.isclass(value))
                     and value.__module__ == module.__name__ and not name.startswith("_"))


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
        # An answer carries the result and the arguments the call changed: at most about twice a reply.
        self.limits = replace(limits, max_frame_bytes=2 * limits.max_frame_bytes)
        self.calls = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self.failure: str | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "grader.standin_worker", self.problem_id],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT,
                                     "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        try:
            assert proc.stdin is not None and proc.stdout is not None
            os.set_blocking(proc.stdin.fileno(), False)
            os.set_blocking(proc.stdout.fileno(), False)
            header, _ = wire.receive(_DeadlineReader(proc.stdout.fileno(), _Budget(START_TIMEOUT_S, lambda: None)),  # type: ignore[arg-type]
                                     self.limits)
            if header.get("ready") is not True:
                raise StandInRefused("the reference worker did not start")
        except BaseException:
            self._end(proc)
            raise
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
            raise StandInRefused(str(header.get("error", "the reference raised"))[:200])
        return value

    def _give_up(self, reason: str) -> None:
        self.failure = reason
        self.close()

    @staticmethod
    def _end(proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def close(self) -> None:
        if self._proc is not None:
            self._end(self._proc)
            self._proc = None
