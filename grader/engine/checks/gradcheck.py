"""T3: finite differences of the candidate's own forward, against the candidate's own backward.

This is diagnosis rather than the main verdict: when the forward disagrees with
the reference but the backward agrees with finite differences of that same
forward, the math is right and a convention is wrong (gate order, flipped
kernel, sum vs mean). When the backward disagrees with its own forward, the
backward math is wrong.

`objective(inputs) -> float` is the candidate's forward contracted with a fixed
random upstream gradient, <upstream, f(inputs)>, computed through the sandbox.
A `BatchObjective` also evaluates a list of inputs at once: every perturbed input
of one gradient (up to 2 x 48) then costs one sandbox exchange instead of one each,
with the same perturbations, order and arithmetic.
Tiny inputs get full central differences; larger ones a few random
directional probes (v·J u with two forward calls each).

A gradient check of a constant proves nothing: a forward that ignores its
inputs (all zeros, say) has zero finite differences, and a backward of zeros
agrees with them. So the same probes are taken of the reference's objective on
the host, and wherever the reference's derivative is not zero the candidate's
forward must respond too, or the check fails. Non-finite values never pass.

A forward that answers in float32 (a lapse charged in its own test) rounds the
objective to about 1e-7 relative: central differences with a 1e-6 step would
turn that rounding into errors near 1e-2 and call a right backward wrong. Its
finite differences take the step and tolerance of its precision (`SETTINGS`):
with a 1e-3 step a right backward's error stays under 1e-3 (4.4e-4 at worst,
on mlp's net with a float32 affine layer; 4e-5 on the affine layer itself),
and a 1e-2 tolerance still rejects a backward off by a term or a factor.
The backward's values are graded strictly in its own test, against the
reference's vector-Jacobian product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.engine.checks.compare import normwise_error
from grader.engine.plan import CheckFailed

Objective = Callable[[dict[str, np.ndarray]], float]
STEP = 1e-6
FULL_MAX_ELEMENTS = 48
PROBES = 4
TOLERANCE = 1e-5

# (step, tolerance) of the finite differences for a forward answering in each floating dtype.
SETTINGS: dict[np.dtype[Any], tuple[float, float]] = {
    np.dtype(np.float64): (STEP, TOLERANCE),
    np.dtype(np.float32): (1e-3, 1e-2),
}


def settings_for(values: Iterable[Any]) -> tuple[float, float]:
    """(step, tolerance) for an objective built from these values: the lowest floating precision among them.

    Only arrays' and numpy scalars' own dtypes count (never a claim about them); anything else is float64.
    """
    found = [SETTINGS[np.dtype(v.dtype)] for v in values
             if isinstance(v, (np.ndarray, np.floating)) and np.dtype(v.dtype) in SETTINGS]
    return max(found, default=(STEP, TOLERANCE))


@dataclass(frozen=True)
class BatchObjective:
    """An objective that can also evaluate a list of inputs at once (`many`: one sandbox exchange, say).

    `many(cases)` must equal `[one(c) for c in cases]`, in order, raising where the first failing case would.
    The finite differences below hand it every perturbed input of one gradient in one list.
    """

    one: Callable[[dict[str, np.ndarray]], float]
    many: Callable[[list[dict[str, np.ndarray]]], list[float]]

    def __call__(self, inputs: dict[str, np.ndarray]) -> float:
        return self.one(inputs)


def evaluate(objective: Objective, cases: list[dict[str, np.ndarray]]) -> list[float]:
    """The objective at each case, in order: in one batch when it is a BatchObjective."""
    if isinstance(objective, BatchObjective):
        values = objective.many(cases)
        if len(values) != len(cases):
            raise AssertionError(f"a batch objective gave {len(values)} values for {len(cases)} inputs")
        return values
    return [objective(c) for c in cases]


def _with(inputs: dict[str, np.ndarray], name: str, value: np.ndarray) -> dict[str, np.ndarray]:
    return {**inputs, name: value}


def numeric_gradient(objective: Objective, inputs: dict[str, np.ndarray], wrt: str, h: float = STEP) -> np.ndarray:
    """Full central differences of the objective with respect to one input."""
    x = inputs[wrt]
    grad = np.zeros_like(x, dtype=np.float64)
    cases = []
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += h
        minus[idx] -= h
        cases += [_with(inputs, wrt, plus), _with(inputs, wrt, minus)]
    values = evaluate(objective, cases)
    for k, idx in enumerate(np.ndindex(x.shape)):
        grad[idx] = (values[2 * k] - values[2 * k + 1]) / (2 * h)
    return grad


def directions(shape: tuple[int, ...], rng: np.random.Generator, probes: int = PROBES) -> list[np.ndarray]:
    out = []
    for _ in range(probes):
        u = rng.standard_normal(shape)
        u /= np.linalg.norm(u) or 1.0
        out.append(u)
    return out


def directional_derivatives(objective: Objective, inputs: dict[str, np.ndarray], wrt: str,
                            probes: list[np.ndarray], h: float = STEP) -> np.ndarray:
    """Finite differences of the objective along each direction."""
    x = inputs[wrt]
    values = evaluate(objective, [c for u in probes for c in (_with(inputs, wrt, x + h * u),
                                                               _with(inputs, wrt, x - h * u))])
    return np.array([(values[2 * k] - values[2 * k + 1]) / (2 * h) for k in range(len(probes))], dtype=np.float64)


def responds(candidate_fd: np.ndarray, reference_fd: np.ndarray) -> bool:
    """False when the reference's derivative is clearly non-zero and the candidate's is (nearly) zero."""
    ref_norm = float(np.linalg.norm(reference_fd))
    if not np.isfinite(ref_norm) or ref_norm <= 1e-9:
        return True
    return float(np.linalg.norm(candidate_fd)) > 1e-3 * ref_norm


def self_consistency(objective: Objective, inputs: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                     rng: np.random.Generator, what: str, *, reference: Objective, tolerance: float = TOLERANCE,
                     step: float = STEP, full_max_elements: int = FULL_MAX_ELEMENTS,
                     verdict: str = "the backward math is wrong") -> dict[str, float]:
    """Check each candidate gradient against finite differences of the candidate's forward.

    `reference` is the same objective computed with the reference implementation on the host:
    wherever its derivative is non-zero, the candidate's forward must respond as well.
    `step` and `tolerance`: settings_for() the candidate's returns when they may be float32.
    Returns the error per input; raises CheckFailed naming the gradients that disagree.
    """
    errors: dict[str, float] = {}
    flat: list[str] = []
    for name, grad in grads.items():
        if inputs[name].size <= full_max_elements:
            numeric = numeric_gradient(objective, inputs, name, step)
            reference_fd = numeric_gradient(reference, inputs, name, step)
            errors[name] = normwise_error(grad, numeric)
        else:
            probes = directions(inputs[name].shape, rng)
            numeric = directional_derivatives(objective, inputs, name, probes, step)
            reference_fd = directional_derivatives(reference, inputs, name, probes, step)
            errors[name] = normwise_error(np.array([float(np.sum(grad * u)) for u in probes]), numeric)
        if not responds(numeric, reference_fd):
            flat.append(name)
    if flat:
        listed = ", ".join(flat)
        raise CheckFailed(f"{what}: your forward pass does not respond to {listed} (its finite differences are "
                          "zero where the reference's are not), so a gradient check of it proves nothing; "
                          "implement the forward pass first")
    wrong = [n for n, e in errors.items() if not e <= tolerance]
    if wrong:
        listed = ", ".join(f"d{n} (error {errors[n]:.1e})" for n in wrong)
        raise CheckFailed(f"{what}: {listed} disagree with finite differences of your own forward pass: {verdict}")
    return errors
