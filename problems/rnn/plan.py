"""Test plan for `rnn`: a tanh RNN step, an LSTM step and an LSTM over a sequence, in numpy.

GRADING.md's layers, per function: conformance (exact shapes, float64, finite,
inputs untouched) before values; forward and backward against the reference
(itself verified against PyTorch's RNNCell, LSTMCell and LSTM in
tests/test_reference_rnn.py) on a fixed and on hypothesis-generated cases;
finite differences of the candidate's own forward, so a convention bug (the
course's gate order) is told apart from wrong backward math; saturated gates
at pre-activations of 1e3. Known mistakes are named (grader/engine/checks/variants.py):
gate order i, f, o, g, tanh derivative 1 - tanh, cell gradient not carried,
upstream gradient used only at the last step, dh0 missing. The last test
measures the gradient norm flowing back through time in the candidate's own
RNN and LSTM, the picture of the vanishing-gradient question.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from grader.engine.checks import strategies as gst
from grader.engine.checks.compare import NotFinite, assert_close, compare
from grader.engine.checks.layers import Contract, Layer, check_values, expect_values, precision_of
from grader.engine.checks.variants import Variant
from grader.engine.plan import CheckFailed, Context, Plan
from grader.engine.report import Figure
from reference import rnn as ref

plan = Plan()

Arrays = dict[str, np.ndarray]

RNN_GRADS = ("dx", "dh_prev", "dWx", "dWh", "db")
LSTM_STEP_GRADS = ("dx", "dh_prev", "dc_prev", "dWx", "dWh", "db")
LSTM_GRADS = ("dx", "dh0", "dWx", "dWh", "db")

GATE_ORDER_MESSAGE = ("gates read in the order i, f, o, g (the course convention); the contract is PyTorch's "
                      "i, f, g, o: columns 2H:3H of the pre-activation are the cell candidate g (tanh) and "
                      "3H:4H the output gate o")
TANH_DERIVATIVE_MESSAGE = ("the derivative of tanh is taken as 1 - tanh(a); it is 1 - tanh(a)**2 "
                           "(for h = tanh(a): 1 - h**2)")
DB_MEAN_MESSAGE = "db is averaged over the batch; it must be summed (each example adds its own gradient)"
SATURATION_HINT = ("exp overflows for large pre-activations: compute sigmoid as 1 / (1 + exp(-a)) for a >= 0 "
                   "and exp(a) / (1 + exp(a)) for a < 0 (or from exp(-|a|)), and use np.tanh")

# -- cases --------------------------------------------------------------------------------------------
# Weights in [-1, 1] and inputs in [-2, 2] keep most units away from saturation, so every gradient
# path carries signal; saturation has its own test.


def _weights(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    return draw(gst.arrays(shape, gst.floats(-1.0, 1.0)))


def _signals(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    return draw(gst.arrays(shape, gst.floats(-2.0, 2.0)))


@st.composite
def _sizes(draw: st.DrawFn, max_hidden: int = 4) -> tuple[int, int, int]:
    """N >= 2 (N = 1 hides a mean taken instead of a sum) and D != H (a transposed weight cannot fit)."""
    n, h = draw(st.integers(2, 4)), draw(st.integers(1, max_hidden))
    d = draw(st.integers(1, 4).filter(lambda d: d != h))
    return n, d, h


@st.composite
def rnn_step_cases(draw: st.DrawFn) -> dict[str, Any]:
    n, d, h = draw(_sizes())
    return {"x": _signals(draw, (n, d)), "h_prev": _signals(draw, (n, h)), "Wx": _weights(draw, (d, h)),
            "Wh": _weights(draw, (h, h)), "b": _weights(draw, (h,)), "dh_next": _signals(draw, (n, h))}


@st.composite
def lstm_step_cases(draw: st.DrawFn) -> dict[str, Any]:
    n, d, h = draw(_sizes())
    return {"x": _signals(draw, (n, d)), "h_prev": _signals(draw, (n, h)), "c_prev": _signals(draw, (n, h)),
            "Wx": _weights(draw, (d, 4 * h)), "Wh": _weights(draw, (h, 4 * h)), "b": _weights(draw, (4 * h,)),
            "dh_next": _signals(draw, (n, h)), "dc_next": _signals(draw, (n, h))}


@st.composite
def lstm_sequence_cases(draw: st.DrawFn) -> dict[str, Any]:
    n, d, h = draw(_sizes(max_hidden=3))
    t = draw(st.integers(2, 4))
    return {"x": _signals(draw, (n, t, d)), "h0": _signals(draw, (n, h)), "Wx": _weights(draw, (d, 4 * h)),
            "Wh": _weights(draw, (h, 4 * h)), "b": _weights(draw, (4 * h,)), "dh": _signals(draw, (n, t, h))}


def _fixed(ctx: Context, make: Callable[..., Arrays], *sizes: int, upstream: dict[str, tuple[int, ...]]) -> Arrays:
    """A fixed Gaussian case from the reference's generators, with Gaussian upstream gradients."""
    rng = ctx.rng("fixed")
    case = make(int(rng.integers(2**31)), *sizes)
    case.update({name: rng.standard_normal(shape) for name, shape in upstream.items()})
    return case


# -- contracts ----------------------------------------------------------------------------------------

RNN_STEP = Layer(
    Contract("rnn_step_forward", args=("x", "h_prev", "Wx", "Wh", "b"), returns=("h_next", "cache"), handle="cache",
             reference=ref.rnn_step_forward),
    Contract("rnn_step_backward", args=("dh_next", "cache"), returns=RNN_GRADS, reference=ref.rnn_step_backward),
    upstream={"h_next": "dh_next"}, grads={"x": "dx", "h_prev": "dh_prev", "Wx": "dWx", "Wh": "dWh", "b": "db"})
LSTM_STEP = Layer(
    Contract("lstm_step_forward", args=("x", "h_prev", "c_prev", "Wx", "Wh", "b"),
             returns=("h_next", "c_next", "cache"), handle="cache", reference=ref.lstm_step_forward),
    Contract("lstm_step_backward", args=("dh_next", "dc_next", "cache"), returns=LSTM_STEP_GRADS,
             reference=ref.lstm_step_backward),
    upstream={"h_next": "dh_next", "c_next": "dc_next"},
    grads={"x": "dx", "h_prev": "dh_prev", "c_prev": "dc_prev", "Wx": "dWx", "Wh": "dWh", "b": "db"})
LSTM = Layer(
    Contract("lstm_forward", args=("x", "h0", "Wx", "Wh", "b"), returns=("h", "cache"), handle="cache",
             reference=ref.lstm_forward),
    Contract("lstm_backward", args=("dh", "cache"), returns=LSTM_GRADS, reference=ref.lstm_backward),
    upstream={"h": "dh"}, grads={"x": "dx", "h0": "dh0", "Wx": "dWx", "Wh": "dWh", "b": "db"})


# -- the mistakes, computed by trusted code for diagnosis ---------------------------------------------


def _swap_go(*arrays: np.ndarray) -> list[np.ndarray]:
    """Swap the g and o blocks: a cell reading i, f, o, g on W computes what PyTorch's order computes on this."""
    return [ref.reorder_gates(a) for a in arrays]


Step = Callable[[np.ndarray, np.ndarray, Any], tuple[np.ndarray, ...]]


def _wrong_dtanh(dh_next: np.ndarray, dc_next: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    """lstm_step_backward with the tanh derivative taken as 1 - tanh (on the cell and on the candidate g).

    The reference's backward on an upstream dc_next that makes its cell gradient the mistaken one, then the
    g block of the pre-activation gradient corrected from 1 - g**2 to 1 - g.
    """
    x, h_prev, _, Wx, Wh, i, _, g, o, tanh_c = cache
    shifted = dc_next + dh_next * o * ((1.0 - tanh_c) - (1.0 - tanh_c**2))
    dx, dh_prev, dc_prev, dWx, dWh, db = ref.lstm_step_backward(dh_next, shifted, cache)
    H = g.shape[1]
    da = np.zeros((g.shape[0], 4 * H))
    da[:, 2 * H:3 * H] = (dc_next + dh_next * o * (1.0 - tanh_c)) * i * ((1.0 - g) - (1.0 - g**2))
    return dx + da @ Wx.T, dh_prev + da @ Wh.T, dc_prev, dWx + x.T @ da, dWh + h_prev.T @ da, db + da.sum(axis=0)


def _without_forget(dh_next: np.ndarray, dc_next: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    """lstm_step_backward with dc_prev not multiplied by the forget gate f."""
    dx, dh_prev, dc_prev, dWx, dWh, db = ref.lstm_step_backward(dh_next, dc_next, cache)
    return dx, dh_prev, dc_prev / cache[6], dWx, dWh, db


def _lstm_step_grads(c: Arrays, step: Step) -> Arrays:
    """One LSTM step's gradients on a case, with a mistaken step backward."""
    cache = LSTM_STEP.forward.expected(c)["cache"]
    return dict(zip(LSTM_STEP_GRADS, step(c["dh_next"], c["dc_next"], cache)))


def _lstm_sequence_grads(c: Arrays, dh: np.ndarray, *, carry_cell: bool = True,
                         step: Step = ref.lstm_step_backward) -> Arrays:
    """lstm_backward's outputs with a known mistake: the cell gradient dropped between steps, or a step mistake.

    The reference's forward caches, chained back through time by `step` as the reference's lstm_backward does.
    """
    N, T, H = dh.shape
    _, caches = ref.lstm_forward(c["x"], c["h0"], c["Wx"], c["Wh"], c["b"])
    out = {"dx": np.zeros_like(c["x"]), "dWx": np.zeros_like(c["Wx"]), "dWh": np.zeros_like(c["Wh"]),
           "db": np.zeros_like(c["b"])}
    dh_carry, dc_carry = np.zeros((N, H)), np.zeros((N, H))
    for t in reversed(range(T)):
        g = dict(zip(LSTM_STEP_GRADS, step(dh[:, t] + dh_carry, dc_carry if carry_cell else np.zeros((N, H)),
                                           caches[t])))
        out["dx"][:, t] = g["dx"]
        for k in ("dWx", "dWh", "db"):
            out[k] += g[k]
        dh_carry, dc_carry = g["dh_prev"], g["dc_prev"]
    return {**out, "dh0": dh_carry}


def _lstm_forward_without_tanh(c: Arrays) -> np.ndarray:
    """lstm_forward's h when each step returns o * c instead of o * tanh(c)."""
    N, T, _ = c["x"].shape
    H = c["h0"].shape[1]
    h_t, c_t = c["h0"], np.zeros((N, H))
    h = np.zeros((N, T, H))
    for t in range(T):
        _, c_t, _ = ref.lstm_step_forward(c["x"][:, t], h_t, c_t, c["Wx"], c["Wh"], c["b"])
        o = ref.sigmoid((c["x"][:, t] @ c["Wx"] + h_t @ c["Wh"] + c["b"])[:, 3 * H:])
        h_t = o * c_t
        h[:, t] = h_t
    return h


def _gate_order_grads(grads: Arrays) -> Arrays:
    """Gradients of the i, f, o, g cell: the reference's on swapped weights, weight gradients swapped back."""
    return {k: ref.reorder_gates(v) if k in ("dWx", "dWh", "db") else v for k, v in grads.items()}


# -- RNN step -----------------------------------------------------------------------------------------


@plan.test("rnn_step_forward")
def rnn_step_forward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        got = RNN_STEP.forward.call(ctx, c, own=True)
        linear = c["x"] @ c["Wx"] + c["h_prev"] @ c["Wh"] + c["b"]
        check_values(*RNN_STEP.forward.arrays(got, RNN_STEP.forward.expected(c)), [
            Variant("h_next is the pre-activation itself: apply tanh to x @ Wx + h_prev @ Wh + b",
                    {"h_next": linear}),
            Variant("h_next leaves out the bias b", {"h_next": np.tanh(linear - c["b"])}),
        ])

    ctx.check_property(rnn_step_cases(), check)
    check(_fixed(ctx, ref.rnn_step_inputs, 3, 5, 4, upstream={}))


@plan.test("rnn_step_backward")
def rnn_step_backward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        _, got = RNN_STEP.call_backward(ctx, c)
        h_next = RNN_STEP.forward.expected(c)["h_next"]
        expected = RNN_STEP.vjp(c)

        def with_da(da: np.ndarray) -> Arrays:
            return {"dx": da @ c["Wx"].T, "dh_prev": da @ c["Wh"].T, "dWx": c["x"].T @ da,
                    "dWh": c["h_prev"].T @ da, "db": da.sum(axis=0)}

        da = c["dh_next"] * (1 - h_next**2)
        check_values(*RNN_STEP.backward.arrays(got, expected), [
            Variant(TANH_DERIVATIVE_MESSAGE, lambda: with_da(c["dh_next"] * (1 - h_next))),
            Variant("dWh is computed from h_next; Wh multiplies h_prev in the forward pass, so dWh = h_prev.T @ da",
                    {"dWh": h_next.T @ da}),
            Variant(DB_MEAN_MESSAGE, {"db": expected["db"] / c["x"].shape[0]}),
            Variant("the tanh derivative is left out: the gradient of the pre-activation is dh_next * (1 - h_next**2)",
                    lambda: with_da(c["dh_next"])),
        ])

    ctx.check_property(rnn_step_cases(), check)
    check(_fixed(ctx, ref.rnn_step_inputs, 3, 5, 4, upstream={"dh_next": (3, 4)}))


@plan.test("rnn_step_gradcheck")
def rnn_step_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    inputs = ref.rnn_step_inputs(int(rng.integers(2**31)), 3, 2, 3)
    ctx.details["errors"] = RNN_STEP.gradient_check(ctx, inputs, {"dh_next": rng.standard_normal((3, 3))}, rng)


# -- LSTM step ----------------------------------------------------------------------------------------


def _forward_note(layer: Layer, got: dict[str, Any], c: Arrays, name: str, what: str) -> str:
    """A hint for a backward test: whether the candidate's forward (graded on its own) agrees with the reference."""
    value, want = got.get(name), layer.forward.expected(c)[name]
    if isinstance(value, np.ndarray) and value.shape == want.shape and compare(value, want).ok:
        return ""
    return f"Your {what} also differs from the reference: fix the forward first"


@plan.test("lstm_step_forward")
def lstm_step_forward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        got = LSTM_STEP.forward.call(ctx, c, own=True)
        args = (c["x"], c["h_prev"], c["c_prev"])
        rh, rc, _ = LSTM_STEP.forward.expected(c).values()
        H = rh.shape[1]
        o = ref.sigmoid((c["x"] @ c["Wx"] + c["h_prev"] @ c["Wh"] + c["b"])[:, 3 * H:])

        def course_order() -> Arrays:
            h, cn, _ = ref.lstm_step_forward(*args, *_swap_go(c["Wx"], c["Wh"], c["b"]))
            return {"c_next": cn, "h_next": h}

        check_values({"c_next": got["c_next"], "h_next": got["h_next"]}, {"c_next": rc, "h_next": rh}, [
            Variant(GATE_ORDER_MESSAGE, course_order),
            Variant("h_next = o * c_next; it must be o * tanh(c_next)", {"c_next": rc, "h_next": o * rc}),
            Variant("c_next is right but h_next is not: h_next = o * tanh(c_next) with o = sigmoid(a[:, 3H:4H])",
                    {"c_next": rc}),
        ])

    ctx.check_property(lstm_step_cases(), check)
    check(_fixed(ctx, ref.lstm_step_inputs, 3, 5, 4, upstream={}))


@plan.test("lstm_step_backward")
def lstm_step_backward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        forward, got = LSTM_STEP.call_backward(ctx, c)
        args = (c["x"], c["h_prev"], c["c_prev"], c["Wx"], c["Wh"], c["b"])
        expected = LSTM_STEP.vjp(c)
        upstream = (c["dh_next"], c["dc_next"])

        def course_order() -> Arrays:
            swapped = (*args[:3], *_swap_go(*args[3:]))
            _, _, swapped_cache = ref.lstm_step_forward(*swapped)
            return _gate_order_grads(dict(zip(LSTM_STEP_GRADS, ref.lstm_step_backward(*upstream, swapped_cache))))

        check_values(*LSTM_STEP.backward.arrays(got, expected), [
            Variant(GATE_ORDER_MESSAGE, course_order),
            Variant(TANH_DERIVATIVE_MESSAGE, lambda: _lstm_step_grads(c, _wrong_dtanh)),
            Variant("dc_prev must be multiplied by the forget gate: c_next = f * c_prev + ..., "
                    "so dc_prev = dc * f", lambda: _lstm_step_grads(c, _without_forget)),
            Variant(DB_MEAN_MESSAGE, {"db": expected["db"] / c["x"].shape[0]}),
            Variant("dc_next is ignored: the upstream gradient of the cell state adds to dh_next * o * "
                    "(1 - tanh(c_next)**2)", lambda: LSTM_STEP.vjp({**c, "dc_next": np.zeros_like(c["dc_next"])})),
        ], hint=_forward_note(LSTM_STEP, forward, c, "h_next", "lstm_step_forward"))

    ctx.check_property(lstm_step_cases(), check)
    check(_fixed(ctx, ref.lstm_step_inputs, 3, 5, 4, upstream={"dh_next": (3, 4), "dc_next": (3, 4)}))


@plan.test("lstm_step_gradcheck")
def lstm_step_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    inputs = ref.lstm_step_inputs(int(rng.integers(2**31)), 2, 3, 2)
    upstream = {"dh_next": rng.standard_normal((2, 2)), "dc_next": rng.standard_normal((2, 2))}
    ctx.details["errors"] = LSTM_STEP.gradient_check(ctx, inputs, upstream, rng)


# -- LSTM over a sequence -----------------------------------------------------------------------------


@plan.test("lstm_forward")
def lstm_forward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        got = LSTM.forward.call(ctx, c, own=True)
        weights = (c["Wx"], c["Wh"], c["b"])
        check_values(*LSTM.forward.arrays(got, LSTM.forward.expected(c)), [
            Variant(GATE_ORDER_MESSAGE, lambda: {"h": ref.lstm_forward(c["x"], c["h0"], *_swap_go(*weights))[0]}),
            Variant("h0 is ignored: the first step must start from the h0 given (and a zero cell state)",
                    lambda: {"h": ref.lstm_forward(c["x"], np.zeros_like(c["h0"]), *weights)[0]}),
            Variant("each step returns h = o * c; it must be o * tanh(c)",
                    lambda: {"h": _lstm_forward_without_tanh(c)}),
        ])

    ctx.check_property(lstm_sequence_cases(), check)
    check(_fixed(ctx, ref.lstm_sequence_inputs, 3, 5, 4, 6, upstream={}))


@plan.test("lstm_backward")
def lstm_backward(ctx: Context) -> None:
    def check(c: dict[str, Any]) -> None:
        forward, got = LSTM.call_backward(ctx, c)
        weights = (c["Wx"], c["Wh"], c["b"])
        expected = LSTM.vjp(c)
        last_only = np.zeros_like(c["dh"])
        last_only[:, -1] = c["dh"][:, -1]

        def course_order() -> Arrays:
            _, swapped_cache = ref.lstm_forward(c["x"], c["h0"], *_swap_go(*weights))
            return _gate_order_grads(dict(zip(LSTM_GRADS, ref.lstm_backward(c["dh"], swapped_cache))))

        check_values(*LSTM.backward.arrays(got, expected), [
            Variant(GATE_ORDER_MESSAGE, course_order),
            Variant("dh0 is all zeros: return the gradient that reaches h0 (dh_prev of the first step)",
                    {k: v if k != "dh0" else np.zeros_like(v) for k, v in expected.items()}),
            Variant("the upstream gradient dh is used only at the last time step; every hidden state h[:, t] "
                    "feeds the loss, so dh[:, t] adds to the gradient carried back into step t",
                    lambda: LSTM.vjp({**c, "dh": last_only})),
            Variant("the cell-state gradient is not carried back through time: dc_prev of step t is the dc_next "
                    "of step t - 1", lambda: _lstm_sequence_grads(c, c["dh"], carry_cell=False)),
            Variant(TANH_DERIVATIVE_MESSAGE, lambda: _lstm_sequence_grads(c, c["dh"], step=_wrong_dtanh)),
            Variant("dc_prev must be multiplied by the forget gate: c_next = f * c_prev + ..., so dc_prev = dc * f",
                    lambda: _lstm_sequence_grads(c, c["dh"], step=_without_forget)),
            Variant(DB_MEAN_MESSAGE, {"db": expected["db"] / c["x"].shape[0]}),
        ], hint=_forward_note(LSTM, forward, c, "h", "lstm_forward"))

    ctx.check_property(lstm_sequence_cases(), check)
    check(_fixed(ctx, ref.lstm_sequence_inputs, 3, 5, 4, 6, upstream={"dh": (3, 5, 6)}))


@plan.test("lstm_gradcheck")
def lstm_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    inputs = ref.lstm_sequence_inputs(int(rng.integers(2**31)), 2, 3, 2, 2)
    ctx.details["errors"] = LSTM.gradient_check(ctx, inputs, {"dh": rng.standard_normal((2, 3, 2))}, rng)


# -- stability ----------------------------------------------------------------------------------------


def _finite_and_close(got: dict[str, Any], expected: Arrays, where: str) -> None:
    """Every output finite (with the overflow diagnosis) and equal to the reference's, at its dtype's precision."""
    for name, want in expected.items():
        try:
            value = expect_values(got.get(name), f"{name} {where}", want.shape)
        except NotFinite as exc:
            raise exc.amended(f"{exc.message}: {SATURATION_HINT}") from None
        assert_close(value, want, f"{name} {where}", *precision_of(value))


def _saturates(ctx: Context, layer: Layer, c: Arrays, where: str) -> None:
    """A layer's forward and backward (values only: conformance is graded in each function's own test)."""
    assert layer.forward.handle is not None
    forward = layer.forward.call(ctx, c)
    _finite_and_close(*layer.forward.arrays(forward, layer.forward.expected(c)), f"of {layer.forward.name} {where}")
    got = layer.backward.call(ctx, layer.backward_case(c, forward[layer.forward.handle]))
    _finite_and_close(*layer.backward.arrays(got, layer.vjp(c)), f"of {layer.backward.name} {where}")


@plan.test("saturation")
def saturation(ctx: Context) -> None:
    rng = ctx.rng("saturation")
    N, T, D, H = 3, 4, 5, 4
    where = "at pre-activations of magnitude 1e3"

    c = ref.rnn_step_inputs(int(rng.integers(2**31)), N, D, H)
    c["b"] = ref.saturating_bias(int(rng.integers(2**31)), H, gates=1)
    c["dh_next"] = rng.standard_normal((N, H))
    _saturates(ctx, RNN_STEP, c, where)

    c = ref.lstm_step_inputs(int(rng.integers(2**31)), N, D, H)
    c["b"] = ref.saturating_bias(int(rng.integers(2**31)), H)
    c["dh_next"], c["dc_next"] = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    _saturates(ctx, LSTM_STEP, c, where)

    c = ref.lstm_sequence_inputs(int(rng.integers(2**31)), N, T, D, H)
    c["b"] = ref.saturating_bias(int(rng.integers(2**31)), H)
    c["dh"] = rng.standard_normal((N, T, H))
    _saturates(ctx, LSTM, c, where)


# -- the gradient through time ------------------------------------------------------------------------

# Standard initialisation (weights ~ N(0, 1/fan_in)), a loss on the last hidden state only, and a
# forget-gate bias of 1 as commonly recommended: the vanishing-gradient question, answered by the
# candidate's own step functions.
FLOW = {"N": 4, "T": 24, "D": 8, "H": 16}
FLOW_RTOL = 1e-6


def _flow_inputs(ctx: Context) -> tuple[Arrays, Arrays, np.ndarray]:
    rng = ctx.rng("flow")
    N, T, D, H = FLOW["N"], FLOW["T"], FLOW["D"], FLOW["H"]
    x, h0 = rng.standard_normal((N, T, D)), np.zeros((N, H))
    rnn = {"x": x, "h0": h0, "Wx": rng.standard_normal((D, H)) / np.sqrt(D),
           "Wh": rng.standard_normal((H, H)) / np.sqrt(H), "b": np.zeros(H)}
    b = np.zeros(4 * H)
    b[H:2 * H] = 1.0
    lstm = {"x": x, "h0": h0, "Wx": rng.standard_normal((D, 4 * H)) / np.sqrt(D),
            "Wh": rng.standard_normal((H, 4 * H)) / np.sqrt(H), "b": b}
    return rnn, lstm, rng.standard_normal((N, H))


def _candidate_rnn_flow(ctx: Context, c: Arrays, dh_last: np.ndarray) -> list[float]:
    """Norms of dL/dh_t for t = 0..T-1, chaining the candidate's rnn_step_forward and rnn_step_backward."""
    T, H = c["x"].shape[1], c["h0"].shape[1]
    h_t, caches = c["h0"], []
    for t in range(T):
        out = RNN_STEP.forward.call(ctx, {"x": c["x"][:, t], "h_prev": h_t, "Wx": c["Wx"], "Wh": c["Wh"], "b": c["b"]})
        h_t = expect_values(out["h_next"], f"h_next at step {t}", (c["x"].shape[0], H))
        caches.append(out["cache"])
    norms = [0.0] * T
    dh_t = dh_last
    for t in reversed(range(T)):
        norms[t] = float(np.linalg.norm(dh_t))
        grads = RNN_STEP.backward.call(ctx, {"dh_next": dh_t, "cache": caches[t]})
        dh_t = expect_values(grads["dh_prev"], f"dh_prev at step {t}", dh_t.shape)
    return norms


def _candidate_lstm_flow(ctx: Context, c: Arrays, dh_last: np.ndarray) -> list[float]:
    """Norms of dL/dh_t for t = 0..T-1, chaining the candidate's lstm_step_forward and lstm_step_backward."""
    N, T = c["x"].shape[:2]
    H = c["h0"].shape[1]
    h_t, c_t, caches = c["h0"], np.zeros((N, H)), []
    for t in range(T):
        out = LSTM_STEP.forward.call(ctx, {"x": c["x"][:, t], "h_prev": h_t, "c_prev": c_t, "Wx": c["Wx"],
                                           "Wh": c["Wh"], "b": c["b"]})
        h_t = expect_values(out["h_next"], f"h_next at step {t}", (N, H))
        c_t = expect_values(out["c_next"], f"c_next at step {t}", (N, H))
        caches.append(out["cache"])
    norms = [0.0] * T
    dh_t, dc_t = dh_last, np.zeros((N, H))
    for t in reversed(range(T)):
        norms[t] = float(np.linalg.norm(dh_t))
        grads = LSTM_STEP.backward.call(ctx, {"dh_next": dh_t, "dc_next": dc_t, "cache": caches[t]})
        dh_t = expect_values(grads["dh_prev"], f"dh_prev at step {t}", (N, H))
        dc_t = expect_values(grads["dc_prev"], f"dc_prev at step {t}", (N, H))
    return norms


def _steps_back(norms: list[float]) -> list[list[float]]:
    """[k, norm] with k = steps between h_t and the loss, so the curve reads left to right as the gradient travels."""
    T = len(norms)
    return [[float(T - 1 - t), n] for t, n in enumerate(norms)]


@plan.test("gradient_through_time")
def gradient_through_time(ctx: Context) -> None:
    rnn, lstm, dh_last = _flow_inputs(ctx)
    expected = {"RNN": ref.rnn_gradient_through_time(rnn["x"], rnn["h0"], rnn["Wx"], rnn["Wh"], rnn["b"], dh_last),
                "LSTM": ref.lstm_gradient_through_time(lstm["x"], lstm["h0"], lstm["Wx"], lstm["Wh"], lstm["b"],
                                                       dh_last)}
    got: dict[str, list[float]] = {}
    series: dict[str, list[list[float]]] = {}
    failure = ""
    for kind, measure, case in (("RNN", _candidate_rnn_flow, rnn), ("LSTM", _candidate_lstm_flow, lstm)):
        got[kind] = measure(ctx, case, dh_last)
        series[f"{kind} (your code)"] = _steps_back(got[kind])
        result = compare(np.array(got[kind]), np.array(expected[kind]), rtol=FLOW_RTOL)
        if not result.ok and not failure:
            k = FLOW["T"] - 1 - result.worst_index[0]
            failure = (f"the {kind} gradient norm through time differs from the reference: {k} steps back from the "
                       f"loss it is {result.worst_got:.4g}, expected {result.worst_expected:.4g} (the step "
                       "backward tests name the mistake)")
        if not result.ok:
            series[f"{kind} (reference)"] = _steps_back(expected[kind])
    ctx.details["gradient_norms"] = {**got, "setup": {**FLOW, "loss": "on the last hidden state only",
                                                      "forget_gate_bias": 1.0}}
    ctx.figure(Figure(kind="line", title="Gradient norm flowing back through time (loss on the last hidden state)",
                      x_label="steps back from the loss", y_label="norm of dL/dh_t", series=series))
    if failure:
        raise CheckFailed(failure)
    ratios = {kind: norms[0] / norms[-1] if norms[-1] else float("nan") for kind, norms in got.items()}
    ctx.note(f"{FLOW['T'] - 1} steps back from the loss, the gradient norm is {ratios['RNN']:.1e} of its size at "
             f"the loss in your RNN and {ratios['LSTM']:.1e} in your LSTM")
