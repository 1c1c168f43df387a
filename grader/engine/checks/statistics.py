"""Statistical checks for stochastic code: fixed seeds, bounds at about five standard deviations.

At 5 sigma a correct implementation fails one check in about 3.5 million, and
with the fixed seeds a given submission always gets the same verdict.
"""

from __future__ import annotations

import math

from grader.engine.plan import CheckFailed

SIGMAS = 5.0


def binomial_bounds(n: int, p: float, sigmas: float = SIGMAS) -> tuple[float, float]:
    """Bounds on the observed fraction of n Bernoulli(p) draws."""
    sd = math.sqrt(max(p * (1 - p), 1e-12) / n)
    return p - sigmas * sd, p + sigmas * sd


def check_fraction(observed: float, n: int, p: float, what: str, hint: str = "") -> None:
    lo, hi = binomial_bounds(n, p)
    if not lo <= observed <= hi:
        raise CheckFailed(f"{what}: observed {observed:.4f} over {n} draws; expected {p:.4f} "
                          f"(5-sigma bounds {lo:.4f}..{hi:.4f}){'. ' + hint if hint else ''}")


def check_mean(observed: float, expected: float, sd: float, n: int, what: str, hint: str = "") -> None:
    """A sample mean of n draws with standard deviation sd."""
    half = SIGMAS * sd / math.sqrt(n)
    if not abs(observed - expected) <= half:
        raise CheckFailed(f"{what}: observed {observed:.4f}; expected {expected:.4f} +/- {half:.4f} (5 sigma)"
                          f"{'. ' + hint if hint else ''}")
