"""The layer-test kit: a function's contract declared once, and the tests that follow from it.

A layer exercise is a set of functions with fixed names, arguments and
returns. A `Contract` says so once:

    AFFINE_FORWARD = Contract("affine_forward", args=("x", "w", "b"), returns=("out", "cache"),
                              handle="cache", reference=ref.affine_forward)

and a `Layer` pairs a forward with its backward (which upstream gradient
reaches which argument, which return is the gradient of which input). From
them the kit gives what every layer test repeats: calling the candidate with a
case (a dict of named inputs), the reference's outputs and vector-Jacobian
product on the same case, the comparison with known mistakes named
(`Variant`s, grader/engine/checks/variants.py), the gradient check of the
candidate's backward against its own forward, and fixed cases that report
themselves as the counterexample.

One lapse, one charge. A function that modifies an input it must leave alone,
or returns float32 where the contract says float64, is charged once: in its
own test (`own=True`: T0 conformance first, then values). Every other test that
only uses the function to reach something else (a forward called to get a
cache, a backward chained through time, a gradient check) grades values: the
candidate always works on its own copy of each argument (arguments cross the
sandbox boundary by value), so an in-place update cannot change what the grader
sees, and each returned array of a lower floating precision is compared at
that precision, its siblings at their own: a float32 array within rtol 1e-6
and atol 2e-6 (scaled by the reference's largest magnitude, as in compare()),
a float64 one at the contract's 1e-7 and 1e-10. A gradient check accepts a
float32 backward's arrays, and of a forward answering in float32 takes its
finite differences with a 1e-3 step and a 1e-2 tolerance
(grader/engine/checks/gradcheck.py). The precision is read from the arrays
the host received, never from a report about them.
Correct math earns its points even when a side effect does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.engine.checks.compare import ATOL, RTOL, compare, expect_array, expect_scalar, expect_tuple
from grader.engine.checks.gradcheck import BatchObjective, Objective, self_consistency, settings_for
from grader.engine.checks.variants import Variant, check_outputs, judge
from grader.engine.plan import CandidateRaised, CheckFailed, Context, describe_example

Case = Mapping[str, Any]
Arrays = dict[str, np.ndarray]

# A gradient check's forward calls go to the sandbox in batches (one exchange each): up to 2 x 48 cases, a full
# central difference of one input at once, and fewer when a case's arguments or returns are large, so that a
# batch's request and reply stay far inside the wire's caps (a reply is capped at 4 MB unless a problem says
# otherwise; the cap bounds a whole batch, as it bounds one reply).
BATCH_CASES = 96
BATCH_BYTES = 1 << 20
CASE_OVERHEAD_BYTES = 1024


def _nbytes(value: Any) -> int:
    """The bytes of every array in a value tree (what crossing the wire costs, roughly)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_nbytes(v) for v in value.values())
    return 0


def batch_size(case: Case, returns: Mapping[str, Any]) -> int:
    """How many calls like this one (its arguments, and the returns of one such call) go in one exchange."""
    per_case = max(_nbytes(case), _nbytes(returns)) + CASE_OVERHEAD_BYTES
    return max(1, min(BATCH_CASES, BATCH_BYTES // per_case))


# Tolerances of a value test for each floating dtype a candidate may return. float64 is the contract;
# float32 is a lapse charged in the function's own test, and its values are still graded, at float32's
# precision. A correct answer rounded to float32 is within 6e-8 of the reference, elementwise; one computed
# in float32 through a layer (affine, batchnorm, an rnn step on inputs up to 3, the gan losses) within
# 1.1e-6 of the reference's largest magnitude. Tighter than 1e-6 + 2e-6 near 1 would fail the latter; looser
# would let an answer off by 5e-6 relative pass by returning float32.
PRECISION: dict[np.dtype[Any], tuple[float, float]] = {
    np.dtype(np.float64): (RTOL, ATOL),
    np.dtype(np.float32): (1e-6, 2e-6),
}


def precision_of(value: Any) -> tuple[float, float]:
    """(rtol, atol) for comparing an array of this dtype with a float64 reference."""
    dtype = getattr(value, "dtype", None)
    return PRECISION.get(np.dtype(dtype), (RTOL, ATOL)) if dtype is not None else (RTOL, ATOL)


def expect_values(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """T0 without the dtype: an exact array of this shape, finite, of a floating dtype the kit can grade.

    For value tests of a function graded elsewhere for its dtype: float32 passes here (and is compared at its
    own precision); anything else gets expect_array's float64 verdict.
    """
    dtype = value.dtype if isinstance(value, np.ndarray) and value.dtype in PRECISION else np.float64
    return expect_array(value, name, shape, dtype)


def close(actual: np.ndarray, expected: np.ndarray) -> bool:
    """compare() at the precision of `actual`'s dtype."""
    rtol, atol = precision_of(actual)
    return compare(actual, expected, rtol, atol).ok


@dataclass(frozen=True)
class Contract:
    """One function of the exercise: its name, argument names, return names and reference.

    `handle` is the return that stays in the sandbox (a cache passed back to the backward);
    `options` are keyword arguments taken from the case by name (stride, pad, p, ...);
    `mutates` are arguments the function updates by contract (an optimizer step): every
    other array argument must come back unchanged from the function's own test.
    """

    name: str
    args: tuple[str, ...]
    returns: tuple[str, ...]
    handle: str | None = None
    reference: Callable[..., Any] | None = None
    options: tuple[str, ...] = ()
    mutates: tuple[str, ...] = ()

    @property
    def keep(self) -> list[int] | None:
        return [self.returns.index(self.handle)] if self.handle else None

    def _named(self, result: Any) -> dict[str, Any]:
        if len(self.returns) == 1:
            return {self.returns[0]: result}
        return dict(zip(self.returns, expect_tuple(result, len(self.returns), self.name, ", ".join(self.returns))))

    def call(self, ctx: Context, case: Case, *, own: bool = False) -> dict[str, Any]:
        """The candidate's returns by name. `own`: this is the function's own test, so T0 includes inputs untouched."""
        args = [case[a] for a in self.args]
        options = {k: case[k] for k in self.options}
        if own:
            checked = tuple(a if a not in self.mutates else f"{a} (updated)" for a in self.args)
            result = ctx.call_checked(self.name, *args, keep=self.keep, arg_names=checked,
                                      untouched=[a not in self.mutates for a in self.args], **options)
        else:
            result = ctx.call(self.name, *args, keep=self.keep, **options)
        return self._named(result)

    def call_each(self, ctx: Context, cases: Sequence[Case], single: Callable[[Case], Mapping[str, Any]],
                  batch: int) -> Iterator[Mapping[str, Any]]:
        """The candidate's returns by name for each case, in order, `batch` cases per sandbox exchange.

        As lazy as the calls one by one: the next batch is sent only when the caller asks past this one, so a
        check that fails on a case stops the calls there (within a batch, the cases after it have run). A case
        that raised ends its batch and is called again alone through `single` (the plain call, or a plan's
        caller that adds hints), which raises as it would have; should it answer this time, the batch's error
        is raised all the same. The time limit and charge are the test's, as for single calls.
        """
        i = 0
        while i < len(cases):
            part = cases[i:i + max(1, batch)]
            replies = ctx.raw_call_many({"fn": self.name},
                                        [(tuple(c[a] for a in self.args), {k: c[k] for k in self.options})
                                         for c in part],
                                        keep=self.keep, stop_on_error=True)
            for reply in replies:
                if not reply.ok:
                    # Called again alone only for the message its plan's caller gives (hints); the case has
                    # raised once already, so the failure stands even if a forward with state or randomness
                    # answers this time: no second chance that calls one by one would not have given.
                    single(cases[i])
                    assert reply.error is not None
                    raise CandidateRaised(self.name, reply.error)
                yield self._named(reply.value)
                i += 1

    def expected(self, case: Case) -> dict[str, Any]:
        """The reference's returns by name on the same case (the handle included, as the reference's own cache)."""
        if self.reference is None:
            raise TypeError(f"the contract of {self.name} names no reference")
        return self._named(self.reference(*[case[a] for a in self.args], **{k: case[k] for k in self.options}))

    def gradient_check(self, ctx: Context, case: Case, rng: np.random.Generator, *, grads: Mapping[str, str],
                       value: str = "loss", **kwargs: Any) -> dict[str, float]:
        """T3 for a function returning a scalar and its own gradients (a loss and dlogits), not a forward/backward pair.

        `grads` maps each argument to the return that is its gradient ({"logits": "dlogits"}), `value` names the
        scalar return. The candidate's gradients at `case` are checked against finite differences of its own
        scalar; the errors per argument are returned (put them in ctx.details["errors"]); keyword arguments go to
        self_consistency. Gradients in float32 are accepted for their values; a scalar returned as a float32
        number takes float32's finite-difference step and tolerance.
        """
        def scalar(got: Mapping[str, Any]) -> float:
            loss = expect_scalar(got[value], value)
            for n, g in grads.items():  # every call's gradients are checked, as in the first call
                expect_values(got[g], g, np.shape(case[n]))
            return loss

        def single(c: Case) -> dict[str, Any]:
            return self.call(ctx, c)

        first = self.call(ctx, case)
        expect_scalar(first[value], value)
        checked = {n: expect_values(first[g], g, np.shape(case[n])) for n, g in grads.items()}
        step, tolerance = settings_for([first[value]])
        settings = {"step": step, "tolerance": tolerance, **kwargs}
        batch = batch_size(case, first)

        def many(vs: list[dict[str, np.ndarray]]) -> list[float]:
            return [scalar(got) for got in self.call_each(ctx, [{**case, **v} for v in vs], single, batch)]

        return self_consistency(BatchObjective(lambda v: scalar(single({**case, **v})), many),
                                {n: case[n] for n in grads}, checked, rng,
                                self.name, reference=lambda v: float(self.expected({**case, **v})[value]),
                                **settings)

    def arrays(self, got: Mapping[str, Any], expected: Mapping[str, Any],
               names: Iterable[str] | None = None) -> tuple[dict[str, Any], Arrays]:
        """The returns to compare (every return but the handle, or `names`), candidate's and reference's."""
        keys = [k for k in (names or self.returns) if k != self.handle]
        return {k: got.get(k) for k in keys}, {k: np.asarray(expected[k]) for k in keys}


def check_values(got: Mapping[str, Any], expected: Arrays, variants: Sequence[Variant] = (), *, own: bool = True,
                 hint: str = "") -> Arrays:
    """Compare named outputs with the reference, naming a known mistake before a generic mismatch.

    `own`: the function's own test, where T0 (dtype included) is charged. Elsewhere each output is
    compared at the precision of its own returned dtype, so a float32 lapse already charged costs nothing
    more, and never loosens the comparison of a float64 sibling.
    """
    if own:
        return check_outputs(got, expected, variants, hint=hint)
    arrays = {name: expect_values(got.get(name), name, want.shape) for name, want in expected.items()}
    return judge(arrays, expected, variants, precision_of, hint)


@dataclass(frozen=True)
class Layer:
    """A forward and its backward.

    `upstream` maps each forward return that carries a gradient to the backward argument receiving it
    ({"out": "dout"}); `grads` maps each forward argument to the backward return that is its gradient
    ({"x": "dx", "w": "dw", "b": "db"}). The backward's handle argument is the forward's handle name.
    """

    forward: Contract
    backward: Contract
    upstream: Mapping[str, str]
    grads: Mapping[str, str] = field(default_factory=dict)

    def backward_case(self, case: Case, handle: Any) -> dict[str, Any]:
        assert self.forward.handle is not None
        return {**case, self.forward.handle: handle}

    def call_backward(self, ctx: Context, case: Case, *, own: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
        """The candidate's forward (graded elsewhere: values only) then its backward on the case's upstream gradients.

        Returns (forward returns, backward returns), by name.
        """
        out = self.forward.call(ctx, case)
        assert self.forward.handle is not None
        return out, self.backward.call(ctx, self.backward_case(case, out[self.forward.handle]), own=own)

    def vjp(self, case: Case) -> dict[str, Any]:
        """The reference's vector-Jacobian product: the reference forward's cache into the reference backward."""
        assert self.forward.handle is not None
        cache = self.forward.expected(case)[self.forward.handle]
        return self.backward.expected(self.backward_case(case, cache))

    def objective(self, upstream: Mapping[str, np.ndarray], outputs: Mapping[str, Any],
                  values: bool = True) -> float:
        """<upstream, f(inputs)> summed over every output carrying a gradient."""
        total = 0.0
        for out_name, arg in self.upstream.items():
            u = upstream[arg]
            value = expect_values(outputs[out_name], out_name, u.shape) if values else outputs[out_name]
            total += float(np.sum(value * u))
        return total

    def gradient_check(self, ctx: Context, inputs: Mapping[str, Any], upstream: Mapping[str, np.ndarray],
                       rng: np.random.Generator, *, wrt: Iterable[str] | None = None,
                       call: Callable[[Case], Mapping[str, Any]] | None = None,
                       check_forward: Callable[[Mapping[str, Any]], None] | None = None,
                       **kwargs: Any) -> dict[str, float]:
        """T3: the candidate's backward against finite differences of its own forward, at a fixed upstream.

        `inputs` is the forward's case (options included), `upstream` the backward's upstream arguments by name,
        `wrt` the inputs to check (default: every input with a gradient in `grads`). `call` replaces the plain
        forward call (a plan's caller that adds hints); `check_forward` sees the forward's returns before the
        backward runs (to report a misshapen output first). The errors per input are returned (put them in
        ctx.details["errors"]); keyword arguments go to self_consistency. A forward or backward answering in
        float32 is graded here for its values only: a float32 forward's finite differences take float32's step
        and tolerance.
        """
        forward = call or (lambda case: self.forward.call(ctx, case))
        case = {**inputs, **upstream}
        out = forward(case)
        if check_forward is not None:
            check_forward(out)
        assert self.forward.handle is not None
        got = self.backward.call(ctx, self.backward_case(case, out[self.forward.handle]))
        names = list(wrt or self.grads)
        grads = {n: expect_values(got.get(self.grads[n]), self.grads[n], np.shape(inputs[n])) for n in names}
        # The forward's precision sets the finite differences; a float32 backward's rounding (1e-6 at most)
        # is well inside the float64 tolerance.
        step, tolerance = settings_for([out[k] for k in self.upstream])

        def candidate(v: Mapping[str, np.ndarray]) -> float:
            return self.objective(upstream, forward({**inputs, **v}))

        objective: Objective = candidate
        if all(isinstance(out.get(k), np.ndarray) for k in self.upstream):
            # Batched: the first forward's returns (arrays, as they must be) size the batches.
            batch = batch_size(case, out)

            def many(vs: list[dict[str, np.ndarray]]) -> list[float]:
                return [self.objective(upstream, got)
                        for got in self.forward.call_each(ctx, [{**inputs, **v} for v in vs], forward, batch)]

            objective = BatchObjective(candidate, many)

        def reference(v: Mapping[str, np.ndarray]) -> float:
            return self.objective(upstream, self.forward.expected({**inputs, **v}), values=False)

        settings = {"step": step, "tolerance": tolerance, **kwargs}
        return self_consistency(objective, {n: inputs[n] for n in names}, grads, rng, self.backward.name,
                                reference=reference, **settings)


def run_fixed(cases: Iterable[Case], check: Callable[[Any], None],
              describe: Callable[[Any], str] = describe_example) -> None:
    """Run a check on fixed cases, reporting the failing case as the counterexample."""
    for case in cases:
        try:
            check(case)
        except CheckFailed as exc:
            raise exc.amended(counterexample=exc.counterexample or describe(case)) from None
