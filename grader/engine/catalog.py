"""The exercise catalog: one folder per problem under problems/, checked when loaded.

A problem folder holds `spec.toml` (title, version, limits, sandbox packages,
tests with points and categories), `statement.md`, `template.py` (the
candidate's starter file) and `plan.py` (the trusted test plan: one function
per test id, see grader/engine/plan.py). Its reference lives in reference/<id>.py.
Loading refuses an inconsistent folder with a message that says what to fix.
"""

from __future__ import annotations

import importlib
import logging
import tomllib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import get_args

from grader.engine.plan import Plan
from grader.engine.report import Category
from grader.errors import ProblemSpecError, UnknownProblem
from grader.isolation.base import SandboxLimits, SandboxSpec

log = logging.getLogger(__name__)

PROBLEMS_DIR = Path(__file__).resolve().parents[2] / "problems"
CATEGORIES = frozenset(get_args(Category))
AUTODIFF_MODULES = ("torch", "jax", "jaxlib", "autograd", "tensorflow", "mxnet", "chainer", "theano")


@dataclass(frozen=True)
class TestSpec:
    id: str
    name: str
    category: str
    points: float
    timeout_s: float
    hidden: bool = False


@dataclass(frozen=True)
class Problem:
    id: str
    title: str
    version: str
    statement: str
    template: str
    tests: tuple[TestSpec, ...]
    sandbox: SandboxSpec
    forbidden_imports: tuple[str, ...]
    from_scratch: bool
    budget_s: float
    import_timeout_s: float
    folder: Path = field(repr=False, compare=False)

    @cached_property
    def plan(self) -> Plan:
        """The trusted test plan, imported on first use: listing problems or grading one never pays for
        every plan's imports (torch for gan)."""
        return _load_plan(self.id, self.tests, self.folder)

    @property
    def max_score(self) -> float:
        return sum(t.points for t in self.tests)

    @property
    def test_count(self) -> int:
        return len(self.tests)


def _require(cond: bool, folder: Path, message: str) -> None:
    if not cond:
        raise ProblemSpecError(f"{folder.name}/spec.toml: {message}")


def load_problem(folder: Path) -> Problem:
    spec_path = folder / "spec.toml"
    try:
        raw = tomllib.loads(spec_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProblemSpecError(f"{spec_path}: {exc}") from None
    pid = raw.get("id", folder.name)
    _require(pid == folder.name, folder, f"id {pid!r} must match the folder name {folder.name!r}")
    for key in ("title", "version"):
        _require(isinstance(raw.get(key), str) and raw[key], folder, f"'{key}' is required (a string)")
    limits = raw.get("limits", {})
    sandbox_limits = SandboxLimits(**{k: v for k, v in limits.items() if k in SandboxLimits.__dataclass_fields__})
    default_timeout = float(limits.get("test_timeout_s", 10.0))
    tests = []
    seen: set[str] = set()
    for entry in raw.get("tests", []):
        unknown = set(entry) - {"id", "name", "category", "points", "timeout_s", "hidden"}
        _require(not unknown, folder, f"test {entry.get('id')!r} has unknown keys {sorted(unknown)}")
        tid = entry.get("id", "")
        _require(bool(tid) and tid not in seen, folder, f"test ids must be unique and non-empty (got {tid!r})")
        seen.add(tid)
        _require(entry.get("category") in CATEGORIES, folder,
                 f"test {tid!r}: category must be one of {sorted(CATEGORIES)}")
        _require(float(entry.get("points", -1)) >= 0, folder, f"test {tid!r}: 'points' must be >= 0")
        tests.append(TestSpec(id=tid, name=entry.get("name", tid), category=entry["category"],
                              points=float(entry["points"]), timeout_s=float(entry.get("timeout_s", default_timeout)),
                              hidden=bool(entry.get("hidden", False))))
    _require(bool(tests), folder, "no [[tests]]")
    _require((folder / "plan.py").is_file(), folder, "plan.py is missing")
    packages = tuple(raw.get("packages", ["numpy"]))
    from_scratch = bool(raw.get("from_scratch", "torch" not in packages))
    forbidden = tuple(raw.get("forbidden_imports", AUTODIFF_MODULES if from_scratch else ()))
    return Problem(
        id=pid, title=raw["title"], version=raw["version"],
        statement=(folder / raw.get("statement", "statement.md")).read_text(),
        template=(folder / raw.get("template", "template.py")).read_text(),
        tests=tuple(tests), sandbox=SandboxSpec(packages=packages, limits=sandbox_limits),
        forbidden_imports=forbidden, from_scratch=from_scratch,
        budget_s=float(limits.get("budget_s", 300.0)), import_timeout_s=float(limits.get("import_timeout_s", 10.0)),
        folder=folder)


def _load_plan(pid: str, tests: tuple[TestSpec, ...], folder: Path) -> Plan:
    """Import a problem's plan and check it has exactly one function per test of the spec."""
    module = importlib.import_module(f"problems.{pid}.plan")
    plan = getattr(module, "plan", None)
    _require(isinstance(plan, Plan), folder, "plan.py must define `plan = Plan()`")
    assert isinstance(plan, Plan)
    missing = [t.id for t in tests if t.id not in plan.tests]
    extra = sorted(set(plan.tests) - {t.id for t in tests})
    _require(not missing, folder, f"tests without a function in plan.py: {missing}")
    _require(not extra, folder, f"plan.py functions without a [[tests]] entry: {extra}")
    return plan


@lru_cache(maxsize=1)
def _catalog() -> tuple[dict[str, Problem], dict[str, str]]:
    """Problems that load, and the error of each folder that does not (one broken folder disables only itself)."""
    problems: dict[str, Problem] = {}
    errors: dict[str, str] = {}
    for folder in sorted(PROBLEMS_DIR.iterdir()):
        if (folder / "spec.toml").is_file():
            try:
                problems[folder.name] = load_problem(folder)
            except Exception as exc:  # a broken folder is a deployment bug: logged, listed, never served
                errors[folder.name] = f"{type(exc).__name__}: {exc}"
                log.error("problem %s is disabled: %s", folder.name, errors[folder.name])
    return problems, errors


def list_problems() -> list[Problem]:
    return list(_catalog()[0].values())


def catalog_errors() -> dict[str, str]:
    """Folders that failed to load, with why; the catalog tests require this to be empty."""
    return dict(_catalog()[1])


def get_problem(problem_id: str) -> Problem:
    problems, errors = _catalog()
    if problem_id in errors:
        raise ProblemSpecError(f"problem {problem_id!r} is unavailable: its folder is inconsistent")
    try:
        return problems[problem_id]
    except KeyError:
        known = ", ".join(problems) or "none"
        raise UnknownProblem(f"unknown problem {problem_id!r}; known problems: {known}") from None
