"""The fault suite's fixtures: the seed (replayable), what a test leaves behind, reading the store directly.

Every random choice of a fault test comes from `rng`, seeded by GRADER_FAULT_SEED (default DEFAULT_SEED); a
failing test prints the seed, so `GRADER_FAULT_SEED=<seed> pytest -m faults` replays its schedule.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

DEFAULT_SEED = 1313
SEED_KEY = pytest.StashKey[int]()


def fault_seed() -> int:
    raw = os.environ.get("GRADER_FAULT_SEED", "").strip()
    return int(raw) if raw else DEFAULT_SEED


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    value = fault_seed()
    request.node.stash[SEED_KEY] = value
    return value


@pytest.fixture
def rng(seed: int) -> random.Random:
    return random.Random(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and SEED_KEY in item.stash:
        report.sections.append(("fault seed", f"replay with GRADER_FAULT_SEED={item.stash[SEED_KEY]} "
                                              f"pytest {item.nodeid}"))
