"""The shared check library on its own: each check catches a planted bug and passes correct code.

Fast, in-process: the objectives here are plain numpy functions, not sandbox calls.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from grader.engine.checks import statistics
from grader.engine.checks import strategies as gst
from grader.engine.checks.compare import (
    assert_close,
    compare,
    expect_array,
    expect_scalar,
    expect_tuple,
    normwise_error,
)
from grader.engine.checks.gradcheck import self_consistency
from grader.engine.checks.static import forbidden_imports, parse_error
from grader.engine.plan import CheckFailed, Context

ROOT = Path(__file__).resolve().parents[1]


def ctx() -> Context:
    def no_sandbox():
        raise AssertionError("these checks must not touch a sandbox")

    return Context(test_id="unit", seed=1, deadline=time.monotonic() + 60, _session_factory=no_sandbox)


# T0 -----------------------------------------------------------------------------------------------
def test_shape_first_catches_unsummed_db_with_a_hint() -> None:
    with pytest.raises(CheckFailed, match=r"shape \(4, 3\); expected \(3,\).*sum over the batch"):
        expect_array(np.ones((4, 3)), "db", (3,))


def test_shape_hint_for_dx_not_reshaped() -> None:
    with pytest.raises(CheckFailed, match="reshape it back"):
        expect_array(np.ones((2, 6)), "dx", (2, 3, 2))


def test_dtype_and_finiteness() -> None:
    with pytest.raises(CheckFailed, match="float32"):
        expect_array(np.ones(3, dtype=np.float32), "out", (3,))
    with pytest.raises(CheckFailed, match="non-finite"):
        expect_array(np.array([1.0, np.nan]), "out", (2,))
    with pytest.raises(CheckFailed, match="must return 2 values"):
        expect_tuple(np.ones(2), 2, "f")
    assert expect_scalar(np.float64(2.0), "loss") == 2.0
    assert expect_scalar(np.array(2.0), "loss") == 2.0
    with pytest.raises(CheckFailed, match="scalar"):
        expect_scalar(np.ones(3), "loss")


# T1/T2 -------------------------------------------------------------------------------------------------
def test_compare_is_normwise_and_names_the_worst_element() -> None:
    ref = np.arange(6.0).reshape(2, 3)
    got = ref.copy()
    got[1, 2] += 0.5
    result = compare(got, ref)
    assert not result.ok and result.worst_index == (1, 2)
    assert result.normwise == pytest.approx(normwise_error(got, ref))
    with pytest.raises(CheckFailed, match=r"worst element at index \(1, 2\): got 5.5, expected 5"):
        assert_close(got, ref, "out")


def test_compare_accepts_rounding_differences_of_another_style() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 7)), rng.standard_normal((7, 3))
    loops = np.array([[sum(x[i, k] * w[k, j] for k in range(7)) for j in range(3)] for i in range(5)])
    assert compare(loops, x @ w).ok
    assert compare(np.einsum("ik,kj->ij", x, w), x @ w).ok


def test_atol_scales_with_the_reference_magnitude() -> None:
    big = np.array([1e4, -1e4, 3.0])
    assert compare(big + 1e-7, big).ok
    assert not compare(big + 1e-2, big).ok


# T3 ---------------------------------------------------------------------------------------------------
def _tanh_layer(inputs, upstream):
    return float(np.sum(np.tanh(inputs["x"] @ inputs["w"]) * upstream))


def _tanh_grads(inputs, upstream, planted: bool = False):
    a = np.tanh(inputs["x"] @ inputs["w"])
    da = upstream * ((1 - a) if planted else (1 - a**2))
    return {"x": da @ inputs["w"].T, "w": inputs["x"].T @ da}


@pytest.mark.parametrize("shape", [(3, 4, 2), (10, 9, 8)], ids=["full", "directional"])
def test_finite_differences_pass_a_correct_backward_and_catch_a_wrong_one(shape) -> None:
    rng = np.random.default_rng(1)
    n, d, m = shape
    inputs = {"x": rng.standard_normal((n, d)), "w": rng.standard_normal((d, m))}
    upstream = rng.standard_normal((n, m))
    objective = lambda v: _tanh_layer(v, upstream)  # noqa: E731
    errors = self_consistency(objective, inputs, _tanh_grads(inputs, upstream), rng, "layer", reference=objective)
    assert max(errors.values()) < 1e-7
    with pytest.raises(CheckFailed, match="dx .* dw .*the backward math is wrong"):
        self_consistency(
            objective, inputs, _tanh_grads(inputs, upstream, planted=True), rng, "layer", reference=objective
        )


@pytest.mark.parametrize("shape", [(3, 4, 2), (10, 9, 8)], ids=["full", "directional"])
def test_a_forward_that_ignores_its_inputs_proves_nothing(shape) -> None:
    """All zeros of the right shapes: zero finite differences agree with zero gradients, and must not pass."""
    rng = np.random.default_rng(1)
    n, d, m = shape
    inputs = {"x": rng.standard_normal((n, d)), "w": rng.standard_normal((d, m))}
    upstream = rng.standard_normal((n, m))
    zeros = {k: np.zeros_like(v) for k, v in inputs.items()}
    with pytest.raises(CheckFailed, match="does not respond to x, w"):
        self_consistency(lambda v: 0.0, inputs, zeros, rng, "layer", reference=lambda v: _tanh_layer(v, upstream))
    # responding to one input only is caught for the other
    with pytest.raises(CheckFailed, match="does not respond to w"):
        self_consistency(
            lambda v: float(np.sum(v["x"])),
            inputs,
            {"x": np.ones_like(inputs["x"]), "w": zeros["w"]},
            rng,
            "layer",
            reference=lambda v: _tanh_layer(v, upstream),
        )
    # where the reference is flat too (a dead relu, say) nothing is demanded
    self_consistency(lambda v: 0.0, inputs, zeros, rng, "layer", reference=lambda v: 1.0)


def test_non_finite_answers_never_pass_a_gradient_check() -> None:
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((3, 2))}
    for bad in (np.inf, np.nan, 1e308):
        with pytest.raises(CheckFailed):
            self_consistency(
                lambda v, bad=bad: float(np.sum(v["x"]) * bad),
                inputs,
                {"x": np.full((3, 2), bad)},
                rng,
                "layer",
                reference=lambda v: float(np.sum(v["x"])),
            )


# properties -------------------------------------------------------------------------------------------
def test_property_failure_reports_the_shrunk_case_deterministically() -> None:
    def buggy_sum(x: np.ndarray) -> float:
        return float(np.sum(x[:3]))  # wrong once there are more than three elements

    def check(case) -> None:
        if abs(buggy_sum(case["x"]) - float(np.sum(case["x"]))) > 1e-9:
            raise CheckFailed("sum is wrong")

    strategy = st.integers(1, 8).flatmap(lambda n: st.fixed_dictionaries({"x": gst.arrays((n,))}))
    found = []
    for _ in range(2):
        with pytest.raises(CheckFailed) as info:
            ctx().check_property(strategy, check, max_examples=50)
        found.append(info.value.counterexample)
    assert found[0] == found[1]
    assert "x.shape=(4,)" in found[0]  # the smallest failing size


def test_property_flags_answers_that_change_for_the_same_input() -> None:
    seen: set[bytes] = set()

    def check(x) -> None:
        key = x.tobytes()
        if key not in seen and x.size > 1:  # fails the first time, passes when replayed
            seen.add(key)
            raise CheckFailed("mask differs from the forward's")

    with pytest.raises(CheckFailed, match="not deterministic") as info:
        ctx().check_property(gst.arrays(st.integers(1, 6).map(lambda n: (n,))), check, max_examples=30)
    assert info.value.counterexample


def test_a_sandbox_taken_back_mid_property_is_not_called_non_deterministic() -> None:
    """A fork server killed under a session withdraws it: the case fails once and passes when replayed in a new
    sandbox. That is the grader's doing (regraded), never the candidate's 'non-deterministic' code."""
    from grader.isolation.base import SandboxWithdrawn

    calls = [0]

    def check(x) -> None:  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 3:
            raise SandboxWithdrawn("the fork server under this sandbox died")

    with pytest.raises(SandboxWithdrawn, match="fork server"):
        ctx().check_property(gst.arrays(st.integers(1, 6).map(lambda n: (n,))), check, max_examples=30)


def test_a_grader_bug_mid_property_stays_the_graders() -> None:
    calls = [0]

    def check(x) -> None:  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 2:
            raise KeyError("a bug in a plan")

    with pytest.raises(KeyError, match="a bug in a plan"):
        ctx().check_property(gst.arrays(st.integers(1, 6).map(lambda n: (n,))), check, max_examples=30)


def test_property_stops_at_the_first_case_when_a_name_is_missing() -> None:
    """No case can pass when the function the grader looks up is not there: one call, not a shrink of many (a
    trivial cnn submission made 136 sandbox calls to shrink such failures); a NameError inside the candidate's
    own code may depend on the case and is still shrunk."""
    from grader.engine.plan import CandidateRaised
    from grader.isolation.base import CandidateError

    def absent(x) -> None:  # type: ignore[no-untyped-def]
        calls[0] += 1
        raise CandidateRaised("conv2d_forward", CandidateError("AttributeError", "no conv2d_forward",
                                                               missing="conv2d_forward"))

    calls = [0]
    with pytest.raises(CheckFailed, match="does not define `conv2d_forward`") as info:
        ctx().check_property(gst.arrays(st.integers(1, 6).map(lambda n: (n,))), absent, max_examples=30)
    assert calls == [1]
    assert info.value.verdict.missing == "conv2d_forward" and info.value.verdict.kind == "failed"

    def typo(x) -> None:  # type: ignore[no-untyped-def]
        calls[0] += 1
        if x.size > 2:
            raise CandidateRaised("relu", CandidateError("NameError", "name 'nmp' is not defined"))

    calls = [0]
    with pytest.raises(CheckFailed, match="does not define `nmp`") as info:
        ctx().check_property(gst.arrays(st.integers(1, 6).map(lambda n: (n,))), typo, max_examples=30)
    assert calls[0] > 1 and info.value.counterexample == "[0., 0., 0.]"  # shrunk to the smallest failing case


def test_property_passes_a_correct_function() -> None:
    ctx().check_property(gst.arrays((3,)), lambda x: None, max_examples=10)


# statistics -------------------------------------------------------------------------------------------
def test_five_sigma_bounds_catch_keep_probability_confusion() -> None:
    rng = np.random.default_rng(0)
    n, p_drop = 20_000, 0.2
    kept_right = float(np.mean(rng.random(n) >= p_drop))
    statistics.check_fraction(kept_right, n, 1 - p_drop, "kept share")
    kept_wrong = float(np.mean(rng.random(n) < p_drop))  # p used as the keep probability
    with pytest.raises(CheckFailed, match="5-sigma"):
        statistics.check_fraction(kept_wrong, n, 1 - p_drop, "kept share")


# static -----------------------------------------------------------------------------------------------
def test_static_findings_name_the_line() -> None:
    files = {
        "solution.py": "import numpy as np\nimport torch.nn as nn\nfrom jax import grad\n"
        "m = __import__('autograd')\nimport importlib\nimportlib.import_module('tensorflow')\n"
    }
    found = forbidden_imports(files, ("torch", "jax", "autograd", "tensorflow"))
    assert sorted((f.line, f.message.split(" imports ")[1].split(" ")[0]) for f in found) == [
        (2, "torch"),
        (3, "jax"),
        (4, "autograd"),
        (6, "tensorflow"),
    ]
    assert parse_error({"solution.py": "def f(:\n  pass"}, "solution.py").line == 1
    assert parse_error({"solution.py": "x = 1\nfrom __future__ import annotations\n"}, "solution.py") is not None
    assert parse_error({"solution.py": "x = 1\n"}, "solution.py") is None


def test_a_failure_found_before_the_time_limit_stays_a_failure() -> None:
    from grader.isolation.base import CallTimeout

    calls = {"n": 0}

    def check(x) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise CallTimeout("call did not finish")  # the limit runs out while shrinking
        if x.size > 1:
            raise CheckFailed("wrong answer")

    with pytest.raises(CheckFailed, match="shrinking stopped") as info:
        ctx().check_property(gst.arrays(st.integers(1, 6).map(lambda n: (n,))), check, max_examples=30)
    assert info.value.counterexample


def test_five_sigma_mean_catches_dropout_without_inverted_scaling() -> None:
    rng = np.random.default_rng(3)
    n, p = 50_000, 0.3
    keep = rng.random(n) >= p
    inverted = keep / (1 - p)  # kept units scaled by 1/(1-p): mean 1, sd sqrt(p/(1-p))
    sd = float(np.sqrt(p / (1 - p)))
    statistics.check_mean(float(inverted.mean()), 1.0, sd, n, "mean of dropout(ones)")
    with pytest.raises(CheckFailed, match="5 sigma"):
        statistics.check_mean(float(keep.mean()), 1.0, sd, n, "mean of dropout(ones)")  # no scaling


def test_generated_cases_do_not_depend_on_which_modules_are_loaded(tmp_path, monkeypatch) -> None:
    """Hypothesis can mix constants from loaded local modules into its draws; grading must not."""

    def draws() -> list[float]:
        seen: list[float] = []
        ctx().check_property(
            gst.arrays((4,), gst.floats(-1e6, 1e6)), lambda x: seen.extend(x.tolist()), max_examples=60
        )
        return seen

    before = draws()
    module = tmp_path / "lots_of_constants.py"
    module.write_text("\n".join(f"C{i} = {i * 1234.5678 + 0.125}" for i in range(300)) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("lots_of_constants")
    assert draws() == before


def test_params_dict_conformance() -> None:
    from grader.engine.checks.compare import expect_params

    shapes = {"W1": (2, 3), "b1": (3,)}
    good = {"W1": np.zeros((2, 3)), "b1": np.zeros(3), "extra": 1}
    assert set(expect_params(good, shapes, "params")) == {"W1", "b1"}
    with pytest.raises(CheckFailed, match=r"must be a dict"):
        expect_params([1, 2], shapes, "params")
    with pytest.raises(CheckFailed, match=r"missing \['b1'\]"):
        expect_params({"W1": np.zeros((2, 3))}, shapes, "params")
    with pytest.raises(CheckFailed, match=r"shape \(3, 2\)"):
        expect_params({"W1": np.zeros((3, 2)), "b1": np.zeros(3)}, shapes, "params")
    bad = {"W1": np.full((2, 3), np.nan), "b1": np.zeros(3)}
    with pytest.raises(CheckFailed, match="non-finite value"):
        expect_params(bad, shapes, "params")
    with pytest.raises(CheckFailed, match="training diverged"):
        expect_params(bad, shapes, "params", diverged_hint="learning rate too high?")


def test_syntax_trees_built_by_two_threads_at_once_stay_whole() -> None:
    """A report page parses code (function highlighting) while a worker parses another submission; on CPython
    3.11 two interleaved constructions corrupt each other's recursion count ("SystemError: AST constructor
    recursion depth mismatch", a 500 on the page). The interleaving is forced: a garbage collection inside the
    first parse runs a finalizer that makes a second thread parse and waits for it (at most 1 s)."""
    import gc
    import threading

    from grader.engine.checks.static import parse_tree

    code = (ROOT / "tests" / "solutions" / "mlp" / "correct_vectorized.py").read_text()
    other: list[object] = []

    class ParsesInAnotherThread:
        def __del__(self) -> None:
            thread = threading.Thread(target=lambda: other.append(parse_tree(code)))
            thread.start()
            thread.join(1.0)  # with the lock, the second parse waits for the first: this join times out

    trees = []
    old = gc.get_threshold()
    try:
        for threshold in (5, 50, 300):
            gc.collect()
            gc.disable()
            cycle = ParsesInAnotherThread()
            cycle.self = cycle  # type: ignore[attr-defined]
            del cycle
            gc.set_threshold(threshold)  # the next collection falls inside the parse below
            gc.enable()
            trees.append(parse_tree(code))
    finally:
        gc.set_threshold(*old)
        gc.enable()
    deadline = time.monotonic() + 10
    while len(other) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(isinstance(t, ast.Module) for t in trees)
    assert len(other) == 3 and all(isinstance(t, ast.Module) for t in other)
