"""The layer-test kit (grader/engine/checks/layers.py): contracts, value checks and one lapse, one charge."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest

from grader.engine.checks.layers import Contract, Layer, check_values, close, expect_values, precision_of
from grader.engine.checks.variants import Variant
from grader.engine.plan import CheckFailed, Context
from grader.isolation.base import Reply
from reference import mlp as ref
from tests.conftest import SOLUTIONS

AFFINE = Layer(
    Contract("affine_forward", args=("x", "w", "b"), returns=("out", "cache"), handle="cache",
             reference=ref.affine_forward),
    Contract("affine_backward", args=("dout", "cache"), returns=("dx", "dw", "db"), reference=ref.affine_backward),
    upstream={"out": "dout"}, grads={"x": "dx", "w": "dw", "b": "db"})


def _case(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((3, 2, 2)), "w": rng.standard_normal((4, 5)), "b": rng.standard_normal(5),
            "dout": rng.standard_normal((3, 5))}


def test_contract_names_the_reference_returns() -> None:
    case = _case()
    out = AFFINE.forward.expected(case)
    assert set(out) == {"out", "cache"} and out["out"].shape == (3, 5)
    assert AFFINE.forward.keep == [1] and AFFINE.backward.keep is None
    got, expected = AFFINE.forward.arrays(out, out)
    assert list(got) == ["out"]  # the handle is never compared


def test_vjp_is_the_reference_backward_on_the_reference_cache() -> None:
    case = _case()
    _, cache = ref.affine_forward(case["x"], case["w"], case["b"])
    dx, dw, db = ref.affine_backward(case["dout"], cache)
    vjp = AFFINE.vjp(case)
    assert np.array_equal(vjp["dx"], dx) and np.array_equal(vjp["dw"], dw) and np.array_equal(vjp["db"], db)


def test_objective_contracts_every_output_with_its_upstream() -> None:
    case = _case()
    out = AFFINE.forward.expected(case)
    assert AFFINE.objective({"dout": case["dout"]}, out) == pytest.approx(float(np.sum(out["out"] * case["dout"])))


SOFTMAX = Contract("softmax_cross_entropy", args=("logits", "y"), returns=("loss", "dlogits"),
                   reference=ref.softmax_cross_entropy)


class _Direct:
    """Stands in for a Context: calls a Python function for the candidate, no sandbox."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def call(self, name: str, *args: Any, keep: Any = None, **options: Any) -> Any:
        return self.fn(*args, **options)

    def raw_call_many(self, target: Any, cases: Any, keep: Any = None, stop_on_error: bool = False) -> list[Reply]:
        return [Reply(ok=True, value=self.fn(*args, **options)) for args, options in cases]


def test_gradient_check_of_a_loss_and_its_own_gradient() -> None:
    rng = np.random.default_rng(0)
    case = {"logits": rng.standard_normal((4, 5)), "y": np.array([0, 3, 1, 4])}
    errors = SOFTMAX.gradient_check(cast(Context, _Direct(ref.softmax_cross_entropy)), case, rng,
                                    grads={"logits": "dlogits"})
    assert set(errors) == {"logits"} and errors["logits"] < 1e-6

    def summed_gradient(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        loss, dlogits = ref.softmax_cross_entropy(logits, y)
        return loss, dlogits * logits.shape[0]  # the gradient of the summed loss, for the mean

    with pytest.raises(CheckFailed, match="softmax_cross_entropy"):
        SOFTMAX.gradient_check(cast(Context, _Direct(summed_gradient)), case, rng, grads={"logits": "dlogits"})


def test_own_test_charges_float32() -> None:
    want = np.linspace(-1.0, 1.0, 6)
    with pytest.raises(CheckFailed, match="dtype float32; expected float64"):
        check_values({"out": want.astype(np.float32)}, {"out": want})


def test_other_tests_grade_float32_values_at_float32_precision() -> None:
    want = np.linspace(-1.0, 1.0, 6) / 3.0
    got = check_values({"out": want.astype(np.float32)}, {"out": want}, own=False)
    assert got["out"].dtype == np.float32
    assert precision_of(got["out"]) > precision_of(want)
    with pytest.raises(CheckFailed, match="out differs from the reference"):
        check_values({"out": (want + 1e-2).astype(np.float32)}, {"out": want}, own=False)


def test_float32_precision_rejects_an_answer_off_by_5e6() -> None:
    """A wrong answer gains nothing by returning float32: 5e-6 relative is beyond float32's tolerance."""
    want = np.linspace(-1.0, 1.0, 7)
    with pytest.raises(CheckFailed, match="out differs from the reference"):
        check_values({"out": (want * (1 + 5e-6)).astype(np.float32)}, {"out": want}, own=False)
    assert close((want * (1 + 1e-7)).astype(np.float32), want)


def test_a_float32_output_does_not_loosen_its_float64_sibling() -> None:
    want = {"a": np.linspace(-1.0, 1.0, 6) / 3.0, "b": np.linspace(0.5, 2.0, 6)}
    got = {"a": want["a"].astype(np.float32), "b": want["b"] * (1 + 5e-5)}
    with pytest.raises(CheckFailed, match="b differs from the reference"):
        check_values(got, want, own=False)
    mistake = [Variant("b is off by 5e-5", {"b": want["b"] * (1 + 5e-5)})]
    with pytest.raises(CheckFailed, match="b is off by 5e-5"):
        check_values(got, want, mistake, own=False)
    assert check_values({**got, "b": want["b"]}, want, own=False)["a"].dtype == np.float32


def _float32_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
    out, cache = ref.affine_forward(x, w, b)
    return out.astype(np.float32), cache


class _Affine:
    """Stands in for a Context: the reference affine layer, with chosen returns in float32."""

    def __init__(self, forward32: bool = False, backward32: bool = False) -> None:
        self.forward32, self.backward32 = forward32, backward32

    def call(self, name: str, *args: Any, keep: Any = None, **options: Any) -> Any:
        if name == "affine_forward":
            return _float32_forward(*args) if self.forward32 else ref.affine_forward(*args)
        grads = ref.affine_backward(*args)
        return tuple(g.astype(np.float32) for g in grads) if self.backward32 else grads

    def raw_call_many(self, target: Any, cases: Any, keep: Any = None, stop_on_error: bool = False) -> list[Reply]:
        return [Reply(ok=True, value=self.call(target["fn"], *args, **options)) for args, options in cases]


@pytest.mark.parametrize(("forward32", "backward32"), [(True, False), (False, True), (True, True)])
def test_gradient_check_grades_float32_answers_for_their_values(forward32: bool, backward32: bool) -> None:
    rng = np.random.default_rng(1)
    case = _case(1)
    inputs = {k: case[k] for k in ("x", "w", "b")}
    errors = AFFINE.gradient_check(cast(Context, _Affine(forward32, backward32)), inputs, {"dout": case["dout"]}, rng)
    assert max(errors.values()) < 1e-3, errors


def test_gradient_check_of_a_float32_forward_still_rejects_a_wrong_backward() -> None:
    rng = np.random.default_rng(1)
    case = _case(1)

    class Halved(_Affine):
        def call(self, name: str, *args: Any, keep: Any = None, **options: Any) -> Any:
            got = super().call(name, *args, keep=keep, **options)
            return got if name == "affine_forward" else (got[0], got[1], got[2] / 2)

    with pytest.raises(CheckFailed, match="db"):
        AFFINE.gradient_check(cast(Context, Halved(forward32=True)), {k: case[k] for k in ("x", "w", "b")},
                              {"dout": case["dout"]}, rng)


def test_float64_keeps_float64_tolerance_outside_the_own_test() -> None:
    want = np.linspace(-1.0, 1.0, 6)
    assert not close(want + 1e-6, want)
    with pytest.raises(CheckFailed, match="differs from the reference"):
        check_values({"out": want + 1e-6}, {"out": want}, own=False)


def test_other_dtypes_still_fail_outside_the_own_test() -> None:
    with pytest.raises(CheckFailed, match="expected float64"):
        expect_values(np.arange(6), "out", (6,))
    with pytest.raises(CheckFailed, match="shape"):
        expect_values(np.zeros(5), "out", (6,))


def test_a_known_mistake_is_named_in_and_out_of_the_own_test() -> None:
    want = np.linspace(1.0, 2.0, 4)
    mistake = [Variant("db is averaged over the batch", {"db": want / 4})]
    for own in (True, False):
        with pytest.raises(CheckFailed, match="db is averaged"):
            check_values({"db": want / 4}, {"db": want}, mistake, own=own)
    with pytest.raises(CheckFailed, match="db differs from the reference"):
        check_values({"db": want / 3}, {"db": want}, mistake)


# -- one lapse, one charge: graded in the real sandbox --------------------------------------------------


def _grade(problem: str, name: str) -> dict[str, tuple[str, str]]:
    from tests.grading import grade_submission

    report = grade_submission(problem, {"solution.py": (SOLUTIONS / problem / name).read_text()})
    return {t.id: (t.status, t.message) for t in report.tests}


@pytest.mark.slow
def test_lstm_backward_updating_dc_next_in_place_is_charged_once() -> None:
    """10 of 14 public LSTM solutions do this; their values are right, so only the conformance charge remains."""
    tests = _grade("rnn", "lapse_dc_next_in_place.py")
    failed = {k: v for k, v in tests.items() if v[0] != "passed"}
    assert list(failed) == ["lstm_step_backward"], failed
    assert failed["lstm_step_backward"][1] == ("lstm_step_backward modified its input `dc_next` in place; "
                                               "inputs must be left unchanged")


@pytest.mark.slow
def test_forward_modifying_its_input_is_charged_in_the_forward_test_only() -> None:
    tests = _grade("mlp", "wrong_affine_mutates_input.py")
    failed = {k: v for k, v in tests.items() if v[0] != "passed"}
    assert list(failed) == ["affine_forward"], failed
    assert "modified its input `x` in place" in failed["affine_forward"][1]


@pytest.mark.slow
@pytest.mark.parametrize(("problem", "name", "charged"), [
    ("rnn", "lapse_rnn_step_forward_float32.py", ["rnn_step_forward"]),
    ("regularization", "lapse_batchnorm_forward_float32.py", ["bn_forward"]),
    # The net passes the float32 scores on: net_scores and net_grads grade TwoLayerNet.loss's own returns.
    ("mlp", "lapse_affine_forward_float32.py", ["affine_forward", "net_scores", "net_grads"]),
])
def test_a_forward_in_float32_is_charged_in_its_own_tests_only(problem: str, name: str, charged: list[str]) -> None:
    """Its gradient check, eval mode and saturation are graded at float32's precision: the math is right."""
    tests = _grade(problem, name)
    failed = {k: v for k, v in tests.items() if v[0] != "passed"}
    assert list(failed) == charged, failed
    assert all("dtype float32; expected float64" in message for _, message in failed.values()), failed


@pytest.mark.slow
def test_gan_loss_in_float32_is_charged_in_losses_conformance_only() -> None:
    """Its value, gradients and stability are graded at float32's precision: the math is right."""
    tests = _grade("gan", "lapse_loss_float32.py")
    failed = {k: v for k, v in tests.items() if v[0] != "passed"}
    assert list(failed) == ["losses_conformance"], failed
    assert "float32" in failed["losses_conformance"][1]


def test_gan_reads_float32_from_the_values_received_never_casting_float64_down() -> None:
    """The gan helper hands arrays over in float64: only values that are all float32 numbers count as float32."""
    from problems.gan.plan import _float32_if_exact

    computed32 = np.array([0.1, -2.5, 1 / 3], dtype=np.float32).astype(np.float64)
    assert _float32_if_exact(computed32).dtype == np.float32
    assert np.array_equal(_float32_if_exact(computed32), computed32)
    float64 = np.array([0.1, -2.5, 1 / 3])
    assert _float32_if_exact(float64) is float64
    assert _float32_if_exact(np.array([1e300])).dtype == np.float64
