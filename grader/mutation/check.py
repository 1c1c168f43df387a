"""`grader check-problem ID`: an exercise proven by its mutants and its known-wrong solutions.

Each mutant of the reference (grader/mutation/operators.py) is first compared
with the reference on the problem's probe (grader/mutation/probes.py): equal
outputs everywhere means *equivalent*, and it is dropped. Every other mutant,
and every known-wrong solution (tests/solutions/<id>/wrong_*.py and lapse_*.py,
each of which must lose points), is graded by the engine. A mutant that loses
points is *killed*; one with full marks is a *survivor*, unless the problem's
[mutation] table accepts it with a reason (then it is shown apart, and counts
as killed by argument toward the floor).

Every job runs in its own forked process under a wall-clock limit and an
address-space limit, so a mutant that loops or allocates without end costs its
own job and nothing else: the in-process backend (the default: the mutated
code is our own reference) cannot stop a hang by itself. A job that hits the
wall-clock limit lost points in any real grading (its tests time out): killed.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import random
import resource
import sys
import time
import tomllib
import traceback
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import numpy as np

from grader.engine.catalog import get_problem
from grader.engine.grading import GradingOptions, grade
from grader.errors import ProblemSpecError
from grader.isolation.base import Backend
from grader.mutation import operators, probes

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS_DIR = ROOT / "tests" / "solutions"
REFERENCE_DIR = ROOT / "reference"

Outcome = Literal["equivalent", "killed", "survived", "accepted", "timeout", "crashed"]


@dataclass(frozen=True)
class Accept:
    """A survivor the problem accepts: by mutant id, or every survivor in one function; always with a reason."""

    reason: str
    id: str | None = None
    function: str | None = None

    def matches(self, mutant: operators.Mutant) -> bool:
        return mutant.id == self.id or (self.function is not None and mutant.function == self.function)


@dataclass(frozen=True)
class MutationConfig:
    """A problem's [mutation] table."""

    floor: float = 0.95
    timeout_s: float = 120.0          # wall clock of one job (probe and grading)
    test_timeout_s: float | None = None  # caps each test's time limit while grading mutants
    memory_mb: int = 4096             # address space of one job
    accept: tuple[Accept, ...] = ()


def load_config(problem_id: str) -> MutationConfig:
    problem = get_problem(problem_id)
    raw = tomllib.loads((problem.folder / "spec.toml").read_text()).get("mutation", {})
    known = {"floor", "timeout_s", "test_timeout_s", "memory_mb", "accept"}
    unknown = set(raw) - known
    if unknown:
        raise ProblemSpecError(f"{problem_id}/spec.toml [mutation]: unknown keys {sorted(unknown)} "
                               f"(known: {sorted(known)})")
    floor = float(raw.get("floor", 0.95))
    if not 0.0 <= floor <= 1.0:
        raise ProblemSpecError(f"{problem_id}/spec.toml [mutation]: floor must be in [0, 1] (got {floor})")
    accepts = []
    for entry in raw.get("accept", []):
        if not entry.get("reason") or bool(entry.get("id")) == bool(entry.get("function")):
            raise ProblemSpecError(f"{problem_id}/spec.toml [[mutation.accept]] {entry}: give a reason and exactly "
                                   "one of id (a mutant id printed by check-problem) or function")
        accepts.append(Accept(reason=entry["reason"], id=entry.get("id"), function=entry.get("function")))
    return MutationConfig(floor=floor, timeout_s=float(raw.get("timeout_s", 120.0)),
                          test_timeout_s=raw.get("test_timeout_s"), memory_mb=int(raw.get("memory_mb", 4096)),
                          accept=tuple(accepts))


@dataclass
class JobResult:
    kind: Literal["mutant", "known-wrong"]
    name: str
    outcome: Outcome
    score: float | None = None
    max_score: float | None = None
    lost: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    detail: str = ""
    mutant: operators.Mutant | None = None
    reason: str = ""


@dataclass
class CheckResult:
    problem_id: str
    floor: float
    generated: int
    mutants: list[JobResult]
    known_wrong: list[JobResult]
    duration_s: float
    stale_accepts: list[str]

    def count(self, *outcomes: Outcome) -> int:
        return sum(r.outcome in outcomes for r in self.mutants)

    @property
    def non_equivalent(self) -> int:
        return len(self.mutants) - self.count("equivalent")

    @property
    def kill_rate(self) -> float:
        """Mutants that lose points (a timeout or crash loses them too) / non-equivalent mutants."""
        return self.count("killed", "timeout", "crashed") / self.non_equivalent if self.non_equivalent else 1.0

    @property
    def kill_rate_with_accepted(self) -> float:
        """The floor's measure: accepted survivors count as killed by argument."""
        done = self.count("killed", "timeout", "crashed", "accepted")
        return done / self.non_equivalent if self.non_equivalent else 1.0

    @property
    def wrong_survivors(self) -> list[JobResult]:
        return [r for r in self.known_wrong if r.outcome == "survived"]

    @property
    def ok(self) -> bool:
        return not self.wrong_survivors and self.kill_rate_with_accepted >= self.floor


def known_wrong_solutions(problem_id: str) -> list[Path]:
    """wrong_*.py and lapse_*.py: each plants a mistake that must lose points (tests/solutions/mlp/README.md)."""
    folder = SOLUTIONS_DIR / problem_id
    return sorted([*folder.glob("wrong_*.py"), *folder.glob("lapse_*.py")])


def load_module(source: str, name: str) -> types.ModuleType:
    """A module run from source, registered while it runs (dataclasses look their module up)."""
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module
    try:
        exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    return module


def equivalent(problem_id: str, source: str) -> bool:
    """The definition used everywhere: the probe of `source` equals the probe of the reference (probes.same)."""
    probe = probes.PROBES[problem_id]
    reference = importlib.import_module(f"reference.{problem_id}")
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # a mutant's overflow is a value, not news
        warnings.simplefilter("ignore")
        try:
            mutant = load_module(source, f"mutant_{problem_id}")
        except Exception:  # does not even import: observably different
            return False
        return probes.same(probe(reference), probe(mutant))


BackendFactory = Callable[[], Backend]


def backend_factory(name: str) -> BackendFactory:
    def make() -> Backend:
        if name == "inprocess":
            from grader.isolation.inprocess import InProcessBackend

            return InProcessBackend()
        from grader.isolation import get_backend

        return get_backend(name)

    return make


def _child(conn: Connection, problem_id: str, source: str, probe_first: bool, make_backend: BackendFactory,
           options: GradingOptions, memory_mb: int) -> None:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        warnings.simplefilter("ignore")  # a mutant's overflow warnings are expected, and its verdict says enough
        if probe_first and equivalent(problem_id, source):
            conn.send({"outcome": "equivalent"})
            return
        if probe_first:  # a mutant: the first test it loses decides, the rest need not run
            first_loss = _first_loss(problem_id, source, make_backend(), options)
            conn.send({"outcome": "killed" if first_loss else "survived", "lost": first_loss[:1]})
            return
        report = grade(problem_id, {"solution.py": source}, backend=make_backend(), options=options)
        lost = [t.id for t in report.tests if t.earned < t.points]
        conn.send({"outcome": "killed" if report.score < report.max_score else "survived", "score": report.score,
                   "max_score": report.max_score, "lost": lost, "status": report.status})
    except BaseException:
        conn.send({"outcome": "crashed", "detail": traceback.format_exc(limit=3)[-800:]})
    finally:
        conn.close()
        os._exit(0)  # no atexit, no inherited cleanup: the parent owns everything it created


def _first_loss(problem_id: str, source: str, backend: Backend, options: GradingOptions) -> list[str]:
    """The plan's tests in the engine's order, stopping at the first that loses points: [its id], or [] when
    none does (the engine's `stop_at_first_loss`). A known-wrong solution is always graded in full by grade()
    (its findings can cost points)."""
    report = grade(problem_id, {"solution.py": source}, backend=backend,
                   options=dataclasses.replace(options, stop_at_first_loss=True))
    return [t.id for t in report.tests if t.earned < t.points][:1]


@dataclass
class _Job:
    kind: Literal["mutant", "known-wrong"]
    name: str
    source: str
    mutant: operators.Mutant | None = None


def _run_jobs(problem_id: str, jobs: Sequence[_Job], make_backend: BackendFactory, config: MutationConfig,
              n_jobs: int, progress: Callable[[JobResult], None]) -> list[JobResult]:
    ctx = multiprocessing.get_context("fork")
    options = GradingOptions(test_timeout_cap_s=config.test_timeout_s)
    results: dict[int, JobResult] = {}
    running: dict[int, tuple[Any, Connection, float]] = {}
    pending = list(enumerate(jobs))
    while pending or running:
        while pending and len(running) < n_jobs:
            index, job = pending.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_child, args=(send, problem_id, job.source, job.kind == "mutant",
                                                       make_backend, options, config.memory_mb), daemon=True)
            process.start()
            send.close()
            running[index] = (process, recv, time.monotonic())
        time.sleep(0.05)
        for index, (process, recv, started) in list(running.items()):
            job = jobs[index]
            elapsed = time.monotonic() - started
            reply: dict[str, Any] | None = None
            if recv.poll():
                try:
                    reply = recv.recv()
                except EOFError:
                    reply = {"outcome": "crashed", "detail": f"the job died (exit code {process.exitcode})"}
            elif not process.is_alive():
                reply = {"outcome": "crashed", "detail": f"the job died (exit code {process.exitcode})"}
            elif elapsed > config.timeout_s:
                process.kill()
                reply = {"outcome": "timeout", "detail": f"no verdict within {config.timeout_s:.0f} s"}
            if reply is None:
                continue
            process.join(5)
            recv.close()
            del running[index]
            result = JobResult(kind=job.kind, name=job.name, outcome=reply["outcome"], score=reply.get("score"),
                               max_score=reply.get("max_score"), lost=reply.get("lost", []),
                               duration_s=round(elapsed, 2), detail=reply.get("detail", ""), mutant=job.mutant)
            results[index] = result
            progress(result)
    return [results[i] for i in range(len(jobs))]


def select(mutants: list[operators.Mutant], max_mutants: int | None, seed: int) -> list[operators.Mutant]:
    """A seeded sample of at most max_mutants, kept in source order."""
    if max_mutants is None or max_mutants >= len(mutants):
        return mutants
    chosen = set(random.Random(seed).sample(range(len(mutants)), max_mutants))
    return [m for i, m in enumerate(mutants) if i in chosen]


def generate_mutants(problem_id: str) -> list[operators.Mutant]:
    problem = get_problem(problem_id)
    source = (REFERENCE_DIR / f"{problem_id}.py").read_text()
    return operators.generate(source, operators.contract_names(problem.template), f"{problem_id}.py")


def check_problem(problem_id: str, *, backend: str = "inprocess", max_mutants: int | None = None, seed: int = 0,
                  jobs: int = 1, known_wrong: bool | Sequence[str] = True,
                  progress: Callable[[JobResult], None] = lambda r: None) -> CheckResult:
    """Generate, filter, grade and count; see the module docstring.

    `known_wrong`: grade every known-wrong solution (True), none (False), or the files named.
    """
    started = time.monotonic()
    problem = get_problem(problem_id)
    if problem_id not in probes.PROBES:
        raise ProblemSpecError(f"problem {problem_id!r} has no equivalence probe in grader/mutation/probes.py")
    config = load_config(problem_id)
    _ = problem.plan  # imported once here, inherited by every forked job
    importlib.import_module(f"reference.{problem_id}")
    all_mutants = generate_mutants(problem_id)
    chosen = select(all_mutants, max_mutants, seed)
    work = [_Job("mutant", m.id, m.source, m) for m in chosen]
    if known_wrong:  # all of them, or the files named
        work += [_Job("known-wrong", p.name, p.read_text()) for p in known_wrong_solutions(problem_id)
                 if known_wrong is True or p.name in known_wrong]
    results = _run_jobs(problem_id, work, backend_factory(backend), config, max(1, jobs), progress)
    mutants = [r for r in results if r.kind == "mutant"]
    for r in mutants:
        assert r.mutant is not None
        if r.outcome == "survived":
            accept = next((a for a in config.accept if a.matches(r.mutant)), None)
            if accept is not None:
                r.outcome, r.reason = "accepted", accept.reason
    generated_ids = {m.id for m in all_mutants}
    stale = [a.id for a in config.accept if a.id is not None and a.id not in generated_ids]
    return CheckResult(problem_id=problem_id, floor=config.floor, generated=len(all_mutants), mutants=mutants,
                       known_wrong=[r for r in results if r.kind == "known-wrong"],
                       duration_s=round(time.monotonic() - started, 1), stale_accepts=stale)


EQUIVALENCE_NOTE = ("equivalent = every value the problem's probe observes (returns, and arguments after each call) "
                    f"equals the reference's within rtol = atol = {probes.RTOL:g} on fixed seeded inputs "
                    "(grader/mutation/probes.py)")


def render(result: CheckResult) -> str:
    lines = [f"check-problem {result.problem_id}: {result.generated} mutants generated, {len(result.mutants)} run, "
             f"{result.count('equivalent')} equivalent, {result.non_equivalent} graded",
             f"  ({EQUIVALENCE_NOTE})"]
    lost = result.count("killed", "timeout", "crashed")
    lines.append(f"killed {lost}/{result.non_equivalent} = {result.kill_rate:.1%} "
                 f"(of them {result.count('timeout')} by timeout, {result.count('crashed')} crashed); "
                 f"accepted survivors {result.count('accepted')}; survivors {result.count('survived')}")
    lines.append(f"kill rate with accepted survivors {result.kill_rate_with_accepted:.1%}, floor {result.floor:.0%}")
    for r in result.mutants:
        if r.outcome == "equivalent" and r.mutant is not None:
            lines.append(f"  equivalent {r.mutant.id} ({r.mutant.description}; {r.mutant.function}, "
                         f"line {r.mutant.line})")
    for r in result.mutants:
        if r.outcome == "crashed":
            lines.append(f"  crashed job {r.name}: {r.detail.strip().splitlines()[-1] if r.detail else ''}")
    for title, outcome in (("SURVIVOR", "survived"), ("accepted survivor", "accepted")):
        for r in result.mutants:
            if r.outcome != outcome:
                continue
            assert r.mutant is not None
            m = r.mutant
            lines.append(f"\n{title} {m.id} ({m.description}; {m.function}, line {m.line})"
                         + (f"\n  reason: {r.reason}" if r.reason else ""))
            lines.append(m.diff.rstrip())
    lines.append("")
    for r in result.known_wrong:
        verdict = "SURVIVED (full marks)" if r.outcome == "survived" else (
            f"loses points: {r.score}/{r.max_score}, {', '.join(r.lost)}" if r.outcome == "killed" else r.outcome)
        lines.append(f"known-wrong {r.name}: {verdict}")
    for stale in result.stale_accepts:
        lines.append(f"note: accepted survivor {stale} is no longer generated (the reference changed?)")
    lines.append(f"{'OK' if result.ok else 'FAILED'}: {result.problem_id} in {result.duration_s:.0f} s"
                 + ("" if not result.wrong_survivors else
                    f"; known-wrong solutions with full marks: {', '.join(r.name for r in result.wrong_survivors)}")
                 + ("" if result.kill_rate_with_accepted >= result.floor else
                    f"; kill rate {result.kill_rate_with_accepted:.1%} is under the floor {result.floor:.0%}"))
    return "\n".join(lines)
