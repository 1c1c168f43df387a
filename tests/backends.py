"""The real sandbox backends: a test that asks for `sandbox_backend` runs once on each (the hostile,
integrity and catalog suites). Registered as a plugin in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.grading import DEFAULT_BACKEND, backend_named


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def sandbox_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The backend `grade_submission` uses during this test. Docker without a daemon fails with the reason
    (deselect with -m 'not docker'); it is never skipped."""
    name: str = request.param
    backend_named(name)  # raises SandboxUnavailable, with what to run, when the backend cannot work here
    DEFAULT_BACKEND[0] = name
    try:
        yield name
    finally:
        DEFAULT_BACKEND[0] = "local"
