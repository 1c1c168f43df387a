"""The tests' one way to grade: the engine's `grade` with a backend named by the test.

`backend="inprocess"` is the unisolated fake; only a test can ask for it, and only here. Without a name,
the backend is the one the running test chose with the `sandbox_backend` fixture (tests/sandbox/conftest.py),
else `local`: the hostile and integrity suites run once per real backend.
"""

from __future__ import annotations

from dataclasses import replace

from grader.config import Settings
from grader.engine import grade
from grader.engine.report import Report
from grader.isolation import DockerOptions, get_backend
from grader.isolation.base import Backend
from grader.isolation.inprocess import InProcessBackend

_INPROCESS = InProcessBackend()
DEFAULT_BACKEND = ["local"]  # set by the sandbox_backend fixture for the test that asked for it
DOCKER = DockerOptions(pool_size=2)


def backend_named(name: str | None = None) -> Backend:
    name = name or DEFAULT_BACKEND[0]
    return _INPROCESS if name == "inprocess" else get_backend(name, docker=DOCKER)


def grade_submission(problem_id: str, files: dict[str, str], *, settings: Settings | None = None,
                     backend: str | None = None, entry: str = "solution.py", root_causes: bool = False) -> Report:
    """Without `root_causes` the verdicts alone (the analysis changes no points; tests/test_root_causes.py asks for
    it): the catalog's hundreds of gradings would otherwise pay its regradings for nothing they check."""
    options = replace((settings or Settings()).grading_options(), root_causes=root_causes)
    return grade(problem_id, files, backend=backend_named(backend), options=options, entry=entry)
