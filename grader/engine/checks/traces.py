"""Stateful objects driven step by step: the candidate's trace against the reference's, with named mistakes.

An early-stopping rule, a learning-rate schedule or an optimizer is called
once per step; what matters is what it shows after every step (its answer and
the attributes it keeps). A plan supplies `observe(inputs, steps)`, which
drives a fresh candidate object through the first `steps` inputs and returns
one mapping of observed values per step, and the reference's trace of the same
inputs. The verdict names the first step where they part, what was expected
there and why (`explain`).

When they part, the candidate is compared with known mistaken rules (`Rule`s,
trusted code run on the same inputs). A short failing sequence often fits
several of them ("stops one epoch late" and "compares with the last value
instead of the best" agree on [0, 0, 0, 1, 0]), so the candidate is also
driven through the whole input and through extra probe inputs until one rule
is left; only then is a mistake named. This costs calls only when the
reference check has already failed, and a rule that happens to coincide with
the reference can never fail a correct answer.

With `stop`, traces are cut after the first step that satisfies it: the
contract of an early-stopping rule says nothing of what happens after it has
said stop, for the reference or for a mistaken rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grader.engine.checks.compare import RTOL
from grader.engine.plan import CheckFailed

Step = Mapping[str, Any]
Trace = Sequence[Step]
Observe = Callable[[Any, "int | None"], Trace]


@dataclass(frozen=True)
class Rule:
    """A known mistaken rule: the message to show and the trace it produces for given inputs."""

    message: str
    run: Callable[[Any], Trace]


def cut(trace: Trace, stop: Callable[[Step], bool] | None) -> list[Step]:
    """The trace up to and including the first step that satisfies `stop` (the whole trace without one)."""
    steps = list(trace)
    if stop is None:
        return steps
    for i, step in enumerate(steps):
        if stop(step):
            return steps[: i + 1]
    return steps


def same_value(got: Any, want: Any, rtol: float = RTOL) -> bool:
    """Exact for bools, ints and strings; relative tolerance for floats (a bool never equals a number)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(want, float) or isinstance(got, float):
        try:
            g, w = float(got), float(want)
        except (TypeError, ValueError):
            return False
        if math.isnan(g) or math.isnan(w):
            return False
        return g == w or abs(g - w) <= rtol * max(abs(g), abs(w))
    return bool(got == want)


def first_difference(observed: Trace, expected: Trace, rtol: float = RTOL) -> tuple[int, str] | None:
    """(step, key) of the first value of `expected` that `observed` does not show, or None when all match."""
    for i, want in enumerate(expected):
        if i >= len(observed):
            return i, next(iter(want), "")
        for key, value in want.items():
            if key not in observed[i] or not same_value(observed[i][key], value, rtol):
                return i, key
    return None


def agrees(observed: Trace, rule_trace: Trace, stop: Callable[[Step], bool] | None = None,
           rtol: float = RTOL) -> bool:
    """True when the observed steps show the rule's (cut) trace over the steps both have."""
    steps = cut(rule_trace, stop)
    n = min(len(steps), len(observed))
    return first_difference(observed[:n], steps[:n], rtol) is None


def name_the_mistake(observe: Observe, inputs: Any, rules: Sequence[Rule], probes: Sequence[Any] = (),
                     stop: Callable[[Step], bool] | None = None, rtol: float = RTOL) -> Rule | None:
    """The one known rule the candidate follows on `inputs` and on as many probes as it takes, or None.

    When the probes cannot separate the rules left, the first of them (in the
    order given) is named.
    """
    full = observe(inputs, None)
    left = [r for r in rules if agrees(full, r.run(inputs), stop, rtol)]
    for probe in probes:
        if len(left) <= 1:
            break
        seen = observe(probe, None)
        narrowed = [r for r in left if agrees(seen, r.run(probe), stop, rtol)]
        if not narrowed:
            return None  # the candidate follows none of the rules on this probe: an unknown mistake
        left = narrowed
    return left[0] if left else None


def check_trace(observe: Observe, inputs: Any, reference: Callable[[Any], Trace], what: str,
                rules: Sequence[Rule] = (), *, probes: Sequence[Any] = (), stop: Callable[[Step], bool] | None = None,
                explain: Callable[[int], str] | None = None, rtol: float = RTOL) -> None:
    """Fail with a diagnosis unless the candidate shows the reference's trace (cut at `stop`) at every step.

    `explain(step)` says in words what the reference did at that step ("3 epochs
    without an improvement of more than 0.1 over the best 1.5"); it is added to
    the generic message when no known rule explains the candidate's trace.
    """
    expected = cut(reference(inputs), stop)
    observed = observe(inputs, len(expected))
    difference = first_difference(observed, expected, rtol)
    if difference is None:
        return
    rule = name_the_mistake(observe, inputs, rules, probes, stop, rtol)
    if rule is not None:
        raise CheckFailed(f"{what}: {rule.message}")
    step, key = difference
    got = observed[step].get(key, "<missing>") if step < len(observed) else "<no value>"
    reason = f" ({explain(step)})" if explain is not None else ""
    raise CheckFailed(f"{what}: at step {step}, {key} is {got!r}; expected {expected[step][key]!r}{reason}")
