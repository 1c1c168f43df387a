"""The test-plan API: what a problem's plan.py is written against.

A plan is a set of test functions, one per test id in spec.toml:

    plan = Plan()

    @plan.test("affine_forward")
    def affine_forward(ctx: Context) -> None:
        out, cache = ctx.call("affine_forward", x, w, b, keep=[1])
        ...
        raise CheckFailed("...")   # or return normally: the test passed

Test functions run in the trusted grader. They reach candidate code only
through `ctx` (each call crosses the sandbox boundary), compare with the
reference here, and fail by raising CheckFailed with a message an interviewer
can act on. Sandbox faults (hang, crash) propagate as SandboxFault: the engine
turns them into a timeout/error result for this test and starts a fresh sandbox
for the next one.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from grader.engine.report import Figure
from grader.engine.verdict import CheckFailed, Kind, Verdict
from grader.isolation.base import CandidateError, Handle, Reply, SandboxFault, Session

_R = TypeVar("_R")

__all__ = ["CheckFailed", "CandidateRaised", "Verdict", "Plan", "Context", "stable_seed", "describe_example"]

TestFunction = Callable[["Context"], None]
log = logging.getLogger(__name__)


def _ignore_local_constants() -> None:
    """Make generated cases independent of which modules happen to be loaded.

    Hypothesis mixes constants read from the source of every local module in
    sys.modules into its draws, so the cases (and the shrunk counterexample) of
    the same submission would change as a long-running server imports more of
    its own code. Grading must be reproducible, so the pool stays empty. This
    reaches into a private module: hypothesis is pinned exactly, and
    tests/test_checks.py fails if the behaviour comes back.
    """
    try:
        from hypothesis.internal.conjecture import providers

        empty = providers.Constants()  # type: ignore[attr-defined]
        providers._get_local_constants = lambda: empty
        providers._local_constants = empty
        providers.CONSTANTS_CACHE = type(providers.CONSTANTS_CACHE)(providers.CONSTANTS_CACHE.max_size)
    except (ImportError, AttributeError, TypeError) as exc:  # another hypothesis version
        log.warning("could not pin hypothesis's constant pool (%s): generated cases may vary", exc)


_ignore_local_constants()


_UNDEFINED_NAME = re.compile(r"name '([A-Za-z_][A-Za-z0-9_]*)' is not defined")


def missing_name(error: CandidateError) -> str | None:
    """The name the submission lacks, whoever looked it up: the grader (a function it calls) or the
    candidate's own code (a NameError, e.g. TwoLayerNet.loss calling an affine_backward that is not there)."""
    if error.missing:
        return error.missing
    found = _UNDEFINED_NAME.fullmatch(error.message) if error.type == "NameError" else None
    return found.group(1) if found else None


class CandidateRaised(CheckFailed):
    """The candidate's code raised an exception (kind "error"), or a name it must define is missing.

    A missing name is one verdict wherever it shows: `failed` (the candidate's fault, no points), with a
    message naming it, whether the grader calls it directly or the candidate's own code calls it.
    """

    def __init__(self, what: str, error: CandidateError) -> None:
        missing = missing_name(error)
        kind: Kind = "error"
        if error.missing:  # the grader looked it up
            message, kind = f"solution.py does not define `{missing}`", "failed"
        elif missing:
            where = f" ({error.file}, line {error.line})" if error.file and error.line else ""
            message, kind = f"solution.py does not define `{missing}`, which {what} calls{where}", "failed"
        elif error.type == "ReturnShape":
            message = f"{what}: {error.message}"
        else:
            message = f"{what} raised {error.summary()}"
        super().__init__(message, line=error.line, kind=kind)
        self.verdict = replace(self.verdict, missing=missing)
        self.error = error


class Plan:
    def __init__(self) -> None:
        self.tests: dict[str, TestFunction] = {}

    def test(self, test_id: str) -> Callable[[TestFunction], TestFunction]:
        def register(fn: TestFunction) -> TestFunction:
            if test_id in self.tests:
                raise ValueError(f"test {test_id!r} registered twice")
            self.tests[test_id] = fn
            return fn

        return register


def stable_seed(*parts: object) -> int:
    """A seed derived from the run's master seed and names: the same on every machine and run."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


@dataclass
class Context:
    """What a test function sees: the candidate (through the sandbox), seeds, and places to put findings.

    The test's time limit is `cpu_budget_s` of the sandbox's CPU time (measured by its cgroup, so a
    busy machine does not eat it), with `deadline` as the wall-clock backstop for code that waits.
    Backends without a CPU clock fall back to the wall clock.
    """

    test_id: str
    seed: int
    deadline: float
    _session_factory: Callable[[], Session]
    cpu_budget_s: float | None = None
    cpu_used_s: float = 0.0
    _pristine_factory: Callable[[], Session] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The submission's module-level names this test called (the root-cause analysis stands in for them).
    called: set[str] = field(default_factory=set)

    # randomness -----------------------------------------------------------------------
    def rng(self, name: str = "") -> np.random.Generator:
        return np.random.default_rng(stable_seed(self.seed, self.test_id, name))

    @property
    def wall_remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    @property
    def remaining_s(self) -> float:
        """The time the next call may use: CPU seconds left of the test's budget (wall seconds without a CPU clock)."""
        if self.cpu_budget_s is None:
            return self.wall_remaining_s
        return max(0.0, self.cpu_budget_s - self.cpu_used_s)

    def _metered(self, run: Callable[[Session, float], _R]) -> _R:
        """Run one exchange with the time it may use, and charge the sandbox CPU it used to this test."""
        session = self.session
        before = session.cpu_seconds()
        try:
            return run(session, self.remaining_s if before is not None else self.wall_remaining_s)
        finally:
            after = session.cpu_seconds()
            if before is not None and after is not None:
                self.cpu_used_s += max(0.0, after - before)

    # the candidate --------------------------------------------------------------------
    @property
    def session(self) -> Session:
        return self._session_factory()

    def raw_call(self, target: dict[str, Any], *args: Any, keep: list[int] | str | None = None,
                 return_args: list[int] | None = None, **kwargs: Any) -> Reply:
        self._note_called(target)
        return self._metered(lambda session, timeout_s: session.call(
            target, args, kwargs, keep=keep, return_args=return_args, timeout_s=timeout_s,
            wall_s=self.wall_remaining_s))

    def raw_call_many(self, target: dict[str, Any], cases: list[tuple[tuple[Any, ...], dict[str, Any]]], *,
                      keep: list[int] | str | None = None, stop_on_error: bool = False) -> list[Reply]:
        """raw_call on each (args, kwargs) case in one exchange; the test's remaining time bounds the whole batch."""
        self._note_called(target)
        return self._metered(lambda session, timeout_s: session.call_many(
            target, cases, keep=keep, stop_on_error=stop_on_error, timeout_s=timeout_s,
            wall_s=self.wall_remaining_s))

    def _note_called(self, target: dict[str, Any]) -> None:
        if type(target.get("fn")) is str:
            self.called.add(target["fn"])

    def _unwrap(self, what: str, reply: Reply) -> Any:
        if not reply.ok:
            assert reply.error is not None
            raise CandidateRaised(what, reply.error)
        return reply.value

    def call(self, fn: str, *args: Any, keep: list[int] | str | None = None, **kwargs: Any) -> Any:
        """Call a function of the submission; CheckFailed if it raises or is missing."""
        return self._unwrap(fn, self.raw_call({"fn": fn}, *args, keep=keep, **kwargs))

    def call_checked(self, fn: str, *args: Any, keep: list[int] | str | None = None,
                     arg_names: Iterable[str] = (), untouched: Iterable[bool] | None = None, **kwargs: Any) -> Any:
        """Like call, and fail if the function modified any of its array arguments in place.

        `untouched` (one flag per argument) limits the check to the flagged arguments.
        """
        names = list(arg_names) or [f"argument {i + 1}" for i in range(len(args))]
        flags = list(untouched) if untouched is not None else [True] * len(args)
        positions = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and flags[i]]
        reply = self.raw_call({"fn": fn}, *args, keep=keep, return_args=positions, **kwargs)
        value = self._unwrap(fn, reply)
        for pos, after in zip(positions, reply.args_after):
            before = args[pos]
            if not (isinstance(after, np.ndarray) and after.shape == before.shape
                    and np.array_equal(after, before, equal_nan=True)):
                raise CheckFailed(f"{fn} modified its input `{names[pos]}` in place; inputs must be left unchanged")
        return value

    def call_returning_args(self, fn: str, *args: Any, **kwargs: Any) -> tuple[Any, tuple[Any, ...]]:
        """Call and also get back the post-call values of every argument (for in-place updates)."""
        reply = self.raw_call({"fn": fn}, *args, return_args=list(range(len(args))), **kwargs)
        return self._unwrap(fn, reply), reply.args_after

    def new(self, cls: str, *args: Any, **kwargs: Any) -> Handle:
        """Construct an object of the submission's class; it stays in the sandbox."""
        obj = self._unwrap(f"{cls}(...)", self.raw_call({"fn": cls}, *args, keep="all", **kwargs))
        if not isinstance(obj, Handle):  # only a runner that is not ours answers a kept result with a value
            raise CheckFailed(f"{cls}(...) did not give an object that stays in the sandbox")
        return obj

    def method(self, obj: Handle, name: str, *args: Any, keep: list[int] | str | None = None, **kwargs: Any) -> Any:
        return self._unwrap(f"{obj.type}.{name}",
                            self.raw_call({"handle": obj.id, "method": name}, *args, keep=keep, **kwargs))

    def attr(self, obj: Handle, name: str, keep: bool = False) -> Any:
        """Read an attribute of an object in the sandbox (keep=True: get a handle to it instead of its value)."""
        return self._unwrap(f"{obj.type}.{name}",
                            self._getattr(obj, name, keep))

    def _getattr(self, obj: Handle, name: str, keep: bool) -> Reply:
        return self._metered(lambda session, timeout_s: session.getattr(obj, name, timeout_s=timeout_s, keep=keep,
                                                                        wall_s=self.wall_remaining_s))

    def helper(self, name: str, *args: Any, keep: list[int] | str | None = None, **kwargs: Any) -> Any:
        """Call trusted builder code shipped in sandbox/builtins (e.g. "gan:build_models")."""
        reply = self.raw_call({"helper": name}, *args, keep=keep, **kwargs)
        if not reply.ok:
            assert reply.error is not None
            raise CandidateRaised(f"setting up ({name})", reply.error)
        return reply.value

    def pristine_helper(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call a builtins helper in a sandbox that never loaded the submission: what the candidate cannot touch.

        For measurements the candidate must not be able to bend (the cost of a protocol round trip).
        """
        if self._pristine_factory is None:
            raise RuntimeError("this engine offers no pristine sandbox")
        session = self._pristine_factory()
        reply = session.call({"helper": name}, args, kwargs, timeout_s=max(1.0, self.wall_remaining_s),
                             wall_s=self.wall_remaining_s)
        if not reply.ok:
            raise RuntimeError(f"the pristine sandbox's helper {name} failed: {reply.error}")
        return reply.value

    # the report -------------------------------------------------------------------------
    def note(self, text: str) -> None:
        self.notes.append(text)

    def figure(self, figure: Figure) -> None:
        self.figures.append(figure)

    # properties ---------------------------------------------------------------------------
    def check_property(self, strategy: st.SearchStrategy[Any], check: Callable[[Any], None], *,
                       max_examples: int = 25, describe: Callable[[Any], str] | None = None) -> None:
        """Run `check` on hypothesis-generated cases; on failure, raise CheckFailed for the shrunk case.

        Grading profile: seeded by the run's seed and the test id (never by the grader's own source, which
        hypothesis's derandomize mode hashes: any edit of this function would reshuffle every generated
        case of every problem), no example database, no
        deadline, a fixed number of examples, so the same submission gets the same report.
        """
        # Only descriptions are kept while hypothesis shrinks: never the example's results or an exception
        # (whose traceback would hold every reply the candidate sent), so memory stays flat however
        # large and however many the failing replies are.
        show = describe or describe_example
        last_failure: list[Verdict] = []  # the latest (smallest) failure, with its case described
        first_failure: list[Verdict] = []
        first_fault: list[SandboxFault] = []
        # Anything else a check raises is not the candidate's doing: the grader failed, or took the sandbox
        # back (SandboxWithdrawn: a fork server killed under it). Hypothesis would replay the case, see it
        # pass in a fresh sandbox and call the candidate's code non-deterministic; it is raised as it is.
        not_theirs: list[Exception] = []

        class _Failing(Exception):
            pass

        class _Absent(BaseException):
            """A name the grader looked up is not in the submission: no case can pass, so hypothesis stops at
            the first (not an Exception: hypothesis lets it through without replaying or shrinking)."""

        # Hypothesis tells failures apart by exception type and raise site, and shrinks each kind on its own.
        # The original exception is not kept, so its kind is kept as a type of its own per raise site.
        kinds: dict[tuple[str, int, str], type[_Failing]] = {}

        def kind_of(exc: CheckFailed) -> type[_Failing]:
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            key = (tb.tb_frame.f_code.co_filename, tb.tb_lineno, type(exc).__name__) if tb else ("", 0, "")
            return kinds.setdefault(key, type("_Failing", (_Failing,), {}))

        def body(example: Any) -> None:
            if not_theirs:
                raise not_theirs[0]
            if first_fault:
                raise first_fault[0]  # the session is dead; do not start sandboxes while shrinking
            failure: Verdict | None = None
            failing: type[_Failing] = _Failing
            try:
                check(example)
            except SandboxFault as exc:
                exc.with_traceback(None)
                exc.counterexample = show(example)  # type: ignore[attr-defined]
                first_fault.append(exc)
            except CheckFailed as exc:
                if isinstance(exc, CandidateRaised) and exc.error.missing:
                    last_failure[:] = [exc.verdict]
                    raise _Absent from None
                failure = exc.verdict.with_counterexample(show(example))
                failing = kind_of(exc)
                del exc
            except Exception as exc:
                not_theirs.append(exc)
                raise
            if first_fault:
                raise first_fault[0]
            if failure is not None:
                last_failure[:] = [failure]
                first_failure[:] = first_failure or [failure]
                raise failing(failure.kind)

        runner = settings(derandomize=False, database=None, deadline=None, max_examples=max_examples,
                          suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, print_blob=False,
                          report_multiple_bugs=False,
                          phases=(Phase.explicit, Phase.generate, Phase.shrink))(
            seed(stable_seed(self.seed, self.test_id, "cases"))(given(strategy)(body)))
        try:
            try:
                runner()
            except Exception:
                if not_theirs:
                    raise not_theirs[0] from None
                raise
        except SandboxFault as exc:
            if last_failure:
                # A wrong answer was already found; the limit ran out while shrinking it. The verdict
                # stays a failure, with the smallest failing case found so far.
                raise CheckFailed.of(last_failure[-1].with_counterexample(
                    last_failure[-1].counterexample, " (shrinking stopped at the test's time limit)")) from None
            raise exc.with_traceback(None) from None
        except (_Failing, _Absent):
            raise CheckFailed.of(last_failure[-1]) from None
        except Flaky:
            # The same generated case failed once and passed when replayed: the candidate's answers
            # depend on something other than its inputs (an unseeded random draw, hidden state).
            detail = f" (first failure: {first_failure[0].message})" if first_failure else ""
            raise CheckFailed("the results change between calls with the same inputs: the code is not "
                              f"deterministic (an unseeded random draw, or state kept between calls?){detail}",
                              counterexample=first_failure[0].counterexample if first_failure else None) from None


def describe_example(example: Any, max_array: int = 24) -> str:
    """A short, readable rendering of a generated case: shapes and hyper-parameters first, small arrays in full."""

    def fmt(value: Any) -> str:
        if isinstance(value, np.ndarray):
            if value.size <= max_array:
                return np.array2string(value, precision=4, separator=", ", suppress_small=True).replace("\n", "")
            return f"array of shape {value.shape}"
        if isinstance(value, float):
            return f"{value:.6g}"
        return repr(value)

    if isinstance(example, dict):
        scalars = [f"{k}={fmt(v)}" for k, v in example.items() if not isinstance(v, np.ndarray)]
        shapes = [f"{k}.shape={v.shape}" for k, v in example.items() if isinstance(v, np.ndarray)]
        small = [f"{k}={fmt(v)}" for k, v in example.items() if isinstance(v, np.ndarray) and v.size <= max_array]
        return ", ".join(scalars + shapes + small)
    return fmt(example)
