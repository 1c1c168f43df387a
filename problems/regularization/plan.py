"""Test plan for `regularization`: L2 penalty, dropout, batch norm and early stopping in numpy.

GRADING.md's layers, as they apply: conformance (exact shapes, dtypes, finite
values, inputs untouched) before values; forward and backward against the
reference (itself verified against torch.nn.BatchNorm1d, dropout and autograd
in tests/test_reference_regularization.py); finite differences of the
candidate's own forward; state over several calls (running statistics, the
early-stopping rule epoch after epoch); statistics of dropout masks for several
p at 5 sigma; stability for a constant feature. Known mistakes, including the
course conventions (p as the keep probability, momentum weighting the old
running value, biased running variance), are named in the verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from grader.engine.checks import strategies as gst
from grader.engine.checks.compare import (
    NotFinite,
    assert_close,
    check_output,
    compare,
    expect_array,
    expect_scalar,
    expect_tuple,
)
from grader.engine.checks.gradcheck import self_consistency
from grader.engine.checks.layers import Contract, Layer, check_values, expect_values, run_fixed
from grader.engine.checks.statistics import binomial_bounds, check_fraction
from grader.engine.checks.traces import Observe, Rule, check_trace
from grader.engine.checks.variants import Variant, check_outputs
from grader.engine.plan import CheckFailed, Context, Plan
from grader.engine.verdict import prefixed
from reference import regularization as ref

plan = Plan()

# Values of p for generated cases: never only 0.5, where "p is the keep probability" is invisible.
DROPOUT_PS = (0.1, 0.2, 0.25, 0.4, 0.6, 0.75, 0.9)
STATISTICS_PS = (0.1, 0.3, 0.5, 0.8)
# Momentum 0.5 would make PyTorch's convention and the course convention coincide.
MOMENTA = (0.1, 0.05, 0.2, 0.3)
EPSILONS = (1e-5, 1e-3, 0.1)
REGS = (0.1, 0.5, 2.0, 1e-3, 3.7)  # never 1 (hides a missing reg) nor 0 (hides everything)
W_KEYS = ("W1", "W2", "Wx", "W")
OTHER_KEYS = ("b1", "b2", "bias", "gamma1", "beta1")


# -- L2 penalty ------------------------------------------------------------------------------------


@st.composite
def l2_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Weights and other entries (biases, gamma, beta) of assorted shapes, all non-zero, and a reg."""
    keys = draw(st.lists(st.sampled_from(W_KEYS), min_size=1, max_size=3, unique=True))
    keys += draw(st.lists(st.sampled_from(OTHER_KEYS), min_size=1, max_size=3, unique=True))
    params = {}
    for key in draw(st.permutations(keys)):
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
        # Other entries on a different scale, so that even a shrunk case (every value at its smallest)
        # never makes "biases penalised too" and "0.5 missing" give the same loss.
        scale = 1.0 if ref.is_weight_key(key) else 1.7
        params[key] = scale * draw(gst.arrays(shape, gst.away_from_zero(0.1)))
    return {"params": params, "reg": draw(st.sampled_from(REGS))}


def _describe_l2(case: dict[str, Any]) -> str:
    def entry(key: str, value: np.ndarray) -> str:
        if value.size <= 6:
            return f"{key}={np.array2string(value, precision=4, separator=', ')}"
        return f"{key} of shape {value.shape}"

    return f"reg={case['reg']:g}, params: " + "; ".join(entry(k, v) for k, v in case["params"].items())


def _l2(ctx: Context, params: dict[str, np.ndarray], reg: float, own: bool = False) -> tuple[float, Any]:
    """The candidate's (loss, grads); `own` (l2_loss, its conformance test): params must come back unchanged."""
    if not own:
        loss, grads = expect_tuple(ctx.call("l2_penalty", params, reg), 2, "l2_penalty", "loss, grads")
        return expect_scalar(loss, "loss"), grads
    result, (after, _) = ctx.call_returning_args("l2_penalty", params, reg)
    loss, grads = expect_tuple(result, 2, "l2_penalty", "loss, grads")
    if not isinstance(after, dict) or sorted(after) != sorted(params) or not all(
            isinstance(after[k], np.ndarray) and np.array_equal(after[k], v) for k, v in params.items()):
        raise CheckFailed("l2_penalty modified the params dict it was given; it must leave params unchanged")
    return expect_scalar(loss, "loss"), grads


@plan.test("l2_loss")
def l2_loss(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        params, reg = case["params"], case["reg"]
        loss, _ = _l2(ctx, params, reg, own=True)
        expected, _ = ref.l2_penalty(params, reg)
        everything = 0.5 * reg * sum(float(np.sum(v**2)) for v in params.values())
        check_outputs({"loss": np.array(loss)}, {"loss": np.array(expected)}, [
            Variant("the penalty includes keys that do not start with \"W\" (biases, gamma, beta); "
                    "only the weights are penalised", {"loss": np.array(everything)}),
            Variant("the penalty is reg * sum(W**2); the contract's is 0.5 * reg * sum(W**2)",
                    {"loss": np.array(2 * expected)}),
            Variant("the penalty leaves out reg: it must be 0.5 * reg * sum(W**2)", {"loss": np.array(expected / reg)}),
        ])

    ctx.check_property(l2_cases(), check, describe=_describe_l2)


@plan.test("l2_grads")
def l2_grads(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        params, reg = case["params"], case["reg"]
        _, grads = _l2(ctx, params, reg)
        if not isinstance(grads, dict):
            raise CheckFailed(f"grads must be a dict keyed like params; got {type(grads).__name__}")
        missing = [k for k in params if k not in grads]
        if missing:
            raise CheckFailed(f"grads has no key {missing}: it needs a key for every param, with zeros for the "
                              "keys that are not penalised")
        _, expected = ref.l2_penalty(params, reg)
        got = {f"grads['{k}']": grads[k] for k in params}
        want = {f"grads['{k}']": expected[k] for k in params}
        weights = {f"grads['{k}']": params[k] for k in params if ref.is_weight_key(k)}
        others = {f"grads['{k}']": params[k] for k in params if not ref.is_weight_key(k)}
        check_outputs(got, want, [
            Variant("the gradient of a weight is W; it must be reg * W (the factor reg is missing)", weights),
            Variant("the gradient of a weight is 2 * reg * W; for the penalty 0.5 * reg * sum(W**2) it is reg * W",
                    {k: 2 * reg * v for k, v in weights.items()}),
            Variant("keys that do not start with \"W\" get a gradient reg * value; they are not penalised, "
                    "so their gradient is zero", {k: reg * v for k, v in others.items()}),
        ])

    ctx.check_property(l2_cases(), check, describe=_describe_l2)


@plan.test("l2_gradcheck")
def l2_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("params")
    reg = 0.7
    params = {"W1": rng.standard_normal((3, 2)), "b1": rng.standard_normal(2), "W2": rng.standard_normal((2, 3)),
              "b2": rng.standard_normal(3)}
    _, grads = _l2(ctx, params, reg)
    if not isinstance(grads, dict) or any(k not in grads for k in params):
        raise CheckFailed("grads must be a dict with a key for every param")
    checked = {k: expect_array(grads[k], f"grads['{k}']", v.shape) for k, v in params.items()}

    def objective(v: dict[str, np.ndarray]) -> float:
        loss, _ = expect_tuple(ctx.call("l2_penalty", v, reg), 2, "l2_penalty", "loss, grads")
        return expect_scalar(loss, "loss")

    ctx.details["errors"] = self_consistency(objective, params, checked, rng, "l2_penalty",
                                              reference=lambda v: ref.l2_penalty(v, reg)[0])


# -- dropout -------------------------------------------------------------------------------------------


@st.composite
def dropout_cases(draw: st.DrawFn) -> dict[str, Any]:
    """x of 1 to 4 dims with no zeros (so the mask can be read from the output), p, a seed, an upstream gradient."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    return {"p": draw(st.sampled_from(DROPOUT_PS)), "seed": draw(st.integers(0, 2**31 - 1)),
            "x": draw(gst.arrays(shape, gst.away_from_zero(0.1))),
            "dout": draw(gst.arrays(shape, gst.away_from_zero(0.1)))}


DROPOUT = Contract("dropout_forward", args=("x", "p", "train", "seed"), returns=("out", "cache"), handle="cache")


def _dropout(ctx: Context, x: np.ndarray, p: float, train: bool, seed: int,
             own: bool = False) -> tuple[np.ndarray, Any]:
    got = DROPOUT.call(ctx, {"x": x, "p": p, "train": train, "seed": seed}, own=own)
    return (expect_array if own else expect_values)(got["out"], "out", x.shape), got["cache"]


def _check_dropout_units(x: np.ndarray, out: np.ndarray, p: float) -> np.ndarray:
    """Every unit must be 0 (dropped) or x / (1 - p) (kept); returns the kept mask, or names the scaling used."""
    kept = out != 0
    if not kept.any():
        return kept
    name = f"kept units of out (p={p:g})"
    check_values({name: out[kept]}, {name: x[kept] / (1.0 - p)}, [
        Variant(f"dropout_forward with p={p:g}: {message}", {name: x[kept] * scale}) for scale, message in (
            (1.0, "kept units are not scaled: inverted dropout multiplies them by 1/(1-p) at train time, so the "
                  "expected output equals x"),
            (1.0 / p, "kept units are scaled by 1/p: p is the probability of dropping a unit (PyTorch's meaning), "
                      "not of keeping it"),
            (1.0 - p, "kept units are multiplied by (1-p), the scaling of non-inverted dropout at test time; "
                      "inverted dropout divides them by (1-p) at train time"))
    ], hint="every unit must be either 0 (dropped) or x / (1 - p) (kept)")
    return kept


@plan.test("dropout_forward")
def dropout_forward(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        out, _ = _dropout(ctx, case["x"], case["p"], True, case["seed"], own=True)
        _check_dropout_units(case["x"], out, case["p"])

    rng = ctx.rng("fixed")
    check({"p": 0.2, "seed": 1, "x": ref.dropout_inputs(int(rng.integers(2**31)), (6, 7)), "dout": None})
    ctx.check_property(dropout_cases(), check)


def _check_agreement(a: np.ndarray, b: np.ndarray, p: float, what: str) -> None:
    """Two masks of independent units agree on a unit with probability p**2 + (1-p)**2."""
    agree = float(np.mean(a == b))
    check_fraction(agree, a.size, p**2 + (1 - p) ** 2, what,
                   "each unit must be dropped independently of the others (a mask the shape of x, not one "
                   "shared by a whole row or column)")


@plan.test("dropout_statistics")
def dropout_statistics(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    shape = (50, 80)
    fractions = {}
    for p in STATISTICS_PS:
        x = ref.dropout_inputs(int(rng.integers(2**31)), shape)
        out, _ = _dropout(ctx, x, p, True, int(rng.integers(2**31)))
        kept = out != 0
        fraction = float(kept.mean())
        fractions[f"p={p:g}"] = round(fraction, 4)
        lo, hi = binomial_bounds(kept.size, 1 - p)
        keep_lo, keep_hi = binomial_bounds(kept.size, p)
        if not lo <= fraction <= hi and keep_lo <= fraction <= keep_hi:
            raise CheckFailed(f"with p={p:g} a fraction {fraction:.3f} of the units is kept, about p itself: p is "
                              "used as the probability of keeping a unit; it is the probability of dropping one "
                              "(PyTorch's meaning), so a fraction 1 - p is kept")
        check_fraction(fraction, kept.size, 1 - p, f"fraction of units kept with p={p:g}")
        # Disjoint pairs of rows, then of columns: independent units agree at the binomial rate.
        _check_agreement(kept[0::2], kept[1::2], p, f"agreement between the masks of neighbouring rows (p={p:g})")
        _check_agreement(kept[:, 0::2], kept[:, 1::2], p,
                         f"agreement between the masks of neighbouring columns (p={p:g})")
    ctx.details["kept_fraction"] = fractions


@plan.test("dropout_seed")
def dropout_seed(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    shape = (30, 40)
    for p in (0.3, 0.6):
        seed = int(rng.integers(2**31 - 4))
        x = ref.dropout_inputs(int(rng.integers(2**31)), shape)
        first, _ = _dropout(ctx, x, p, True, seed)
        again, _ = _dropout(ctx, x, p, True, seed)
        if not np.array_equal(first, again):
            raise CheckFailed(f"two calls with the same seed ({seed}) and p={p:g} gave different masks: draw the "
                              "mask from np.random.default_rng(seed), not from global or unseeded randomness")
        y = ref.dropout_inputs(int(rng.integers(2**31)), shape)
        other_x, _ = _dropout(ctx, y, p, True, seed)
        if not np.array_equal(first != 0, other_x != 0):
            raise CheckFailed(f"the same seed ({seed}) gave different masks for two inputs of the same shape: "
                              "the mask must depend only on the seed (and the shape and p)")
        masks = [first != 0] + [_dropout(ctx, x, p, True, seed + k)[0] != 0 for k in (1, 2, 3)]
        for k in range(1, len(masks)):
            if np.array_equal(masks[0], masks[k]):
                raise CheckFailed(f"seeds {seed} and {seed + k} gave the same mask: the seed is not used to draw it")


@plan.test("dropout_backward")
def dropout_backward(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        x, p, dout = case["x"], case["p"], case["dout"]
        out, cache = _dropout(ctx, x, p, True, case["seed"])
        dx = expect_array(ctx.call("dropout_backward", dout, cache), "dx", x.shape)
        kept = out != 0
        expected = dout * kept / (1.0 - p)
        if compare(dx, expected).ok:
            return
        if not np.array_equal(dx != 0, kept):
            raise CheckFailed(f"dropout_backward (p={p:g}) does not use the forward pass's mask: dx is non-zero where "
                              "the forward dropped a unit, or zero where it kept one. Keep the mask in the cache "
                              "(or draw it again from the same seed)")
        check_outputs({"dx": dx}, {"dx": expected}, [
            Variant("dx is dout * mask without the 1/(1-p) scale the forward pass applies to kept units",
                    {"dx": dout * kept}),
            Variant("dx is scaled by 1/p; the forward's kept units are scaled by 1/(1-p), and so is their gradient",
                    {"dx": dout * kept / p}),
            Variant("dx matches your forward pass, whose scaling of kept units is wrong (see dropout_forward)",
                    {"dx": dout * np.divide(out, x)}),
        ])

    # A fixed case first: a backward that draws its own random mask fails it outright, where a
    # generated case would only fail now and then (and could not be shrunk).
    rng = ctx.rng("fixed")
    shape = (6, 7)
    check({"p": 0.3, "seed": 5, "x": ref.dropout_inputs(int(rng.integers(2**31)), shape),
           "dout": ref.dropout_inputs(int(rng.integers(2**31)), shape)})
    ctx.check_property(dropout_cases(), check)


@plan.test("dropout_eval")
def dropout_eval(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    for p, train in ((0.3, False), (0.5, False), (0.9, False), (0.0, True), (0.0, False)):
        x = ref.dropout_inputs(int(rng.integers(2**31)), (4, 5, 6))
        dout = rng.standard_normal(x.shape)
        out, cache = _dropout(ctx, x, p, train, int(rng.integers(2**31)))
        when = f"train={train} and p={p:g}"
        if not compare(out, x).ok:
            if np.any(out == 0):
                where = "train is False" if not train else "p == 0"
                raise CheckFailed(f"with {when} units were dropped: dropout is the identity when {where}")
            if p > 0 and compare(out, x * (1 - p)).ok:
                raise CheckFailed(f"with {when} the output is x * (1 - p): with inverted dropout the scaling happens "
                                  "at train time and eval mode is the identity")
            assert_close(out, x, f"out with {when}", hint="dropout must be the identity here")
        dx = ctx.call("dropout_backward", dout, cache)
        check_output(dx, dout, f"dx with {when}", hint="the backward of the identity passes dout through unchanged")


# -- batch norm ------------------------------------------------------------------------------------------


@st.composite
def bn_batch(draw: st.DrawFn, n: int, d: int) -> np.ndarray:
    """x (n, d): distinct values on a grid (no constant column), shifted and scaled per feature."""
    grid = draw(gst.arrays((n, d), st.integers(-40, 40).map(lambda k: k / 4.0), unique=True))
    offset = draw(gst.arrays((d,), gst.floats(-5, 5)))
    scale = draw(st.sampled_from([1.0, 0.5, 3.0]))
    return offset + scale * grid


@st.composite
def bn_cases(draw: st.DrawFn, n_min: int = 2) -> dict[str, Any]:
    """A train-mode case: N >= 2 (N = 1 has no batch variance), gamma away from 0, a Gaussian upstream gradient."""
    n, d = draw(st.integers(n_min, 8)), draw(st.integers(1, 5))
    return {"eps": draw(st.sampled_from(EPSILONS)), "x": draw(bn_batch(n, d)),
            "gamma": draw(gst.arrays((d,), gst.away_from_zero(0.2, 2.0))),
            "beta": draw(gst.arrays((d,), gst.floats(-2, 2))),
            "running_mean": draw(gst.arrays((d,), gst.floats(-2, 2))),
            "running_var": draw(gst.arrays((d,), gst.floats(0.25, 4.0))),
            "dout_seed": draw(st.integers(0, 2**31 - 1))}


def _bn_param(case: dict[str, Any], mode: str, **extra: Any) -> dict[str, Any]:
    return {"mode": mode, "eps": case["eps"], "momentum": 0.1, "running_mean": case["running_mean"].copy(),
            "running_var": case["running_var"].copy(), **extra}


def _bn(ctx: Context, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
        bn_param: dict[str, Any], own: bool = False) -> tuple[np.ndarray, Any, Any]:
    """Call batchnorm_forward; returns (out, cache handle, bn_param as the call left it).

    `own` (bn_forward, its conformance test): x, gamma and beta must come back unchanged, out in float64.
    """
    result, after = ctx.call_returning_args("batchnorm_forward", x, gamma, beta, bn_param, keep=[1])
    out, cache = expect_tuple(result, 2, "batchnorm_forward", "out, cache")
    for name, before, now in zip(("x", "gamma", "beta"), (x, gamma, beta), after if own else ()):
        if not (isinstance(now, np.ndarray) and now.shape == before.shape and np.array_equal(now, before)):
            raise CheckFailed(f"batchnorm_forward modified its input `{name}` in place; inputs must be left unchanged")
    return (expect_array if own else expect_values)(out, "out", x.shape), cache, after[3]


def _normalized(x: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float, gamma: np.ndarray,
                beta: np.ndarray, eps_outside: bool = False) -> np.ndarray:
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return gamma * (x - mean) / std + beta


@plan.test("bn_forward")
def bn_forward(ctx: Context) -> None:
    def check(case: dict[str, Any], bn_param: dict[str, Any] | None = None) -> None:
        x, gamma, beta, eps = case["x"], case["gamma"], case["beta"], case["eps"]
        param = bn_param if bn_param is not None else _bn_param(case, "train")
        out, _, _ = _bn(ctx, x, gamma, beta, param, own=True)
        expected, _ = ref.batchnorm_forward(x, gamma, beta, {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                                             for k, v in param.items()})
        mean, var = x.mean(axis=0), x.var(axis=0)
        n = x.shape[0]
        check_outputs({"out": out}, {"out": expected}, [
            Variant("the batch is normalized with the unbiased variance (divided by N - 1); normalizing uses the "
                    "biased one (divided by N), as BatchNorm1d does",
                    {"out": _normalized(x, mean, var * n / (n - 1), eps, gamma, beta)}),
            Variant("eps is added to the standard deviation; it belongs under the square root: "
                    "(x - mean) / sqrt(var + eps)", {"out": _normalized(x, mean, var, eps, gamma, beta, True)}),
            Variant("train mode normalizes with the running statistics; it must use the batch's own mean and variance",
                    {"out": _normalized(x, param.get("running_mean", np.zeros(x.shape[1])),
                                        param.get("running_var", np.ones(x.shape[1])), eps, gamma, beta)}),
            Variant("eps is left out of the normalization: (x - mean) / sqrt(var + eps)",
                    {"out": _normalized(x, mean, var, 0.0, gamma, beta)}),
        ])

    rng = ctx.rng("fixed")
    fixed = {"eps": ref.BN_EPS, **ref.batchnorm_inputs(int(rng.integers(2**31)), 5, 3)}
    # bn_param with nothing but the mode: eps defaults to 1e-5, running statistics to zeros and ones.
    with prefixed("with bn_param = {'mode': 'train'} (defaults)"):
        check(fixed, {"mode": "train"})
    ctx.check_property(bn_cases(), check)


def _running_variants(batches: list[np.ndarray], momentum: float, mean0: np.ndarray | None, var0: np.ndarray | None,
                      step: int) -> list[Variant]:
    """The running statistics known mistaken update rules leave after `step` + 1 train steps."""

    def after(**rule: Any) -> Callable[[], dict[str, np.ndarray]]:
        def outputs() -> dict[str, np.ndarray]:
            stats = ref.running_stats_trace(batches[: step + 1], momentum, mean0, var0, **rule)[step]
            return {"running_mean": stats.mean, "running_var": stats.var}
        return outputs

    pytorch = ("the contract is PyTorch's: running = (1 - momentum) * running + momentum * batch_stat, "
               "so momentum 0.1 gives the new batch a weight of 0.1")
    unchanged = {"running_mean": np.zeros(batches[0].shape[1]) if mean0 is None else mean0,
                 "running_var": np.ones(batches[0].shape[1]) if var0 is None else var0}
    return [
        Variant("the running statistics follow the course convention (momentum 0.9 style) with a biased "
                f"running variance: running = momentum * running + (1 - momentum) * batch_stat; {pytorch}, "
                "and running_var takes the unbiased batch variance (divided by N - 1)",
                after(momentum_weights_batch=False, unbiased=False)),
        Variant("the running statistics follow the course convention (momentum 0.9 style): running = momentum * "
                f"running + (1 - momentum) * batch_stat; {pytorch}", after(momentum_weights_batch=False)),
        Variant("running_var uses the biased batch variance (divided by N); PyTorch's running_var takes the "
                "unbiased one (divided by N - 1), while the batch itself is normalized with the biased one",
                after(unbiased=False)),
        Variant("a train step left the running statistics unchanged: update bn_param['running_mean'] and "
                "bn_param['running_var'] (in place, or store the new arrays in bn_param)", unchanged),
    ]


@st.composite
def running_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Several train steps in a row on batches of one shape, from given or absent running statistics."""
    n, d, steps = draw(st.integers(2, 6)), draw(st.integers(1, 4)), draw(st.integers(2, 4))
    given = draw(st.booleans())
    return {"momentum": draw(st.sampled_from(MOMENTA)), "steps": steps,
            "batches": [draw(bn_batch(n, d)) for _ in range(steps)],
            "running_mean": draw(gst.arrays((d,), gst.floats(-2, 2))) if given else None,
            "running_var": draw(gst.arrays((d,), gst.floats(0.25, 4.0))) if given else None}


def _check_running(ctx: Context, case: dict[str, Any], defaults: bool = False) -> None:
    batches, momentum = case["batches"], case["momentum"]
    mean0, var0 = case["running_mean"], case["running_var"]
    d = batches[0].shape[1]
    gamma, beta = np.ones(d), np.zeros(d)
    param: dict[str, Any] = {"mode": "train"} if defaults else {"mode": "train", "eps": 1e-5, "momentum": momentum}
    if mean0 is not None:
        param["running_mean"], param["running_var"] = mean0.copy(), var0.copy()
    trace = ref.running_stats_trace(batches, momentum, mean0, var0)
    for step, x in enumerate(batches):
        _, _, after = _bn(ctx, x, gamma, beta, param)
        where = f"after train step {step + 1} of {len(batches)} (momentum {momentum:g}" + \
                (", from bn_param without running statistics)" if mean0 is None else ")")
        if not isinstance(after, dict) or not all(k in after for k in ("running_mean", "running_var")):
            raise CheckFailed(f"{where}: bn_param has no running_mean / running_var; a train step must store "
                              "them in bn_param (starting from zeros and ones when absent)")
        expected = {"running_mean": trace[step].mean, "running_var": trace[step].var}
        with prefixed(where):
            check_outputs({k: after[k] for k in expected}, expected,
                          _running_variants(batches, momentum, mean0, var0, step))
        param = after


@plan.test("bn_running_stats")
def bn_running_stats(ctx: Context) -> None:
    rng = ctx.rng("fixed")
    d = 3
    # The defaults first: bn_param with running statistics but no momentum or eps means momentum 0.1.
    fixed = {"momentum": ref.BN_MOMENTUM, "batches": ref.batchnorm_batches(int(rng.integers(2**31)), 3, 4, d),
             "running_mean": rng.standard_normal(d), "running_var": rng.uniform(0.5, 2.0, d)}
    with prefixed("with bn_param without momentum and eps (defaults 0.1 and 1e-5)"):
        _check_running(ctx, fixed, defaults=True)
    ctx.check_property(running_cases(), lambda case: _check_running(ctx, case))


@st.composite
def eval_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Eval mode needs no batch statistics: N = 1 is allowed here."""
    return draw(bn_cases(n_min=1))


@plan.test("bn_eval")
def bn_eval(ctx: Context) -> None:
    def check(case: dict[str, Any], bn_param: dict[str, Any] | None = None) -> None:
        x, gamma, beta, eps = case["x"], case["gamma"], case["beta"], case["eps"]
        param = bn_param if bn_param is not None else _bn_param(case, "eval")
        rm = param.get("running_mean", np.zeros(x.shape[1]))
        rv = param.get("running_var", np.ones(x.shape[1]))
        out, _, after = _bn(ctx, x, gamma, beta, param)
        expected = ref.batchnorm_eval(x, gamma, beta, rm, rv, eps)
        # Values only: batchnorm_forward's dtype and inputs are graded in bn_forward, its own test.
        check_values({"out": out}, {"out": expected}, own=False, variants=[
            Variant("eval mode normalizes with the batch's own statistics; it must use running_mean and running_var",
                    {"out": _normalized(x, x.mean(axis=0), x.var(axis=0), eps, gamma, beta)}),
            Variant("eval mode divides by running_var + eps; divide by sqrt(running_var + eps)",
                    {"out": gamma * (x - rm) / (rv + eps) + beta}),
            Variant("eval mode ignores gamma and beta", {"out": (x - rm) / np.sqrt(rv + eps)}),
        ])
        if isinstance(after, dict) and "running_mean" in param:
            for key in ("running_mean", "running_var"):
                now = after.get(key)
                if not (isinstance(now, np.ndarray) and np.array_equal(now, param[key])):
                    raise CheckFailed(f"eval mode changed bn_param['{key}']; only train steps update the running "
                                      "statistics")

    rng = ctx.rng("fixed")
    fixed = {"eps": ref.BN_EPS, **ref.batchnorm_inputs(int(rng.integers(2**31)), 4, 3)}
    with prefixed("with bn_param = {'mode': 'eval'} (running statistics default to zeros and ones)"):
        check(fixed, {"mode": "eval"})
    ctx.check_property(eval_cases(), check)


def _bn_backward_expected(case: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[Variant]]:
    """The reference's (dx, dgamma, dbeta) and what known mistaken backward passes return instead."""
    x, gamma, beta, eps = case["x"], case["gamma"], case["beta"], case["eps"]
    dout = np.random.default_rng(case["dout_seed"]).standard_normal(x.shape)
    _, cache = ref.batchnorm_forward(x, gamma, beta, {"mode": "train", "eps": eps})
    dx, dgamma, dbeta = ref.batchnorm_backward(dout, cache)
    x_hat, _, inv_std = cache
    n = x.shape[0]
    dx_hat = dout * gamma
    inv_std_unbiased = 1.0 / np.sqrt(x.var(axis=0, ddof=1) + eps)
    x_hat_unbiased = (x - x.mean(axis=0)) * inv_std_unbiased
    _, ones_cache = ref.batchnorm_forward(x, np.ones_like(gamma), beta, {"mode": "train", "eps": eps})
    expected = {"dbeta": dbeta, "dgamma": dgamma, "dx": dx}
    variants = [
        Variant("dx leaves out the gradient through the batch mean and variance (dx = dout * gamma / std): "
                "x_hat depends on x through them too", {"dx": dx_hat * inv_std}),
        Variant("dx leaves out the gradient through the batch variance",
                {"dx": inv_std * (dx_hat - dx_hat.mean(axis=0))}),
        Variant("dx leaves out the gradient through the batch mean",
                {"dx": inv_std * (dx_hat - x_hat * (dx_hat * x_hat).mean(axis=0))}),
        Variant("dx leaves out gamma: the gradient reaching x_hat is dout * gamma",
                {"dx": ref.batchnorm_backward(dout, ones_cache)[0]}),
        Variant("dgamma and dbeta are averaged over the batch; they must be summed",
                {"dgamma": dgamma / n, "dbeta": dbeta / n}),
        Variant("dgamma and dbeta are swapped", {"dgamma": dbeta, "dbeta": dgamma}),
        Variant("dx is computed with the unbiased variance; the forward pass normalizes with the biased one",
                {"dx": ref.batchnorm_backward(dout, (x_hat_unbiased, gamma, inv_std_unbiased))[0]}),
    ]
    return {"dout": dout, **expected}, variants


@plan.test("bn_backward")
def bn_backward(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        x, gamma, beta = case["x"], case["gamma"], case["beta"]
        expected, variants = _bn_backward_expected(case)
        dout = expected.pop("dout")
        _, cache, _ = _bn(ctx, x, gamma, beta, {"mode": "train", "eps": case["eps"]})
        result = ctx.call("batchnorm_backward", dout, cache)
        dx, dgamma, dbeta = expect_tuple(result, 3, "batchnorm_backward", "dx, dgamma, dbeta")
        check_outputs({"dbeta": dbeta, "dgamma": dgamma, "dx": dx}, expected, variants)

    ctx.check_property(bn_cases(), check)


BN = Layer(
    Contract("batchnorm_forward", args=("x", "gamma", "beta", "bn_param"), returns=("out", "cache"), handle="cache",
             reference=ref.batchnorm_forward, mutates=("bn_param",)),
    Contract("batchnorm_backward", args=("dout", "cache"), returns=("dx", "dgamma", "dbeta"),
             reference=ref.batchnorm_backward),
    upstream={"out": "dout"}, grads={"x": "dx", "gamma": "dgamma", "beta": "dbeta"})


@plan.test("bn_gradcheck")
def bn_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    p = ref.batchnorm_inputs(int(rng.integers(2**31)), 4, 3)
    inputs = {"x": p["x"], "gamma": p["gamma"], "beta": p["beta"], "bn_param": {"mode": "train"}}
    ctx.details["errors"] = BN.gradient_check(ctx, inputs, {"dout": rng.standard_normal(p["x"].shape)}, rng)


@plan.test("bn_stability")
def bn_stability(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    n = 6
    # A constant feature (zero variance: only eps keeps 1/std finite), one far from the origin, two ordinary ones.
    x = np.column_stack([np.full(n, 2.5), 1e3 + rng.standard_normal(n), rng.standard_normal(n),
                         -4.0 + 0.5 * rng.standard_normal(n)])
    gamma, beta = rng.uniform(0.5, 2.0, 4), rng.standard_normal(4)
    dout = rng.standard_normal(x.shape)
    hint = "a constant feature has zero batch variance: only eps, under the square root, keeps 1/sqrt(var + eps) finite"
    try:
        out, cache, _ = _bn(ctx, x, gamma, beta, {"mode": "train", "eps": 1e-5})
    except NotFinite as exc:
        raise exc.amended(f"batchnorm_forward: {exc.message}: {hint}") from None
    expected, ref_cache = ref.batchnorm_forward(x, gamma, beta, {"mode": "train", "eps": 1e-5})
    assert_close(out, expected, "out")
    result = expect_tuple(ctx.call("batchnorm_backward", dout, cache), 3, "batchnorm_backward", "dx, dgamma, dbeta")
    for name, got, want in zip(("dx", "dgamma", "dbeta"), result, ref.batchnorm_backward(dout, ref_cache)):
        value = expect_array(got, name, want.shape, finite=False)
        if not np.all(np.isfinite(value)):
            raise CheckFailed(f"batchnorm_backward: {name} has non-finite values: {hint}")
        assert_close(value, want, name)


# -- early stopping -----------------------------------------------------------------------------------------

# Values are multiples of GRID (exact in binary) times a scale; every min_delta lies off the grid, so no
# gain is within rounding of min_delta, where ">" against ">=" would be a convention, not a bug.
GRID = 0.125
DELTAS_IN_GRID_STEPS = (0.3, 0.7, 1.4, 2.6)
PROBES = 6
PROBE_LENGTH = 30


@st.composite
def es_cases(draw: st.DrawFn, mode: str, with_delta: bool) -> dict[str, Any]:
    """A sequence of monitored values (plateaus, improvements, regressions), a patience and a min_delta."""
    scale = draw(st.sampled_from([1.0, 0.01, 100.0]))
    steps = draw(st.lists(st.integers(-12, 12), min_size=1, max_size=25))
    delta = draw(st.sampled_from(DELTAS_IN_GRID_STEPS)) * GRID * scale if with_delta else 0.0
    return {"mode": mode, "patience": draw(st.integers(1, 5)), "min_delta": delta, "scale": scale,
            "values": [k * GRID * scale for k in steps]}


def es_probes(case: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Longer walks on the case's grid with its settings, to tell apart mistakes a short sequence cannot."""
    probes = []
    for _ in range(PROBES):
        walk = np.cumsum(rng.choice([-2, -1, -1, 0, 0, 1, 2], size=PROBE_LENGTH))
        if case["mode"] == "max":
            walk = -walk
        probes.append({**case, "values": [float(k) * GRID * case["scale"] for k in walk]})
    return probes


class _Misread(ref.EarlyStopping):
    """The reference's EarlyStopping with a known misreading of the contract switched on.

    `against_last`: an epoch counts as an improvement when it beats the previous epoch's value (the best
    value is still kept as the reference keeps it); `strict=False`: a gain of exactly min_delta improves.
    """

    def __init__(self, patience: int, min_delta: float, mode: str, *, against_last: bool = False,
                 strict: bool = True) -> None:
        super().__init__(patience, min_delta, mode)
        self.against_last, self.strict, self.last = against_last, strict, None

    def _gain(self, value: float, over: float) -> float:
        return over - value if self.mode == "min" else value - over

    def improves(self, value: float) -> bool:
        if self.strict or self.best_value is None:
            return super().improves(value)
        return self._gain(value, self.best_value) >= self.min_delta

    def step(self, value: float) -> bool:
        counts = self.last is None or self._gain(value, self.last) > self.min_delta
        before = self.epochs_without_improvement
        stop = super().step(value)
        self.last = value
        if not self.against_last:
            return stop
        self.epochs_without_improvement = 0 if counts else before + 1
        return self.epochs_without_improvement >= self.patience


def _es_rule(case: dict[str, Any], *, wait_needed: int | None = None, mode_used: str | None = None,
             min_delta: float | None = None, first_epoch: int = 0, best_is_last: bool = False,
             **misread: bool) -> list[dict[str, Any]]:
    """The trace of the reference's early stopping under a (possibly mistaken) reading of the contract."""
    stopper = _Misread(case["patience"] if wait_needed is None else wait_needed,
                       case["min_delta"] if min_delta is None else min_delta, mode_used or case["mode"], **misread)
    trace = []
    for value in case["values"]:
        stop = stopper.step(value)
        assert stopper.best_epoch is not None
        trace.append({"stop": stop, "best_value": value if best_is_last else stopper.best_value,
                      "best_epoch": stopper.best_epoch + first_epoch})
    return trace


def _es_reference(case: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"stop": s.stop, "best_value": s.best_value, "best_epoch": s.best_epoch}
            for s in ref.early_stopping_trace(case["values"], case["patience"], case["min_delta"], case["mode"])]


def _es_rules(case: dict[str, Any]) -> list[Rule]:
    """Known mistaken readings of the contract, most specific first."""
    pytorch_max = "in mode 'max' higher is better"

    def rule(**kw: Any) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
        return lambda inputs: _es_rule(inputs, **kw)

    rules = []
    if case["mode"] == "max":
        rules.append(Rule(f"mode='max' is ignored: lower values are treated as better; {pytorch_max}",
                          rule(mode_used="min")))
    else:
        rules.append(Rule(f"higher values are treated as better; in mode '{case['mode']}' lower is better",
                          rule(mode_used="max")))
    if case["min_delta"] > 0:
        rules.append(Rule("min_delta is ignored: any improvement, however small, resets the count; only a gain of "
                          "more than min_delta is an improvement", rule(min_delta=0.0)))
    return rules + [
        Rule("best_epoch counts from 1; the first call to step is epoch 0", rule(first_epoch=1)),
        Rule("best_value is the latest value, not the best so far", rule(best_is_last=True)),
        Rule("an improvement is measured against the previous epoch's value; it must beat the best value so far",
             rule(against_last=True)),
        Rule("an epoch that only equals the best value (a gain of exactly min_delta) counts as an improvement; it "
             "must beat the best by more than min_delta", rule(strict=False)),
        Rule("it stops one epoch late: it waits for patience + 1 epochs without improvement (compare the count "
             "with >= patience)", rule(wait_needed=case["patience"] + 1)),
        Rule("it stops one epoch early: it stops after patience - 1 epochs without improvement",
             rule(wait_needed=case["patience"] - 1)),
    ]


def _explain(case: dict[str, Any]) -> Callable[[int], str]:
    """What the reference did at each step, in words."""
    stopper = ref.EarlyStopping(case["patience"], case["min_delta"], case["mode"])
    states = []
    for value in case["values"]:
        stop = stopper.step(value)
        states.append(f"value {value:g}; best {stopper.best_value:g} at epoch {stopper.best_epoch}; "
                      f"{stopper.epochs_without_improvement} epoch(s) in a row without an improvement of more than "
                      f"{case['min_delta']:g}; patience {case['patience']}" + ("; stop" if stop else ""))
    return lambda step: states[step]


def _observer(ctx: Context, constructor_kwargs: Callable[[dict[str, Any]], dict[str, Any]]) -> Observe:
    """Drives a fresh candidate EarlyStopping through a case's values; records what it shows after each step."""

    def observe(case: dict[str, Any], steps: int | None) -> list[dict[str, Any]]:
        stopper = ctx.new("EarlyStopping", case["patience"], **constructor_kwargs(case))
        trace = []
        for value in case["values"][:steps]:
            stop = ctx.method(stopper, "step", value)
            if isinstance(stop, np.bool_):
                stop = bool(stop)
            if not isinstance(stop, bool):
                raise CheckFailed(f"EarlyStopping.step must return a bool (True to stop); it returned "
                                  f"{type(stop).__name__} {stop!r}")
            best_value = ctx.attr(stopper, "best_value")
            best_epoch = ctx.attr(stopper, "best_epoch")
            if isinstance(best_value, (np.floating, np.integer)):
                best_value = float(best_value)
            if isinstance(best_epoch, np.integer):
                best_epoch = int(best_epoch)
            trace.append({"stop": stop, "best_value": best_value, "best_epoch": best_epoch})
        return trace

    return observe


def _es_check(ctx: Context, constructor_kwargs: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[Any], None]:
    observe = _observer(ctx, constructor_kwargs)

    def check(case: dict[str, Any]) -> None:
        check_trace(observe, case, _es_reference, "EarlyStopping", _es_rules(case),
                    probes=es_probes(case, ctx.rng("probes")), stop=lambda s: bool(s["stop"]), explain=_explain(case))

    return check


def _es_describe(case: dict[str, Any]) -> str:
    return (f"EarlyStopping(patience={case['patience']}, min_delta={case['min_delta']:g}, mode={case['mode']!r}), "
            f"values={[float(f'{v:.6g}') for v in case['values']]}")


def _es_fixed(mode: str, steps: list[int], patience: int = 2, delta_steps: float = 0.0) -> dict[str, Any]:
    """A hand-made case on the grid: every known mistake changes when (or whether) it stops, and its probes
    walk with the same settings."""
    return {"mode": mode, "patience": patience, "min_delta": delta_steps * GRID, "scale": 1.0,
            "values": [k * GRID for k in steps]}


# Small steps under min_delta, plateaus, a regression after an improvement: cases a short random draw can miss.
ES_FIXED = {
    "es_min": [_es_fixed("min", [8, 4, 7, 6, 5, 6, 5, 4, 3])],
    "es_min_delta": [_es_fixed("min", [8, 7, 6, 6, 5, 4, 4, 3, 3, 3], delta_steps=1.4)],
    "es_max": [_es_fixed("max", [0, 2, 1, 1, 3, 2, 2, 2, 4]),
               _es_fixed("max", [0, 1, 2, 2, 3, 4, 4, 5, 5, 5], delta_steps=1.4)],
}


def _es_test(ctx: Context, cases: st.SearchStrategy[Any], kwargs: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    check = _es_check(ctx, kwargs)
    ctx.check_property(cases, check, describe=_es_describe)
    run_fixed(ES_FIXED[ctx.test_id], check, _es_describe)


@plan.test("es_min")
def es_min(ctx: Context) -> None:
    # Constructed with the patience only: min_delta 0.0 and mode "min" must be the defaults.
    _es_test(ctx, es_cases("min", with_delta=False), lambda case: {})


@plan.test("es_min_delta")
def es_min_delta(ctx: Context) -> None:
    _es_test(ctx, es_cases("min", with_delta=True), lambda case: {"min_delta": case["min_delta"]})


@plan.test("es_max")
def es_max(ctx: Context) -> None:
    _es_test(ctx, st.one_of(es_cases("max", with_delta=False), es_cases("max", with_delta=True)),
             lambda case: {"min_delta": case["min_delta"], "mode": "max"})
