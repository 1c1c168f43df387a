"""Test plan for `cnn`: 2-D convolution and max-pooling in numpy, and a small CNN trained on 8x8 digits.

GRADING.md's layers, per function: conformance (exact shapes, float64, finite,
inputs untouched) before values; forward and backward against the reference
(itself verified against PyTorch's conv2d and max_pool2d in
tests/test_reference_cnn.py) on hypothesis-generated and fixed cases that
include N >= 2, strides of 2 and 3, pad 0 as well as pad >= 1, sizes where
H + 2*pad - KH is not a multiple of the stride, and overlapping pooling
windows; finite differences of the candidate's own forward, so a convention
bug (a flipped kernel) is told apart from wrong backward math; ties in
max-pooling accepted as any valid split (grader/engine/checks/ties.py). Known
mistakes are named: flipped kernel, output size rounded up or refused, padding
not cropped from dx, cropping with pad:-pad, stride forgotten in the backward
pass, db averaged, pooling gradient assigned instead of accumulated or spread
over the window. train_cnn is scored on held-out digits with the grader's own
forward pass; the speed of conv2d_forward is reported, not scored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from grader.engine.checks import strategies as gst
from grader.engine.checks.compare import assert_close, check_output, compare, expect_array, expect_params, expect_tuple
from grader.engine.checks.layers import Contract, Layer, check_values, expect_values, run_fixed
from grader.engine.checks.ties import check_tied_split, pool_window_ties
from grader.engine.checks.timing import compare_speed
from grader.engine.checks.training import score_classifier
from grader.engine.checks.variants import Variant, check_outputs, matches, matching_variant
from grader.engine.plan import CandidateRaised, CheckFailed, Context, Plan
from reference import cnn as ref

plan = Plan()

Arrays = dict[str, np.ndarray]
CONV_GRADS = ("dx", "dw", "db")

FLIPPED_MESSAGE = ("kernel flipped: this is convolution, the contract is cross-correlation (as PyTorch's conv2d): "
                   "out[n, f, i, j] = b[f] + sum of x_padded[n, c, i*stride + p, j*stride + q] * w[f, c, p, q], "
                   "with w not rotated")
DB_MEAN_MESSAGE = ("db is averaged; it must be summed over the batch and every output position "
                   "(each position adds its own gradient; the mean is taken in the loss)")
ROUNDING_HINT = ("H' = 1 + (H + 2*pad - KH) // stride rounds down: windows that would run past the padded input "
                 "are dropped")


def _divisible(c: dict[str, Any]) -> bool:
    """Whether H + 2*pad - KH and W + 2*pad - KW are both multiples of the stride."""
    _, _, H, W = c["x"].shape
    _, _, KH, KW = c["w"].shape
    return (H + 2 * c["pad"] - KH) % c["stride"] == 0 and (W + 2 * c["pad"] - KW) % c["stride"] == 0


def _ceil_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    return 1 + -(-(size + 2 * pad - kernel) // stride)


# -- cases --------------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw: st.DrawFn) -> dict[str, Any]:
    """N >= 2, strides 1 to 3, pads 0 to 2, kernels of 1 to 3 (not always square), sizes not always divisible."""
    n, c, f = draw(st.integers(2, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * pad), 7))
    w = draw(st.integers(max(1, kw - 2 * pad), 7))
    ho, wo = ref.output_size(h, kh, stride, pad), ref.output_size(w, kw, stride, pad)
    return {"stride": stride, "pad": pad, "x": draw(gst.arrays((n, c, h, w))), "w": draw(gst.arrays((f, c, kh, kw))),
            "b": draw(gst.arrays((f,))), "dout": draw(gst.arrays((n, f, ho, wo)))}


def fixed_conv_cases(ctx: Context) -> list[dict[str, Any]]:
    """Gaussian cases that always run: stride 2 with pad 1, sizes not divisible by the stride, pad 0."""
    rng = ctx.rng("fixed")
    cases = []
    for N, C, H, W, F, KH, KW, stride, pad in [(2, 3, 7, 6, 4, 3, 2, 2, 1), (3, 2, 8, 7, 3, 3, 3, 2, 0),
                                               (2, 2, 9, 10, 2, 2, 4, 3, 2)]:
        case = ref.conv_inputs(int(rng.integers(2**31)), N, C, H, W, F, KH, KW)
        shape = (N, F, ref.output_size(H, KH, stride, pad), ref.output_size(W, KW, stride, pad))
        cases.append({"stride": stride, "pad": pad, **case, "dout": rng.standard_normal(shape)})
    return cases


@st.composite
def pool_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Overlapping (stride < kernel), tiling and gapped windows; unique values, so there are no ties."""
    n, c = draw(st.integers(2, 3)), draw(st.integers(1, 3))
    kernel, stride = draw(st.integers(2, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kernel, kernel + 4)), draw(st.integers(kernel, kernel + 4))
    ho, wo = ref.output_size(h, kernel, stride), ref.output_size(w, kernel, stride)
    # Distinct multiples of 0.25 in a drawn order rather than unique floats: no ties, far apart compared with
    # a finite-difference step, readable in a counterexample, and cheap to shrink (unique float arrays shrink
    # one element at a time against the uniqueness constraint, for minutes).
    size = n * c * h * w
    order = np.array(draw(st.permutations(range(size))), dtype=np.float64)
    return {"kernel": kernel, "stride": stride, "x": ((order - size // 2) * 0.25).reshape(n, c, h, w),
            "dout": draw(gst.arrays((n, c, ho, wo)))}


def fixed_pool_cases(ctx: Context) -> list[dict[str, Any]]:
    rng = ctx.rng("fixed")
    cases = []
    for shape, kernel, stride in [((2, 3, 6, 6), 3, 1), ((3, 2, 7, 8), 3, 2), ((2, 2, 5, 7), 2, 2)]:
        x = ref.unique_image(int(rng.integers(2**31)), shape)
        out_shape = (*shape[:2], ref.output_size(shape[2], kernel, stride), ref.output_size(shape[3], kernel, stride))
        cases.append({"kernel": kernel, "stride": stride, "x": x, "dout": rng.standard_normal(out_shape)})
    return cases


# -- contracts ----------------------------------------------------------------------------------------

CONV = Layer(
    Contract("conv2d_forward", args=("x", "w", "b"), options=("stride", "pad"), returns=("out", "cache"),
             handle="cache", reference=ref.conv2d_forward),
    Contract("conv2d_backward", args=("dout", "cache"), returns=CONV_GRADS, reference=ref.conv2d_backward),
    upstream={"out": "dout"}, grads={"x": "dx", "w": "dw", "b": "db"})
POOL = Layer(
    Contract("maxpool2d_forward", args=("x",), options=("kernel", "stride"), returns=("out", "cache"),
             handle="cache", reference=ref.maxpool2d_forward),
    Contract("maxpool2d_backward", args=("dout", "cache"), returns=("dx",), reference=ref.maxpool2d_backward),
    upstream={"out": "dout"}, grads={"x": "dx"})


# -- calling the candidate ----------------------------------------------------------------------------


def _conv_forward(ctx: Context, c: dict[str, Any], stride: int | None = None, own: bool = False) -> tuple[Any, Any]:
    """(out, cache handle) from the candidate, with a hint when it refuses a size the contract allows."""
    stride = c["stride"] if stride is None else stride
    try:
        result = CONV.forward.call(ctx, {**c, "stride": stride}, own=own)
    except CandidateRaised as exc:
        if exc.error.missing or _divisible({**c, "stride": stride}) or not _works_when_divisible(ctx, c, stride):
            raise
        raise exc.amended(f"{exc.message}. It raises only where H + 2*pad - KH is not a multiple of the stride "
                          f"(the same input cropped to a multiple works); such sizes are valid: {ROUNDING_HINT}"
                          ) from None
    return result["out"], result["cache"]


def _works_when_divisible(ctx: Context, c: dict[str, Any], stride: int) -> bool:
    """Whether the candidate's conv2d_forward runs on x cropped so that both sizes divide by the stride."""
    _, _, H, W = c["x"].shape
    _, _, KH, KW = c["w"].shape
    pad = c["pad"]
    H2 = H - (H + 2 * pad - KH) % stride
    W2 = W - (W + 2 * pad - KW) % stride
    if H2 < 1 or W2 < 1 or H2 + 2 * pad < KH or W2 + 2 * pad < KW:
        return False
    reply = ctx.raw_call({"fn": "conv2d_forward"}, c["x"][:, :, :H2, :W2].copy(), c["w"], c["b"], stride=stride,
                         pad=pad, keep=[1])
    return reply.ok


def _check_out_shape(out: Any, c: dict[str, Any]) -> None:
    """Name a wrong output size before the generic shape message."""
    if not isinstance(out, np.ndarray) or out.ndim != 4:
        return
    _, _, H, W = c["x"].shape
    _, _, KH, KW = c["w"].shape
    s, p = c["stride"], c["pad"]
    floor = (ref.output_size(H, KH, s, p), ref.output_size(W, KW, s, p))
    if out.shape[2:] == floor:
        return
    if out.shape[2:] == (_ceil_size(H, KH, s, p), _ceil_size(W, KW, s, p)):
        raise CheckFailed(f"out has {out.shape[2]} x {out.shape[3]} positions; expected {floor[0]} x {floor[1]}: "
                          f"the output size rounds up when H + 2*pad - KH is not a multiple of the stride; "
                          f"{ROUNDING_HINT}")
    if p > 0 and out.shape[2:] == (ref.output_size(H, KH, s), ref.output_size(W, KW, s)):
        raise CheckFailed(f"out has {out.shape[2]} x {out.shape[3]} positions; expected {floor[0]} x {floor[1]}: "
                          f"the padding is ignored (pad={p} zeros on every side)")


def _forward_first(out: Any, shape: tuple[int, ...], what: str, diagnose: Callable[[], None]) -> None:
    """A backward pass is fed an upstream gradient of out's contract shape; a misshapen out is reported first."""
    if isinstance(out, np.ndarray) and out.shape == shape:
        return
    try:
        diagnose()
    except CheckFailed as exc:
        raise exc.amended(f"{what}: {exc.message} (fix the forward pass first: the backward pass is tested with an "
                          f"upstream gradient of shape {shape})") from None
    expect_array(out, f"{what}'s out", shape)


def _conv_backward(ctx: Context, dout: np.ndarray, cache: Any, own: bool = False) -> Arrays:
    return CONV.backward.call(ctx, {"dout": dout, "cache": cache}, own=own)


def _check_dx_shape(dx: Any, c: dict[str, Any]) -> None:
    """The two cropping mistakes show in dx's shape: the padded shape, or an empty array when pad is 0."""
    if not isinstance(dx, np.ndarray):
        return
    N, C, H, W = c["x"].shape
    p = c["pad"]
    if p > 0 and dx.shape == (N, C, H + 2 * p, W + 2 * p):
        raise CheckFailed(f"dx has the padded input's shape {dx.shape}; expected {c['x'].shape}: the padding is "
                          "not cropped from dx (dx = dx_padded[:, :, pad:pad+H, pad:pad+W])")
    if p == 0 and dx.shape != c["x"].shape and dx.size == 0:
        raise CheckFailed(f"dx is empty (shape {dx.shape}) when pad = 0: dx_padded[:, :, pad:-pad] is "
                          "dx_padded[:, :, 0:0] when pad is 0; crop with pad:pad+H and pad:pad+W")


def _pool_forward(ctx: Context, c: dict[str, Any], own: bool = False) -> tuple[Any, Any]:
    result = POOL.forward.call(ctx, c, own=own)
    return result["out"], result["cache"]


def _check_pool_shape(out: Any, c: dict[str, Any]) -> None:
    if not isinstance(out, np.ndarray) or out.ndim != 4:
        return
    _, _, H, W = c["x"].shape
    k, s = c["kernel"], c["stride"]
    floor = (ref.output_size(H, k, s), ref.output_size(W, k, s))
    if out.shape[2:] != floor and out.shape[2:] == (_ceil_size(H, k, s), _ceil_size(W, k, s)):
        raise CheckFailed(f"out has {out.shape[2]} x {out.shape[3]} windows; expected {floor[0]} x {floor[1]}: "
                          "the number of windows rounds up; it is 1 + (H - kernel) // stride (a window that would "
                          "run past the input is dropped)")


def _pool_backward(ctx: Context, dout: np.ndarray, cache: Any, x_shape: tuple[int, ...],
                   own: bool = False) -> np.ndarray:
    dx = POOL.backward.call(ctx, {"dout": dout, "cache": cache}, own=own)["dx"]
    return expect_array(dx, "dx", x_shape) if own else expect_values(dx, "dx", x_shape)


# -- convolution --------------------------------------------------------------------------------------


@plan.test("conv_forward")
def conv_forward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        out, _ = _conv_forward(ctx, c, own=True)
        _check_out_shape(out, c)
        args = (c["x"], c["w"], c["b"], c["stride"], c["pad"])
        expected, _ = ref.conv2d_forward(*args)
        check_outputs({"out": out}, {"out": expected}, [
            Variant(FLIPPED_MESSAGE, lambda: {"out": ref.conv2d_flipped_forward(*args)}),
            Variant("the bias b is not added", {"out": expected - c["b"][None, :, None, None]}),
        ])

    ctx.check_property(conv_cases(), check)
    large = fixed_conv_cases(ctx)[0]
    large.update(x=large["x"] * 1e3, b=large["b"] * 1e3)  # large pre-activations must stay exact
    run_fixed([*fixed_conv_cases(ctx), large], check)


@plan.test("conv_backward")
def conv_backward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        out, cache = _conv_forward(ctx, c)
        _forward_first(out, c["dout"].shape, "conv2d_forward", lambda: _check_out_shape(out, c))
        got = _conv_backward(ctx, c["dout"], cache, own=True)
        _check_dx_shape(got["dx"], c)
        args = (c["x"], c["w"], c["b"], c["stride"], c["pad"])
        _, ref_cache = ref.conv2d_forward(*args)
        expected = dict(zip(CONV_GRADS, ref.conv2d_backward(c["dout"], ref_cache)))
        arrays = {k: expect_array(got[k], k, v.shape) for k, v in expected.items()}
        if matches(arrays, expected):
            return
        N, _, Ho, Wo = c["dout"].shape
        variant = matching_variant(arrays, [
            Variant(FLIPPED_MESSAGE, lambda: dict(zip(CONV_GRADS, ref.conv2d_flipped_backward(*args[:3], c["dout"],
                                                                                          *args[3:])))),
            Variant(DB_MEAN_MESSAGE, {"db": expected["db"] / N}),
            Variant(DB_MEAN_MESSAGE, {"db": expected["db"] / (N * Ho * Wo)}),
        ], expected)
        if variant is not None:
            raise CheckFailed(variant.message)
        if c["stride"] > 1:
            _diagnose_stride(ctx, c, [k for k in CONV_GRADS if not compare(arrays[k], expected[k]).ok])
        for k in ("db", "dw", "dx"):
            assert_close(arrays[k], expected[k], k)

    ctx.check_property(conv_cases(), check)
    run_fixed(fixed_conv_cases(ctx), check)


def _diagnose_stride(ctx: Context, c: dict[str, Any], wrong: list[str]) -> None:
    """If the same input with stride 1 gives the right gradients, say the backward pass mishandles the stride."""
    one = {**c, "stride": 1}
    args = (c["x"], c["w"], c["b"], 1, c["pad"])
    out, _ = ref.conv2d_forward(*args)
    one["dout"] = np.random.default_rng(out.size).standard_normal(out.shape)
    _, cache = _conv_forward(ctx, one)
    got = _conv_backward(ctx, one["dout"], cache)
    expected = dict(zip(CONV_GRADS, ref.conv2d_backward(one["dout"], ref.conv2d_forward(*args)[1])))
    if matches(got, expected):
        raise CheckFailed(f"{' and '.join(wrong)} wrong only when stride > 1 (with stride 1 on the same input they "
                          "match): window (i, j) starts at row i*stride and column j*stride of the padded input, "
                          "and the backward pass must read from and add into those same positions")


@plan.test("conv_gradcheck")
def conv_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    # stride 2 and pad 1 with H + 2*pad - KH = 5 not a multiple of the stride.
    case = {**ref.conv_inputs(int(rng.integers(2**31)), 2, 2, 5, 4, 3, 2, 2), "stride": 2, "pad": 1}
    out_shape = CONV.forward.expected(case)["out"].shape
    dout = rng.standard_normal(out_shape)
    ctx.details["errors"] = CONV.gradient_check(
        ctx, case, {"dout": dout}, rng, call=lambda c: dict(zip(("out", "cache"), _conv_forward(ctx, c))),
        check_forward=lambda got: _forward_first(got["out"], out_shape, "conv2d_forward",
                                                 lambda: _check_out_shape(got["out"], case)))


# -- max-pooling --------------------------------------------------------------------------------------


@plan.test("pool_forward")
def pool_forward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        out, _ = _pool_forward(ctx, c, own=True)
        _check_pool_shape(out, c)
        check_values({"out": out}, {"out": POOL.forward.expected(c)["out"]})

    ctx.check_property(pool_cases(), check)
    run_fixed(fixed_pool_cases(ctx), check)


@plan.test("pool_backward")
def pool_backward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        x, k, s, dout = c["x"], c["kernel"], c["stride"], c["dout"]
        out, cache = _pool_forward(ctx, c)
        _forward_first(out, dout.shape, "maxpool2d_forward", lambda: _check_pool_shape(out, c))
        dx = _pool_backward(ctx, dout, cache, x.shape, own=True)
        expected = POOL.vjp(c)["dx"]
        if compare(dx, expected).ok:
            return
        spread = ref.maxpool2d_spread_backward(dout, x.shape, k, s)
        variant = matching_variant({"dx": dx}, [
            Variant("each window's gradient goes to every position of the window; it must go only to the "
                    "position of the window's maximum (the others do not affect the output)", {"dx": spread}),
            Variant("each window's gradient is spread evenly over the window (average pooling's gradient); "
                    "max-pooling sends it only to the window's maximum", {"dx": spread / (k * k)}),
        ], {"dx": expected})
        if variant is not None:
            raise CheckFailed(variant.message)
        wrong = ~np.isclose(dx, expected, rtol=1e-7, atol=1e-10 * max(1.0, float(np.abs(expected).max())))
        shared = ref.maxpool2d_window_counts(x, k, s) >= 2
        if np.any(wrong) and np.all(shared[wrong]):
            raise CheckFailed("dx is wrong only at positions that are the maximum of several overlapping windows "
                              "(stride < kernel): such a position must receive the sum of their gradients; "
                              "accumulate (dx[...] += g) instead of assigning (dx[...] = g)")
        note = "" if compare(out, ref.maxpool2d_forward(x, k, s)[0]).ok else "maxpool2d_forward is wrong too"
        assert_close(dx, expected, "dx", hint=note)

    ctx.check_property(pool_cases(), check)
    run_fixed(fixed_pool_cases(ctx), check)


@plan.test("pool_ties")
def pool_ties(ctx: Context) -> None:
    rng = ctx.rng("ties")
    cases = [
        (rng.integers(-1, 2, size=(2, 3, 6, 6)).astype(np.float64), 2, 2),  # many windows with 2 to 4 tied maxima
        (-np.ones((2, 1, 4, 6)), 2, 2),  # every window tied, below zero
        (rng.integers(0, 2, size=(2, 2, 7, 7)).astype(np.float64), 3, 3),  # the last row and column belong to no window
        (rng.integers(0, 2, size=(2, 2, 7, 8)).astype(np.float64), 2, 3),  # gaps between windows
    ]
    def check(c: dict[str, Any]) -> None:
        out, cache = _pool_forward(ctx, c)
        _check_pool_shape(out, c)
        check_values({"out": out}, {"out": POOL.forward.expected(c)["out"]}, own=False)
        dout = rng.standard_normal(out.shape)
        dx = _pool_backward(ctx, dout, cache, c["x"].shape)
        check_tied_split(dx, pool_window_ties(c["x"], c["kernel"], c["stride"]), dout.ravel(),
                         "maxpool2d_backward with ties")

    run_fixed([{"x": x, "kernel": kernel, "stride": stride} for x, kernel, stride in cases], check)
    ctx.note("ties split any way among the tied maxima are accepted")


@plan.test("pool_gradcheck")
def pool_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    kernel, stride = 2, 1  # overlapping windows
    x = gst.unique_spread((2, 1, 4, 5), rng)
    while ref.maxpool2d_window_counts(x, kernel, stride).max() < 2:  # some pixel must be the max of two windows
        x = gst.unique_spread((2, 1, 4, 5), rng)
    case = {"x": x, "kernel": kernel, "stride": stride}
    out_shape = POOL.forward.expected(case)["out"].shape
    dout = rng.standard_normal(out_shape)
    ctx.details["errors"] = POOL.gradient_check(
        ctx, case, {"dout": dout}, rng,
        check_forward=lambda got: _forward_first(got["out"], out_shape, "maxpool2d_forward",
                                                 lambda: _check_pool_shape(got["out"], case)))


# -- training -----------------------------------------------------------------------------------------

PASS_ACCURACY = 0.90


def _channels_last_w2(W2: np.ndarray) -> np.ndarray:
    """W2 rows reordered for a network that flattened (N, 4, 4, 8) instead of (N, 8, 4, 4)."""
    f, h, w = np.meshgrid(np.arange(ref.NUM_FILTERS), np.arange(4), np.arange(4), indexing="ij")
    return W2[((h * 4 + w) * ref.NUM_FILTERS + f).ravel()]


def _training_diagnosis(params: Arrays, X: np.ndarray, y: np.ndarray) -> str:
    """Name a convention mismatch that the held-out accuracy alone does not show."""
    flipped = {**params, "W1": params["W1"][:, :, ::-1, ::-1]}
    if ref.accuracy(flipped, X, y) >= PASS_ACCURACY:
        return ": with W1 flipped it would pass, so your network computes a convolution (flipped kernel); " \
               "the grader's forward pass is a cross-correlation"
    if ref.accuracy({**params, "W2": _channels_last_w2(params["W2"])}, X, y) >= PASS_ACCURACY:
        return ": your network flattens the pooled maps channels-last; the contract flattens (N, 8, 4, 4) " \
               "in C order (a.reshape(N, -1))"
    if ref.accuracy(params, X, y) < 0.2:
        return ": the returned params look untrained"
    return ""


@plan.test("train_cnn")
def train_cnn(ctx: Context) -> None:
    split = ref.digits_split(ctx.seed)
    params = ctx.call("train_cnn", split.X_train, split.y_train, 0)
    checked = expect_params(params, ref.PARAM_SHAPES, "train_cnn's params", diverged_hint="learning rate too high?")
    ctx.details["held_out_images"] = int(split.y_test.size)
    score_classifier(ctx, ref.predict(checked, split.X_test), split.y_test, ref.NUM_CLASSES, PASS_ACCURACY,
                     per_class_title="Held-out accuracy per digit", class_label="digit",
                     on=f" on {split.y_test.size} digits",
                     diagnosis=lambda _: _training_diagnosis(checked, split.X_test, split.y_test))


# -- efficiency ---------------------------------------------------------------------------------------

SPEED_INPUT = {"N": 8, "C": 3, "H": 16, "W": 16, "F": 8, "K": 3, "stride": 1, "pad": 1}


@plan.test("conv_efficiency")
def conv_efficiency(ctx: Context) -> None:
    s = SPEED_INPUT
    case = ref.conv_inputs(int(ctx.rng("input").integers(2**31)), s["N"], s["C"], s["H"], s["W"], s["F"], s["K"],
                           s["K"])
    x, w, b = case["x"], case["w"], case["b"]

    def candidate() -> Any:
        return ctx.call("conv2d_forward", x, w, b, stride=s["stride"], pad=s["pad"], keep=[1])

    out, _ = expect_tuple(candidate(), 2, "conv2d_forward", "out, cache")
    check_output(out, ref.conv2d_forward(x, w, b, s["stride"], s["pad"])[0], "out",
                 hint="the speed of a wrong conv2d_forward is not measured")
    speed = compare_speed(candidate, lambda: ref.conv2d_forward(x, w, b, s["stride"], s["pad"]),
                          round_trip=lambda: ctx.pristine_helper("common:getitem", [x, w, b], 0))
    ctx.details.update(speed.details())
    ctx.note(f"conv2d_forward on N={s['N']}, C={s['C']}, {s['H']}x{s['W']}, {s['F']} filters of {s['K']}x{s['K']}: "
             f"{speed.verdict('im2col')}")
