"""The tests' one way to grade: the engine's `grade` with a backend named by the test.

`backend="inprocess"` is the unisolated fake; only a test can ask for it, and only here.
"""

from __future__ import annotations

from grader.config import Settings
from grader.engine import grade
from grader.engine.report import Report
from grader.isolation import get_backend
from grader.isolation.base import Backend
from grader.isolation.inprocess import InProcessBackend

_INPROCESS = InProcessBackend()


def backend_named(name: str) -> Backend:
    return _INPROCESS if name == "inprocess" else get_backend(name)


def grade_submission(problem_id: str, files: dict[str, str], *, settings: Settings | None = None,
                     backend: str = "local", entry: str = "solution.py") -> Report:
    options = (settings or Settings()).grading_options()
    return grade(problem_id, files, backend=backend_named(backend), options=options, entry=entry)
