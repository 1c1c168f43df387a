"""T3: finite differences of the candidate's own forward, against the candidate's own backward.

This is diagnosis rather than the main verdict: when the forward disagrees with
the reference but the backward agrees with finite differences of that same
forward, the math is right and a convention is wrong (gate order, flipped
kernel, sum vs mean). When the backward disagrees with its own forward, the
backward math is wrong.

`objective(inputs) -> float` is the candidate's forward contracted with a fixed
random upstream gradient, <upstream, f(inputs)>, computed through the sandbox.
Tiny inputs get full central differences; larger ones a few random
directional probes (v·J u with two forward calls each).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from grader.checks.compare import normwise_error
from grader.plan import CheckFailed

Objective = Callable[[dict[str, np.ndarray]], float]
STEP = 1e-6
FULL_MAX_ELEMENTS = 48
PROBES = 4
TOLERANCE = 1e-5


def _with(inputs: dict[str, np.ndarray], name: str, value: np.ndarray) -> dict[str, np.ndarray]:
    return {**inputs, name: value}


def numeric_gradient(objective: Objective, inputs: dict[str, np.ndarray], wrt: str, h: float = STEP) -> np.ndarray:
    """Full central differences of the objective with respect to one input."""
    x = inputs[wrt]
    grad = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += h
        minus[idx] -= h
        grad[idx] = (objective(_with(inputs, wrt, plus)) - objective(_with(inputs, wrt, minus))) / (2 * h)
    return grad


def directional_derivatives(objective: Objective, inputs: dict[str, np.ndarray], wrt: str, grad: np.ndarray,
                            rng: np.random.Generator, probes: int = PROBES,
                            h: float = STEP) -> list[tuple[float, float]]:
    """(finite difference, analytic) pairs along random unit directions."""
    x = inputs[wrt]
    pairs = []
    for _ in range(probes):
        u = rng.standard_normal(x.shape)
        u /= np.linalg.norm(u) or 1.0
        fd = (objective(_with(inputs, wrt, x + h * u)) - objective(_with(inputs, wrt, x - h * u))) / (2 * h)
        pairs.append((float(fd), float(np.sum(grad * u))))
    return pairs


def self_consistency(objective: Objective, inputs: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                     rng: np.random.Generator, what: str, tolerance: float = TOLERANCE,
                     full_max_elements: int = FULL_MAX_ELEMENTS,
                     verdict: str = "the backward math is wrong") -> dict[str, float]:
    """Check each candidate gradient against finite differences of the candidate's forward.

    Returns the error per input; raises CheckFailed naming the gradients that disagree.
    """
    errors: dict[str, float] = {}
    for name, grad in grads.items():
        if inputs[name].size <= full_max_elements:
            numeric = numeric_gradient(objective, inputs, name)
            errors[name] = normwise_error(grad, numeric)
        else:
            pairs = np.array(directional_derivatives(objective, inputs, name, grad, rng))
            errors[name] = normwise_error(pairs[:, 1], pairs[:, 0])
    wrong = [n for n, e in errors.items() if not e <= tolerance]
    if wrong:
        listed = ", ".join(f"d{n} (error {errors[n]:.1e})" for n in wrong)
        raise CheckFailed(f"{what}: {listed} disagree with finite differences of your own forward pass: {verdict}")
    return errors
