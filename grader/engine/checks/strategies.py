"""Hypothesis strategies for grading: bounded, finite float64 inputs, shapes that expose bugs.

Elements are finite and bounded (`allow_nan=False, allow_infinity=False`); where
a function has a kink (ReLU at 0, max-pool ties) the strategies keep values away
from it, because a subgradient there is a convention, not a bug.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

BOUND = 3.0


def floats(lo: float = -BOUND, hi: float = BOUND) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def away_from_zero(margin: float = 0.05, bound: float = BOUND) -> st.SearchStrategy[float]:
    """Floats with |x| >= margin: ReLU-style kinks stay out of reach of finite differences."""
    return st.one_of(st.floats(margin, bound, width=64), st.floats(-bound, -margin, width=64))


def arrays(
    shape: tuple[int, ...] | st.SearchStrategy[tuple[int, ...]],
    elements: st.SearchStrategy[float] | None = None,
    unique: bool = False,
) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=elements if elements is not None else floats(), unique=unique)


def unique_spread(shape: tuple[int, ...], rng: np.random.Generator, gap: float = 0.1) -> np.ndarray:
    """Distinct values separated by at least `gap` (much more than a finite-difference step), shuffled."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n / 2) * gap + rng.uniform(0, gap / 4, size=n)
    return rng.permutation(values).reshape(shape)
