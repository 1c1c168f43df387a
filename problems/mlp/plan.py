"""Test plan for `mlp`: a two-layer network from scratch in numpy.

Every test follows GRADING.md's layers: conformance (exact shapes, dtypes,
finite values, inputs untouched) before values; forward and backward against
the reference on fixed and generated cases; finite differences of the
candidate's own forward to tell a convention bug from wrong backward math;
state over repeated calls; stability at logits of 1e4; training scored on
held-out data with the grader's own forward pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from grader.engine.checks import strategies as gst
from grader.engine.checks.compare import (
    assert_close,
    check_output,
    expect_array,
    expect_params,
    expect_scalar,
    expect_tuple,
)
from grader.engine.checks.gradcheck import self_consistency, settings_for
from grader.engine.checks.layers import Contract, Layer, check_values, expect_values
from grader.engine.checks.training import score_classifier
from grader.engine.checks.variants import Variant
from grader.engine.plan import CheckFailed, Context, Plan
from reference import mlp as ref

plan = Plan()

# -- cases -------------------------------------------------------------------------------------


@st.composite
def affine_cases(draw: st.DrawFn) -> dict[str, Any]:
    """x of 2 to 4 dims (N >= 2: N = 1 hides mean-vs-sum), D != M, Gaussian upstream gradient."""
    n = draw(st.integers(2, 4))
    rest = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    d = int(np.prod(rest))
    m = draw(st.integers(1, 4).filter(lambda m: m != d))
    return {"x": draw(gst.arrays((n, *rest))), "w": draw(gst.arrays((d, m))), "b": draw(gst.arrays((m,))),
            "dout": draw(gst.arrays((n, m)))}


@st.composite
def relu_cases(draw: st.DrawFn) -> dict[str, Any]:
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=3)))
    return {"x": draw(gst.arrays(shape, gst.away_from_zero())), "dout": draw(gst.arrays(shape))}


@st.composite
def softmax_cases(draw: st.DrawFn) -> dict[str, Any]:
    n, c = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    return {"logits": draw(gst.arrays((n, c), gst.floats(-5, 5))),
            "y": np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)}


# -- contracts -------------------------------------------------------------------------------------

AFFINE = Layer(
    Contract("affine_forward", args=("x", "w", "b"), returns=("out", "cache"), handle="cache",
             reference=ref.affine_forward),
    Contract("affine_backward", args=("dout", "cache"), returns=("dx", "dw", "db"), reference=ref.affine_backward),
    upstream={"out": "dout"}, grads={"x": "dx", "w": "dw", "b": "db"})
RELU = Layer(
    Contract("relu_forward", args=("x",), returns=("out", "cache"), handle="cache", reference=ref.relu_forward),
    Contract("relu_backward", args=("dout", "cache"), returns=("dx",), reference=ref.relu_backward),
    upstream={"out": "dout"}, grads={"x": "dx"})
SOFTMAX = Contract("softmax_cross_entropy", args=("logits", "y"), returns=("loss", "dlogits"),
                   reference=ref.softmax_cross_entropy)


# -- affine ---------------------------------------------------------------------------------------


@plan.test("affine_forward")
def affine_forward(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        check_values(*AFFINE.forward.arrays(AFFINE.forward.call(ctx, case, own=True), AFFINE.forward.expected(case)))

    rng = ctx.rng("fixed")
    check({"x": rng.standard_normal((3, 2, 4, 2)), "w": rng.standard_normal((16, 5)), "b": rng.standard_normal(5)})
    ctx.check_property(affine_cases(), check)


@plan.test("affine_backward")
def affine_backward(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        _, got = AFFINE.call_backward(ctx, case)
        expected = AFFINE.vjp(case)
        check_values(*AFFINE.backward.arrays(got, expected, ("db", "dw", "dx")), [
            Variant("db is averaged over the batch; it must be summed (the mean is taken in the loss)",
                    {"db": expected["db"] / case["x"].shape[0]}),
        ])

    ctx.check_property(affine_cases(), check)


@plan.test("affine_gradcheck")
def affine_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    inputs = {"x": rng.standard_normal((3, 2, 2)), "w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    ctx.details["errors"] = AFFINE.gradient_check(ctx, inputs, {"dout": rng.standard_normal((3, 3))}, rng)


# -- relu -------------------------------------------------------------------------------------------


@plan.test("relu_forward")
def relu_forward(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        check_values(*RELU.forward.arrays(RELU.forward.call(ctx, case, own=True), RELU.forward.expected(case)))

    ctx.check_property(relu_cases(), check)


@plan.test("relu_backward")
def relu_backward(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        _, got = RELU.call_backward(ctx, case)
        check_values(*RELU.backward.arrays(got, RELU.vjp(case)), [
            Variant("the ReLU mask is inverted: the gradient must flow where x > 0 and stop where x < 0",
                    {"dx": case["dout"] * (case["x"] < 0)}),
        ])

    ctx.check_property(relu_cases(), check)


# -- softmax cross-entropy ------------------------------------------------------------------------------


def _softmax(ctx: Context, logits: np.ndarray, y: np.ndarray, own: bool = False) -> tuple[float, np.ndarray]:
    got = SOFTMAX.call(ctx, {"logits": logits, "y": y}, own=own)
    return expect_scalar(got["loss"], "loss"), expect_array(got["dlogits"], "dlogits", logits.shape)


@plan.test("softmax_loss")
def softmax_loss(ctx: Context) -> None:
    def check(case: dict[str, Any]) -> None:
        loss, dlogits = _softmax(ctx, case["logits"], case["y"], own=True)
        rloss, rdlogits = ref.softmax_cross_entropy(case["logits"], case["y"])
        n = case["logits"].shape[0]
        check_values({"loss": np.array(loss)}, {"loss": np.array(rloss)}, [
            Variant("the loss is summed over the batch; it must be the mean", {"loss": np.array(rloss * n)}),
        ])
        check_values({"dlogits": dlogits}, {"dlogits": rdlogits}, [
            Variant("dlogits is not divided by the batch size: the loss is a mean, so is its gradient",
                    {"dlogits": rdlogits * n}),
        ])

    ctx.check_property(softmax_cases(), check)


@plan.test("softmax_stability")
def softmax_stability(ctx: Context) -> None:
    rng = ctx.rng("logits")
    for scale in (1e2, 1e3, 1e4):
        logits = rng.standard_normal((4, 6)) * scale
        logits[1] = [scale, -scale, 0.5 * scale, scale, 0.0, -0.5 * scale]  # a tie at the top
        y = np.array([0, 1, 2, 5])
        got = SOFTMAX.call(ctx, {"logits": logits, "y": y})
        try:
            loss_value = expect_scalar(got["loss"], f"loss at logits of magnitude {scale:g}")
            expect_array(got["dlogits"], f"dlogits at logits of magnitude {scale:g}", logits.shape)
        except CheckFailed as exc:
            raise exc.amended(f"{exc.message}: exponentials overflow; subtract each row's maximum before "
                              "exponentiating (log-sum-exp)") from None
        rloss, rdlogits = ref.softmax_cross_entropy(logits, y)
        assert_close(np.array(loss_value), np.array(rloss), f"loss at logits of magnitude {scale:g}")
        assert_close(got["dlogits"], rdlogits, f"dlogits at logits of magnitude {scale:g}")


@plan.test("softmax_gradcheck")
def softmax_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    case = {"logits": rng.standard_normal((4, 5)), "y": np.array([0, 3, 1, 4])}
    ctx.details["errors"] = SOFTMAX.gradient_check(ctx, case, rng, grads={"logits": "dlogits"})


# -- TwoLayerNet ----------------------------------------------------------------------------------------

NET = {"input_dim": 5, "hidden_dim": 7, "num_classes": 4}


def _net(ctx: Context, reg: float, random_biases: bool = True) -> tuple[Any, dict[str, np.ndarray]]:
    """A candidate TwoLayerNet and the params it holds.

    With `random_biases` the grader writes every parameter itself (biases start at zero, which would
    hide a penalty on them), reads them back, and requires the same values: otherwise the reference
    would be evaluated at whatever the candidate reports (a `params` property returning fresh zeros
    would drop the writes and make the reference's closed form at zero weights the expected answer).
    The values returned are the grader's own, never the candidate's report of them.
    """
    net = ctx.new("TwoLayerNet", NET["input_dim"], NET["hidden_dim"], NET["num_classes"], weight_scale=0.5,
                  reg=reg, seed=3)
    d, h, c = NET["input_dim"], NET["hidden_dim"], NET["num_classes"]
    shapes = {"W1": (d, h), "b1": (h,), "W2": (h, c), "b2": (c,)}
    if not random_biases:
        return net, expect_params(ctx.attr(net, "params"), shapes, "TwoLayerNet.params")
    rng = ctx.rng("biases")
    written = {"b1": rng.standard_normal(h), "b2": rng.standard_normal(c)}
    weights = ctx.rng("weights")
    written = {"W1": 0.5 * weights.standard_normal((d, h)), "b1": written["b1"],
               "W2": 0.5 * weights.standard_normal((h, c)), "b2": written["b2"]}
    table = ctx.attr(net, "params", keep=True)
    for key, value in written.items():
        ctx.helper("common:setitem", table, key, value)
    read_back = expect_params(ctx.attr(net, "params"), shapes, "TwoLayerNet.params")
    lost = [k for k in shapes if not np.array_equal(read_back[k], written[k])]
    if lost:
        raise CheckFailed(f"TwoLayerNet.params does not keep what is stored in it: after setting params[{lost[0]!r}] "
                          "the network reports other values. params must be the network's own dict of arrays, "
                          "the one its loss() reads")
    return net, written


def _reference_net(params: dict[str, np.ndarray], reg: float) -> Any:
    net = ref.TwoLayerNet(NET["input_dim"], NET["hidden_dim"], NET["num_classes"], reg=reg)
    net.params = {k: v.copy() for k, v in params.items()}
    return net


def _batch(ctx: Context, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = ctx.rng("batch")
    return rng.standard_normal((n, NET["input_dim"])), rng.integers(0, NET["num_classes"], size=n)


@plan.test("net_scores")
def net_scores(ctx: Context) -> None:
    net, params = _net(ctx, reg=0.0, random_biases=False)
    if np.allclose(params["W1"], 0) or np.allclose(params["W2"], 0):
        raise CheckFailed("W1 and W2 must start random (scaled by weight_scale), not zero: zero weights never learn")
    started = [k for k in ("b1", "b2") if np.any(params[k] != 0)]
    if started:
        raise CheckFailed(f"{started[0]} must start at zero (the statement: biases zero); a new net's {started[0]} "
                          f"starts with {np.array2string(params[started[0]].ravel()[:4], precision=3)}")
    X, _ = _batch(ctx)
    scores = ctx.method(net, "loss", X)
    check_output(scores, _reference_net(params, 0.0).loss(X), "scores")


@plan.test("net_loss")
def net_loss(ctx: Context) -> None:
    reg = 0.7
    net, params = _net(ctx, reg=reg)
    X, y = _batch(ctx)
    loss, _ = expect_tuple(ctx.method(net, "loss", X, y), 2, "TwoLayerNet.loss", "loss, grads")
    loss = expect_scalar(loss, "loss")
    rloss, _ = _reference_net(params, reg).loss(X, y)
    penalty = 0.5 * reg * (np.sum(params["W1"] ** 2) + np.sum(params["W2"] ** 2))
    biases = 0.5 * reg * (np.sum(params["b1"] ** 2) + np.sum(params["b2"] ** 2))
    check_values({"loss": np.array(loss)}, {"loss": np.array(rloss)}, [
        Variant("the L2 penalty also covers the biases; it applies to W1 and W2 only",
                {"loss": np.array(rloss - penalty + (penalty + biases))}),
        Variant("the loss leaves out the L2 penalty 0.5 * reg * (sum(W1**2) + sum(W2**2))",
                {"loss": np.array(rloss - penalty)}),
        Variant("the L2 penalty is counted twice, or without the factor 0.5", {"loss": np.array(rloss + penalty)}),
    ])


def _net_grads(ctx: Context, net: Any, X: np.ndarray, y: np.ndarray, params: dict[str, np.ndarray],
               own: bool = True) -> tuple[Any, dict[str, Any]]:
    """The net's loss and grads; `own` (net_grads): grads in float64, else values only (the gradient check)."""
    loss, grads = expect_tuple(ctx.method(net, "loss", X, y), 2, "TwoLayerNet.loss", "loss, grads")
    if not isinstance(grads, dict) or sorted(grads) != sorted(params):
        raise CheckFailed(f"grads must be a dict keyed like params ({sorted(params)})")
    expect = expect_array if own else expect_values
    return loss, {k: expect(grads[k], f"grads['{k}']", params[k].shape) for k in params}


@plan.test("net_grads")
def net_grads(ctx: Context) -> None:
    reg = 0.3
    net, params = _net(ctx, reg=reg)
    X, y = _batch(ctx)
    _, expected = _reference_net(params, reg).loss(X, y)
    for attempt in ("first", "second"):
        _, grads = _net_grads(ctx, net, X, y, params)
        name = {k: f"grads['{k}'] on the {attempt} call" for k in ("b2", "W2", "b1", "W1")}
        check_values({name[k]: grads[k] for k in name}, {name[k]: expected[k] for k in name}, [
            Variant(f"grads['{k}'] leaves out the L2 term reg * {k}: the penalty is in the loss but not in its "
                    "gradient", {name[k]: expected[k] - reg * params[k]}) for k in ("W1", "W2")
        ])


@plan.test("net_gradcheck")
def net_gradcheck(ctx: Context) -> None:
    reg = 0.3
    net, params = _net(ctx, reg=reg)
    X, y = _batch(ctx, n=4)
    # Consistency only: the dtype of the net's returns is graded in net_scores and net_grads. A net whose
    # scores (or loss) come back in float32 gets float32's finite-difference step and tolerance.
    loss, grads = _net_grads(ctx, net, X, y, params, own=False)
    step, tolerance = settings_for([loss, ctx.method(net, "loss", X)])
    table = ctx.attr(net, "params", keep=True)  # the candidate's own dict, so perturbations reach its loss

    def objective(v: dict[str, np.ndarray]) -> float:
        for k, value in v.items():
            ctx.helper("common:setitem", table, k, value)
        loss, _ = expect_tuple(ctx.method(net, "loss", X, y), 2, "TwoLayerNet.loss")
        return expect_scalar(loss, "loss")

    ctx.details["errors"] = self_consistency(
        objective, params, grads, ctx.rng("probes"), "TwoLayerNet.loss", full_max_elements=0, step=step,
        tolerance=tolerance,
        reference=lambda v: float(_reference_net(v, reg).loss(X, y)[0]),
        verdict="the loss and its gradients are inconsistent: a term of the loss (the L2 penalty included) "
                "is missing from the gradients, or the gradients have a term the loss does not")


# -- SGD ------------------------------------------------------------------------------------------------


@plan.test("sgd_step")
def sgd_step(ctx: Context) -> None:
    rng = ctx.rng("params")
    params = {"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(4)}
    lr = 0.05
    for step in ("first", "second"):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        _, (after, _, _) = ctx.call_returning_args("sgd_step", params, grads, lr)
        if not isinstance(after, dict) or sorted(after) != sorted(params):
            raise CheckFailed("sgd_step must keep the params dict's keys and update its values")
        for k in params:
            name = f"params['{k}'] after the {step} step"
            check_values({name: after[k]}, {name: params[k] - lr * grads[k]}, [
                Variant(f"sgd_step left params['{k}'] unchanged: update the dict it is given "
                        "(rebinding a local name does not change the caller's params)", {name: params[k]}),
                Variant("sgd_step moves along the gradient; it must subtract lr * grad",
                        {name: params[k] + lr * grads[k]}),
            ])
        params = {k: after[k] for k in params}


# -- training -------------------------------------------------------------------------------------------

PASS_ACCURACY = 0.80  # the reference reaches 0.956-0.974 over seeds 0-7, 0.975 with the grading seed
HIDDEN_DIM = 64


@plan.test("train_mlp")
def train_mlp(ctx: Context) -> None:
    task = ref.training_task(ctx.seed, hidden_dim=HIDDEN_DIM)
    h, f, c = task.hidden_dim, task.X_train.shape[1], task.num_classes
    params = expect_params(ctx.call("train_mlp", task.X_train, task.y_train, h, c, 0),
                           {"W1": (f, h), "b1": (h,), "W2": (h, c), "b2": (c,)}, "train_mlp's params",
                           diverged_hint="learning rate too high, or a gradient not averaged over the batch?")
    score_classifier(ctx, np.argmax(ref.mlp_scores(params, task.X_test), axis=1), task.y_test, c, PASS_ACCURACY,
                     per_class_title="Held-out accuracy per class", class_label="class",
                     diagnosis=lambda a: ": the returned params look untrained" if a < 2.0 / c else "")
