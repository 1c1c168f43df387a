"""A busy grader holds many files: a sandbox whose pipes or socket are numbered past 1023 still works
(select() cannot watch such an fd; the transport polls)."""

from __future__ import annotations

import os
import resource

import pytest

from grader.engine.catalog import get_problem
from tests.grading import backend_named

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sandbox_backend")]


def test_a_session_with_fds_past_1023_works() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.fail(f"this test needs RLIMIT_NOFILE of at least 1200 (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler: list[int] = []
    try:
        while not filler or filler[-1] < 1030:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        session = backend_named().start(get_problem("mlp").sandbox)
        try:
            assert session.load({"solution.py": "def twice(x):\n    return 2 * x\n"}, "solution.py", 30).ok
            assert session.call({"fn": "twice"}, (21,), timeout_s=30).value == 42
        finally:
            session.close()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
