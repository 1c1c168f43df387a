"""Efficiency, reported rather than scored: the candidate's time next to the reference's on the same input.

An interviewer wants to read "vectorized" or "40x slower than im2col", not a
pass mark that depends on the machine. Both sides are timed as the best of a
few calls (the minimum is the least disturbed by other work on the machine);
the candidate's calls cross the sandbox, so the cost of a trusted no-op round
trip with the same arguments is subtracted. Ratios are rough (different
processes, shared cores) and are worded as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REPEATS = 5
BUDGET_S = 5.0  # per side: a very slow candidate gets fewer repeats, never a longer test
VECTORIZED_MAX_RATIO = 4.0  # within this factor of a vectorized reference, call it vectorized
FLOOR_S = 1e-6  # a time below the timer's resolution after subtracting the round trip


def best_time_s(fn: Callable[[], Any], repeats: int = REPEATS, budget_s: float = BUDGET_S) -> float:
    """Minimum wall time of fn() over up to `repeats` calls, stopping once budget_s is spent (at least one call)."""
    best = float("inf")
    spent = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        spent += elapsed
        if spent >= budget_s:
            break
    return best


@dataclass(frozen=True)
class SpeedComparison:
    """The candidate's and the reference's best times on the same input."""

    candidate_s: float
    reference_s: float
    round_trip_s: float = 0.0

    @property
    def ratio(self) -> float:
        """How many times slower the candidate is (below 1: faster)."""
        return self.candidate_s / max(self.reference_s, FLOOR_S)

    def verdict(self, reference_label: str) -> str:
        """A phrase for the report, e.g. '10-100x slower than the reference's im2col'.

        Only a class of the ratio goes into the message, so the same submission gets the same
        message on every run; the measured times go into the test's details.
        """
        if self.ratio <= VECTORIZED_MAX_RATIO:
            return f"vectorized: within {VECTORIZED_MAX_RATIO:g}x of the reference's {reference_label}"
        for low, high in ((VECTORIZED_MAX_RATIO, 10), (10, 100), (100, 1000)):
            if self.ratio <= high:
                return f"{low:g}-{high:g}x slower than the reference's {reference_label} (loops, not vectorized?)"
        return f"over 1000x slower than the reference's {reference_label} (loops, not vectorized?)"

    def details(self) -> dict[str, float]:
        """JSON-able figures for the report."""
        return {"candidate_ms": round(self.candidate_s * 1e3, 3), "reference_ms": round(self.reference_s * 1e3, 3),
                "sandbox_round_trip_ms": round(self.round_trip_s * 1e3, 3), "ratio": round(self.ratio, 2)}


def compare_speed(candidate: Callable[[], Any], reference: Callable[[], Any],
                  round_trip: Callable[[], Any] | None = None, repeats: int = REPEATS,
                  budget_s: float = BUDGET_S) -> SpeedComparison:
    """Time both sides on the same input; `round_trip` is a no-op call through the same channel as `candidate`."""
    overhead_s = best_time_s(round_trip, repeats, budget_s) if round_trip is not None else 0.0
    candidate_s = max(best_time_s(candidate, repeats, budget_s) - overhead_s, FLOOR_S)
    reference_s = max(best_time_s(reference, repeats, budget_s), FLOOR_S)
    return SpeedComparison(candidate_s, reference_s, overhead_s)
