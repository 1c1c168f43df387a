"""Known-mistake diagnosis: name the mistaken formula that a wrong answer reproduces.

"dh0 differs from the reference" leaves an interviewer to debug the code; "dh0
is all zeros: the gradient reaching h0 is never returned" does not. A problem's
plan lists its common mistakes as `Variant`s, each the outputs the mistaken
formula gives on the same inputs (computed by trusted code, usually the
reference on transformed inputs), and `check_outputs` checks shapes first,
then the reference, and when that fails names the first variant that every
listed output matches and that explains at least one difference from the
reference, before falling back to the generic comparison.

A variant is only consulted once the reference has been ruled out, so a
variant that happens to coincide with the reference on some input (a gate
swap on all-zero weights) can never fail a correct answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from grader.engine.checks.compare import ATOL, RTOL, assert_close, compare, expect_array
from grader.engine.plan import CheckFailed

Outputs = Mapping[str, np.ndarray]
# (rtol, atol) for one candidate array, from that array alone (its dtype): each output is compared at its own
# precision, so one float32 output never loosens the comparison of its float64 siblings.
Tolerance = Callable[[np.ndarray], tuple[float, float]]


@dataclass(frozen=True)
class Variant:
    """A known mistake: the message to show and the outputs it produces (or a function computing them lazily)."""

    message: str
    outputs: Outputs | Callable[[], Outputs]

    def expected(self) -> Outputs:
        return self.outputs() if callable(self.outputs) else self.outputs


def matches(got: Outputs, expected: Outputs, rtol: float = RTOL, atol: float = ATOL, *,
            tolerance: Tolerance | None = None) -> bool:
    """True when every output named in `expected` is present in `got` with its shape and close to it.

    `tolerance` gives each output's (rtol, atol) from the candidate's array, in place of `rtol` and `atol`.
    """
    for name, want in expected.items():
        have = got.get(name)
        if not isinstance(have, np.ndarray) or have.shape != want.shape or not np.all(np.isfinite(have)):
            return False
        if not compare(have, want, *(tolerance(have) if tolerance else (rtol, atol))).ok:
            return False
    return True


def matching_variant(got: Outputs, variants: Sequence[Variant], reference: Outputs | None = None,
                     rtol: float = RTOL, atol: float = ATOL, *, tolerance: Tolerance | None = None) -> Variant | None:
    """The first variant whose every listed output `got` reproduces, or None.

    With `reference`, a variant must also explain a difference: at least one
    of its listed outputs must differ from the reference. A variant naming
    only db cannot claim an answer whose db is right and whose dx is wrong,
    even on an input where the mistaken db happens to equal the right one. `tolerance` as in matches().
    """
    for variant in variants:
        outputs = variant.expected()
        if not matches(got, outputs, rtol, atol, tolerance=tolerance):
            continue
        if reference is not None and matches(got, {k: reference[k] for k in outputs if k in reference}, rtol, atol,
                                             tolerance=tolerance):
            continue
        return variant
    return None


def check_outputs(got: Mapping[str, object], expected: Outputs, variants: Sequence[Variant] = (), *,
                  rtol: float = RTOL, atol: float = ATOL, hint: str = "") -> dict[str, np.ndarray]:
    """T0 then T1/T2 for several named outputs, with known mistakes named before a generic mismatch.

    Outputs are checked for type, shape, dtype and finiteness in the order of
    `expected`, then compared; on a mismatch the first matching variant's
    message is raised, else the first differing output is described (plus `hint`).
    Returns the validated arrays.
    """
    arrays = {name: expect_array(got.get(name), name, want.shape, want.dtype) for name, want in expected.items()}
    return judge(arrays, expected, variants, lambda _: (rtol, atol), hint)


def judge(arrays: dict[str, np.ndarray], expected: Outputs, variants: Sequence[Variant], tolerance: Tolerance,
          hint: str = "") -> dict[str, np.ndarray]:
    """`arrays` (already validated) when they match `expected`; else the first matching variant's message, else
    the first differing output described (plus `hint`). `tolerance` gives each output's (rtol, atol)."""
    if matches(arrays, expected, tolerance=tolerance):
        return arrays
    variant = matching_variant(arrays, variants, expected, tolerance=tolerance)
    if variant is not None:
        raise CheckFailed(variant.message)
    for name, want in expected.items():
        assert_close(arrays[name], want, name, *tolerance(arrays[name]), hint)
    raise AssertionError("unreachable: matches() and assert_close disagree")  # pragma: no cover
