"""Grading one submission: static findings, then every test of the plan against a sandbox.

The engine owns the sandbox's life: a session is started lazily, loaded with the
submission, and thrown away after any fault (hang, crash, garbage), so a fault
costs only the test it happened in. A submission that cannot even be imported
(syntax error, exit or hang at import) gets every test marked with that reason
instead of paying the import again for each test.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import grader
from grader.engine import notebook, rootcause, standins
from grader.engine.catalog import Problem, TestSpec, get_problem
from grader.engine.checks import static
from grader.engine.files import check_submission
from grader.engine.plan import CheckFailed, Context, stable_seed
from grader.engine.report import Environment, Finding, Output, ProblemRef, Report, RootCause, TestResult
from grader.engine.verdict import PASSED, Verdict
from grader.errors import GraderError
from grader.isolation.base import (
    WALL_FACTOR,
    WALL_SLACK_S,
    Backend,
    CallTimeout,
    SandboxFault,
    Session,
    StandInHandler,
    StandInRefused,
)

log = logging.getLogger(__name__)

GRADED_CATEGORIES_ZEROED_BY_AUTODIFF = ("backward", "gradient check")


DEFAULT_SEED = 20261123
MIN_ANALYSIS_S = 15.0  # the root-cause analysis may take this long, or twice as long as the grading took
MAX_STAND_IN_CALLS = 10_000  # per regrading of one test (root causes): a proxy called in a loop ends there


@dataclass(frozen=True)
class GradingOptions:
    """What the engine needs from its caller's configuration; the service builds it from its settings."""

    seed: int = DEFAULT_SEED
    submission_budget_s: float = 600.0
    test_timeout_cap_s: float | None = None
    import_timeout_cap_s: float | None = None
    max_code_bytes: int = 256 * 1024
    max_files: int = 16
    # Stop at the first test that loses points (`grader check-problem`: whether a mutant is killed, not its
    # grade). The report then holds the tests up to that one and is marked incomplete: never a grade.
    stop_at_first_loss: bool = False
    # Grade failed tests again with the reference standing in, to tell root causes from their followers
    # (grader/engine/rootcause.py); at most this many CPU seconds of sandbox time on top of the grading.
    root_causes: bool = True
    root_cause_budget_s: float = 60.0


@dataclass
class _Sessions:
    """Starts, loads and replaces sandboxes for one submission."""

    problem: Problem
    files: dict[str, str]
    entry: str
    backend: Backend
    import_timeout_s: float
    session: Session | None = None
    load_failure: str | None = None
    load_line: int | None = None
    started: int = 0
    outputs: list[Any] = field(default_factory=list)
    isolation: Any = None
    output_kept: int = 0
    pristine_session: Session | None = None
    faults: int = 0  # tests that timed out or ended their sandbox
    # Functions of the submission replaced by the reference's, and who answers their calls (root causes only).
    stand_ins: tuple[list[str], StandInHandler] | None = None

    def get(self) -> Session:
        if self.load_failure is not None:
            raise _LoadFailed(self.load_failure, self.load_line)
        if self.session is None:
            session = self.backend.start(self.problem.sandbox)
            self.started += 1
            self.isolation = session.isolation
            self.outputs.append(session.output())
            try:
                reply = session.load(self.files, self.entry, self.import_timeout_s)
            except CallTimeout:
                self.load_failure = (f"importing {self.entry} did not finish within "
                                     f"{self.import_timeout_s:.0f} s (slow or blocking code at import time)")
                raise _LoadFailed(self.load_failure, None) from None
            except SandboxFault as fault:
                self.load_failure = f"importing {self.entry} ended the sandbox: {fault}"
                raise _LoadFailed(self.load_failure, None) from None
            if not reply.ok:
                assert reply.error is not None
                session.close()
                self.load_failure = f"importing {self.entry} failed: {reply.error.summary()}"
                self.load_line = reply.error.line
                raise _LoadFailed(self.load_failure, self.load_line)
            if self.stand_ins is not None:
                names, handler = self.stand_ins
                try:
                    installed = session.stand_in(names, handler, self.import_timeout_s).ok
                except SandboxFault:
                    installed = False
                if not installed:
                    session.close()
                    self.load_failure = "the stand-ins could not be installed"
                    raise _LoadFailed(self.load_failure, None)
            self.session = session
        return self.session

    def pristine(self) -> Session:
        """A sandbox of the same kind that never loads the submission (for measurements it must not bend)."""
        if self.pristine_session is None or self.pristine_session.dead:
            self.pristine_session = self.backend.start(self.problem.sandbox)
        return self.pristine_session

    def discard(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session.output().join()  # everything it printed is in, so it is attributed to this test
            self.session = None

    def take_output(self) -> Output:
        """What the candidate printed since the last call; the output cap holds for the whole submission."""
        kept, printed = b"", 0
        for capture in self.outputs:
            k, p = capture.take()
            kept += k
            printed += p
        kept = kept[:max(0, self.problem.sandbox.limits.output_bytes - self.output_kept)]
        self.output_kept += len(kept)
        return Output(text=kept.decode("utf-8", errors="replace"), bytes_total=printed, truncated=printed > len(kept))


class _LoadFailed(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def _environment(settings: GradingOptions, backend: str, isolation: Any) -> Environment:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return ""

    return Environment(grader_version=grader.__version__, seed=settings.seed, sandbox_backend=backend,
                       isolation=list(isolation.enforced) if isolation else [],
                       isolation_weaker=list(isolation.weaker) if isolation else [],
                       python=platform.python_version(), numpy=version("numpy"), torch=version("torch"),
                       hypothesis=version("hypothesis"))


@dataclass
class _SubmissionBudget:
    """The submission's time budget: CPU seconds of its sandboxes, with a wall-clock backstop."""

    cpu_s: float
    wall_deadline: float
    cpu_used_s: float = 0.0

    @property
    def cpu_left_s(self) -> float:
        return max(0.0, self.cpu_s - self.cpu_used_s)


def _run_test(spec: TestSpec, sessions: _Sessions, settings: GradingOptions, problem: Problem,
              budget: _SubmissionBudget, called: set[str] | None = None,
              missing: dict[str, str] | None = None) -> TestResult:
    start = time.monotonic()
    timeout_s = min(spec.timeout_s, settings.test_timeout_cap_s or spec.timeout_s)
    cpu_budget_s = min(timeout_s, budget.cpu_left_s)
    deadline = min(start + WALL_FACTOR * timeout_s + WALL_SLACK_S, budget.wall_deadline)
    base = TestResult(id=spec.id, name=spec.name, category=spec.category, points=spec.points, earned=0.0,
                      hidden=spec.hidden, status="skipped")
    if cpu_budget_s <= 0 or deadline - start <= 0:
        return base.model_copy(update=dict(
            fault="candidate",
            message=f"not run: the submission's time budget of {problem.budget_s:.0f} s of CPU time was used up"))
    ctx = Context(test_id=spec.id, seed=stable_seed(settings.seed, problem.id, problem.version), deadline=deadline,
                  _session_factory=sessions.get, cpu_budget_s=cpu_budget_s, _pristine_factory=sessions.pristine)
    verdict = _verdict_of(spec, problem, ctx, sessions, by_budget=cpu_budget_s < timeout_s, timeout_s=timeout_s)
    budget.cpu_used_s += ctx.cpu_used_s
    if called is not None:
        called |= ctx.called
    if missing is not None and verdict.missing:
        missing[spec.id] = verdict.missing
    details = dict(ctx.details)
    if verdict.line is not None:
        details["line"] = verdict.line
    message = verdict.message
    if ctx.notes and verdict.fault != "grader":
        message = "; ".join(filter(None, [message, *ctx.notes])) if verdict.kind != "passed" else "; ".join(ctx.notes)
    return base.model_copy(update=dict(
        earned=spec.points if verdict.earns_points else 0.0, status=verdict.kind, fault=verdict.fault,
        message=message, counterexample=verdict.counterexample, duration_s=round(time.monotonic() - start, 3),
        details=details, figures=ctx.figures))


def _verdict_of(spec: TestSpec, problem: Problem, ctx: Context, sessions: _Sessions, by_budget: bool,
                timeout_s: float) -> Verdict:
    """Run one test function and say what happened; decided by exception type, never by message text."""
    try:
        problem.plan.tests[spec.id](ctx)
        return PASSED
    except _LoadFailed as exc:
        return Verdict("error", str(exc), fault="candidate", line=exc.line)
    except CheckFailed as exc:
        return exc.verdict
    except CallTimeout as exc:
        sessions.faults += 1
        sessions.discard()
        log.info("test %s/%s timed out; its sandbox is replaced", problem.id, spec.id,
                 extra={"event": "sandbox.restarted", "test": spec.id, "reason": "timeout"})
        limit = ("the submission's time budget" if by_budget
                 else f"its limit of {timeout_s:.0f} s of CPU time (or {WALL_FACTOR * timeout_s + WALL_SLACK_S:.0f} s "
                      "of wall-clock time for code that waits)")
        return Verdict("timeout", f"the candidate's code did not return within {limit} (an infinite loop or very "
                       "slow code?)", fault="candidate", counterexample=getattr(exc, "counterexample", None))
    except SandboxFault as exc:  # crashed, killed, or sent something that is not the protocol: the candidate's doing
        sessions.faults += 1
        sessions.discard()
        log.info("test %s/%s ended its sandbox (%s); it is replaced", problem.id, spec.id, exc,
                 extra={"event": "sandbox.restarted", "test": spec.id, "reason": "fault"})
        return Verdict("error", f"{exc}; the test was stopped", fault="candidate",
                       counterexample=getattr(exc, "counterexample", None))
    except GraderError:
        raise
    except Exception as exc:  # a bug in a plan or a check: the grader's fault, never the candidate's
        log.exception("test %s/%s crashed in the grader", problem.id, spec.id)
        sessions.discard()  # the sandbox may be mid-call; start the next test from a clean one
        return Verdict("error", f"the grader failed in this test ({type(exc).__name__}); this is not the "
                       "candidate's doing and the report is incomplete until it is graded again", fault="grader")


def _lost(result: TestResult) -> bool:
    return result.earned < result.points and result.fault == "candidate" and result.status in ("failed", "error",
                                                                                                "timeout")


def _root_causes(problem: Problem, files: dict[str, str], entry: str, backend: Backend, settings: GradingOptions,
                 results: list[TestResult], called: dict[str, set[str]], missing: dict[str, str],
                 budget: _SubmissionBudget, import_timeout_s: float,
                 graded_in_s: float) -> tuple[list[TestResult], list[RootCause]]:
    """Which failures follow from another's (grader/engine/rootcause.py); the points stay as graded.

    A test that failed because a name the exercise asks for is missing is left out, as root and as follower: its
    message already names the cause, and a stand-in for a function the submission never wrote explains nothing
    (an unfinished submission would otherwise pay a regrading for each of its missing functions). A NameError for
    any other name (a typo inside the candidate's own function) is a mistake like another and stays in."""
    asked_for = standins.reference_names(problem.id)
    failed = [r for r in results if _lost(r) and missing.get(r.id) not in asked_for]
    if len(failed) < 2:
        return results, []
    standable = standins.reference_functions(problem.id)
    used_by_passed = set().union(*(called.get(r.id, set()) for r in results if r.status == "passed"))
    failures = [rootcause.Failure(r.id, standins.with_partners(frozenset(called.get(r.id, set()) & standable),
                                                               standable), retry=r.status != "timeout")
                for r in failed]
    if not any(f.functions for f in failures):
        return results, []
    specs = {spec.id: spec for spec in problem.tests}
    worker = standins.StandInWorker(problem.id, problem.sandbox.limits.wire_limits())
    # Within what is left of the submission's own budget, CPU and wall clock alike, and never longer than the
    # grading itself took, twice (at least 15 s): the analysis at most triples a submission's time.
    cpu_s = min(settings.root_cause_budget_s, budget.cpu_left_s)
    analysis_budget = _SubmissionBudget(cpu_s=cpu_s, wall_deadline=min(
        budget.wall_deadline, time.monotonic() + min(WALL_FACTOR * cpu_s + WALL_SLACK_S,
                                                     max(MIN_ANALYSIS_S, 2 * graded_in_s))))

    def regrade(test_id: str, functions: frozenset[str]) -> tuple[bool, frozenset[str]]:
        if analysis_budget.cpu_left_s <= 0 or time.monotonic() >= analysis_budget.wall_deadline:
            raise rootcause.OutOfBudget
        used: set[str] = set()
        calls = 0

        def handler(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
            nonlocal calls
            calls += 1
            if calls > MAX_STAND_IN_CALLS:
                raise StandInRefused(f"more than {MAX_STAND_IN_CALLS} stand-in calls in one test")
            used.add(name)
            return worker(name, args, kwargs)

        names = sorted(functions)
        sessions = _Sessions(problem, files, entry, backend, import_timeout_s, stand_ins=(names, handler))
        try:
            result = _run_test(specs[test_id], sessions, settings, problem, analysis_budget)
        except GraderError:  # the sandbox backend itself went away: what is known so far stands
            raise rootcause.OutOfBudget from None
        finally:
            sessions.discard()
            if sessions.pristine_session is not None:
                sessions.pristine_session.close()
        if result.fault == "grader":
            raise rootcause.OutOfBudget
        return result.status == "passed", frozenset(used)

    started = time.monotonic()
    try:
        follows = rootcause.analyse(failures, regrade)
    finally:
        worker.close()
    log.info("root causes of %s: %d follower(s) in %.1fs", problem.id, len(follows), time.monotonic() - started,
             extra={"event": "root_causes", "followers": len(follows)})
    if not follows:
        return results, []
    by_id = {r.id: r for r in results}
    # Shown: a root's functions that no passed test used (the rest of its unit, if that leaves none).
    suspects = {f.test_id: (f.functions - used_by_passed) or f.functions for f in failures}
    roots: dict[str, list[str]] = {}
    for follower, sources in follows.items():
        for root in sources:
            roots.setdefault(root, []).append(follower)

    def lost(test_id: str) -> float:
        """A test's lost points; a follower of several roots shares its loss between them."""
        share = len(follows[test_id]) if test_id in follows else 1
        return (by_id[test_id].points - by_id[test_id].earned) / share

    causes = [RootCause(test=root, functions=sorted(suspects[root]),
                        followers=sorted(followers, key=list(by_id).index),
                        points_lost=round(sum(lost(t) for t in [root, *followers]), 6))
              for root, followers in roots.items()]
    causes.sort(key=lambda c: (-c.points_lost, list(by_id).index(c.test)))
    return [r.model_copy(update={"caused_by": follows[r.id]}) if r.id in follows else r for r in results], causes


def grade(problem_id: str, files: dict[str, str], *, backend: Backend, options: GradingOptions | None = None,
          entry: str = "solution.py") -> Report:
    """Grade one submission and return its report: the engine's one entry point, used by the CLI and the workers.

    `backend` runs the candidate's code (the caller chooses and owns it); `options` carries the caller's limits
    and master seed. Safe to call from several threads at once.
    """
    settings = options or GradingOptions()
    problem = get_problem(problem_id)
    _ = problem.plan  # import and check the plan before any sandbox starts: an inconsistent one is a grader fault
    # A notebook comes back converted into the entry script (grader.engine.notebook).
    files = check_submission(files, entry, max_files=settings.max_files, max_code_bytes=settings.max_code_bytes)
    backend_name = backend.name
    started = time.monotonic()
    findings: list[Finding] = []
    syntax = static.parse_error(files, entry)
    findings += static.forbidden_imports(files, problem.forbidden_imports)
    import_timeout_s = min(problem.import_timeout_s, settings.import_timeout_cap_s or problem.import_timeout_s)
    sessions = _Sessions(problem, files, entry, backend, import_timeout_s)
    results: list[TestResult] = []
    called: dict[str, set[str]] = {}
    missing: dict[str, str] = {}  # test -> the name it failed for lacking
    stopped_at: str | None = None
    if syntax is not None:
        findings.insert(0, syntax)
        sessions.load_failure, sessions.load_line = syntax.message, syntax.line
    budget_s = min(problem.budget_s, settings.submission_budget_s)
    budget = _SubmissionBudget(cpu_s=budget_s, wall_deadline=started + WALL_FACTOR * budget_s + WALL_SLACK_S)
    try:
        for spec in problem.tests:
            result = _run_test(spec, sessions, settings, problem, budget, called.setdefault(spec.id, set()), missing)
            if sessions.session is not None and (sessions.session.dead or spec.hidden):
                # Faulted inside a test that still reached a verdict; or a hidden test, whose output must all
                # be counted as its own (the next test starts from a fresh sandbox).
                sessions.discard()
            results.append(result.model_copy(update={"output": sessions.take_output()}))
            session = sessions.session
            if session is not None:
                strays = session.stray_processes()
                if strays:
                    findings.append(Finding(kind="stray-process", severity="warning",
                                            message=f"{strays} process(es) started during '{spec.id}' were still "
                                                    "running after the test and were killed"))
            if settings.stop_at_first_loss and result.earned < spec.points:
                stopped_at = spec.id
                break
    finally:
        sessions.discard()
        if sessions.pristine_session is not None:
            sessions.pristine_session.close()
    if sessions.load_failure and syntax is None:
        findings.append(Finding(kind="import-error", severity="error", message=sessions.load_failure,
                                line=sessions.load_line))
    if sessions.isolation is not None and sessions.isolation.weaker:
        for text in sessions.isolation.weaker:
            findings.append(Finding(kind="sandbox", severity="warning", message=f"weaker sandbox: {text}"))
    if problem.from_scratch and any(f.kind == "forbidden-import" for f in findings):
        for i, result in enumerate(results):
            if result.category in GRADED_CATEGORIES_ZEROED_BY_AUTODIFF and result.earned:
                results[i] = result.model_copy(update={
                    "earned": 0.0, "status": "failed", "fault": "candidate",
                    "message": "scored zero: the submission imports an autodiff library in a numpy-only exercise"})
    root_causes: list[RootCause] = []
    autodiff_zeroed = problem.from_scratch and any(f.kind == "forbidden-import" for f in findings)
    # Root causes explain wrong values, never a hang, a crash or a flood of output: those submissions would pay
    # for their misbehaviour again in every regrading.
    misbehaved = sessions.faults > 0 or any(r.output.truncated for r in results)
    if (settings.root_causes and not settings.stop_at_first_loss and sessions.load_failure is None
            and not problem.sandbox.torch and not autodiff_zeroed and not misbehaved
            and not any(r.fault == "grader" for r in results)):
        results, root_causes = _root_causes(problem, files, entry, backend, settings, results, called, missing,
                                            budget, import_timeout_s, time.monotonic() - started)
    grader_faults = [r.id for r in results if r.fault == "grader"]
    error = (f"the grader failed in {len(grader_faults)} test(s) ({', '.join(grader_faults)}); their points are "
             "not the candidate's loss, and the submission must be graded again" if grader_faults else None)
    if stopped_at is not None:
        error = (error + "; " if error else "") + (f"stopped at '{stopped_at}', the first test that lost points "
                                                   "(stop_at_first_loss): not a grade")
    report = Report(
        problem=ProblemRef(id=problem.id, version=problem.version), status="incomplete" if error else "graded",
        error=error,
        score=round(sum(r.earned for r in results), 6), max_score=problem.max_score, tests=results,
        findings=findings, output=Output.join([r.output for r in results]), root_causes=root_causes,
        environment=_environment(settings, backend_name, sessions.isolation),
        duration_s=round(time.monotonic() - started, 3))
    report = notebook.annotate(report, files, entry)  # a converted notebook: its cells named beside its lines
    log.info("graded %s: %s/%s in %.1fs (%d sandbox(es))", problem.id, report.score, report.max_score,
             report.duration_s, sessions.started)
    return report

