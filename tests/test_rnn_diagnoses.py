"""The rnn plan's verdicts: each known mistake is named on its test, and the report carries the gradient-flow data.

Grades the sample solutions with the in-process sandbox (trusted code only), so
it needs no sandbox, but it grades every sample end to end (about 25 s), so it
is marked slow; tests/test_catalog.py repeats the score checks in the real sandbox.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from grader.engine import report as model
from problems.rnn import plan as rnn_plan
from reference import rnn as ref
from tests.grading import grade_submission

pytestmark = pytest.mark.slow

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "rnn"

# (wrong solution, test id, a phrase its message must contain)
DIAGNOSES = [
    ("gate_order_ifog", "lstm_step_forward", "order i, f, o, g"),
    ("gate_order_ifog", "lstm_step_backward", "order i, f, o, g"),
    ("gate_order_ifog", "lstm_forward", "order i, f, o, g"),
    ("gate_order_ifog", "lstm_backward", "order i, f, o, g"),
    ("cell_grad_not_carried", "lstm_backward", "cell-state gradient is not carried back through time"),
    ("cell_grad_not_carried", "lstm_gradcheck", "backward math is wrong"),
    ("dh_last_step_only", "lstm_backward", "used only at the last time step"),
    ("dh0_zeros", "lstm_backward", "dh0 is all zeros"),
    ("tanh_derivative", "rnn_step_backward", "1 - tanh(a)**2"),
    ("tanh_derivative", "lstm_step_backward", "1 - tanh(a)**2"),
    ("tanh_derivative", "lstm_backward", "1 - tanh(a)**2"),
    ("tanh_derivative", "rnn_step_gradcheck", "backward math is wrong"),
    ("unstable_sigmoid", "saturation", "exp overflows"),
    ("rnn_dWh_uses_h_next", "rnn_step_backward", "dWh is computed from h_next"),
    ("db_mean_over_batch", "rnn_step_backward", "db is averaged over the batch"),
    ("db_mean_over_batch", "lstm_step_backward", "db is averaged over the batch"),
    ("db_mean_over_batch", "lstm_backward", "db is averaged over the batch"),
    ("dc_prev_without_forget_gate", "lstm_step_backward", "multiplied by the forget gate"),
    ("dc_prev_without_forget_gate", "lstm_backward", "multiplied by the forget gate"),
    ("h_without_tanh_of_c", "lstm_step_forward", "o * tanh(c_next)"),
    ("h_without_tanh_of_c", "lstm_forward", "o * tanh(c)"),
]


@cache
def graded(stem: str) -> model.Report:
    path = SOLUTIONS_DIR / f"{stem}.py"
    return grade_submission("rnn", {"solution.py": path.read_text()}, backend="inprocess")


def result(stem: str, test_id: str) -> model.TestResult:
    return next(t for t in graded(stem).tests if t.id == test_id)


@pytest.mark.parametrize("stem, test_id, phrase", DIAGNOSES, ids=[f"{s}-{t}" for s, t, _ in DIAGNOSES])
def test_known_mistake_is_named(stem: str, test_id: str, phrase: str) -> None:
    r = result(f"wrong_{stem}", test_id)
    assert r.status == "failed" and r.earned == 0
    assert phrase in r.message, r.message


def test_every_known_wrong_solution_has_a_named_diagnosis() -> None:
    assert {f"wrong_{stem}" for stem, _, _ in DIAGNOSES} == {p.stem for p in SOLUTIONS_DIR.glob("wrong_*.py")}


SHRUNK = [("wrong_gate_order_ifog", "lstm_step_forward"), ("wrong_tanh_derivative", "rnn_step_backward"),
          ("wrong_dh0_zeros", "lstm_backward")]


@pytest.mark.parametrize("stem, test_id", SHRUNK, ids=[f"{s}-{t}" for s, t in SHRUNK])
def test_generated_failures_come_with_a_shrunk_counterexample(stem: str, test_id: str) -> None:
    counterexample = result(stem, test_id).counterexample
    # Shrinking drives the batch to its smallest allowed size, N = 2.
    assert counterexample and "x.shape=(2," in counterexample


def test_convention_bug_passes_its_own_gradient_check() -> None:
    # T1 fails and T3 passes: the report can tell a convention from wrong backward math.
    for test_id in ("lstm_step_gradcheck", "lstm_gradcheck"):
        assert result("wrong_gate_order_ifog", test_id).status == "passed"
        assert result("wrong_h_without_tanh_of_c", test_id).status == "passed"


def test_gradient_through_time_is_reported_as_data() -> None:
    r = result("correct_vectorized", "gradient_through_time")
    assert r.status == "passed"
    norms = r.details["gradient_norms"]
    T = rnn_plan.FLOW["T"]
    assert len(norms["RNN"]) == len(norms["LSTM"]) == T
    (figure,) = r.figures
    assert sorted(figure.series) == ["LSTM (your code)", "RNN (your code)"]
    assert [p[0] for p in figure.series["RNN (your code)"]] == [float(T - 1 - t) for t in range(T)]
    # With this setup the plain RNN's gradient vanishes a hundred times faster than the LSTM's.
    assert norms["RNN"][0] / norms["RNN"][-1] < 1e-2 * norms["LSTM"][0] / norms["LSTM"][-1]
    # A wrong backward gets its curve drawn next to the reference's.
    wrong = result("wrong_tanh_derivative", "gradient_through_time")
    assert wrong.status == "failed" and "RNN (reference)" in wrong.figures[0].series


@pytest.mark.parametrize("stem", sorted(p.stem for p in SOLUTIONS_DIR.glob("correct_*.py")))
def test_correct_solution_earns_full_marks_in_process(stem: str) -> None:
    report = graded(stem)
    assert report.score == report.max_score, [(t.id, t.message) for t in report.tests if t.status != "passed"]


def test_mistake_helpers_reduce_to_the_reference_when_no_mistake_is_made() -> None:
    c = ref.lstm_sequence_inputs(1, 2, 3, 4, 3)
    dh = np.random.default_rng(2).standard_normal((2, 3, 3))
    _, cache = ref.lstm_forward(c["x"], c["h0"], c["Wx"], c["Wh"], c["b"])
    expected = dict(zip(rnn_plan.LSTM_GRADS, ref.lstm_backward(dh, cache)))
    got = rnn_plan._lstm_sequence_grads(c, dh)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-14)
