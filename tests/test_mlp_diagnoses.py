"""The mlp plan's verdicts: each known mistake is named on its test, and training is reported with its figure.

Grades the sample solutions with the in-process sandbox (trusted code only), so
it needs no sandbox, but it grades every sample end to end, training included
(about 3 s each), so it is marked slow; tests/test_catalog.py repeats the score
checks in the real sandbox.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from grader.engine import report as model
from problems.mlp import plan as mlp_plan
from tests.grading import grade_submission

pytestmark = pytest.mark.slow

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "mlp"

# (wrong solution, test id, a phrase its message must contain)
DIAGNOSES = [
    ("affine_mutates_input", "affine_forward", "modified its input `x` in place"),
    ("db_mean", "affine_backward", "db is averaged over the batch"),
    ("db_mean", "affine_gradcheck", "db (error"),
    ("db_mean", "affine_gradcheck", "backward math is wrong"),
    ("dx_not_reshaped", "affine_backward", "reshape it back to the input's shape"),
    ("relu_mask_inverted", "relu_backward", "the ReLU mask is inverted"),
    ("loss_summed", "softmax_loss", "the loss is summed over the batch"),
    ("dlogits_not_averaged", "softmax_loss", "dlogits is not divided by the batch size"),
    ("dlogits_not_averaged", "softmax_gradcheck", "backward math is wrong"),
    ("softmax_unstable", "softmax_stability", "subtract each row's maximum"),
    ("net_loss_without_reg", "net_loss", "the loss leaves out the L2 penalty"),
    ("net_loss_without_reg", "net_gradcheck", "the loss and its gradients are inconsistent"),
    ("reg_on_biases", "net_loss", "the L2 penalty also covers the biases"),
    ("l2_missing_from_grad", "net_grads", "leaves out the L2 term reg * W"),
    ("l2_missing_from_grad", "net_gradcheck", "the loss and its gradients are inconsistent"),
    ("l2_grad_factor", "net_gradcheck", "the loss and its gradients are inconsistent"),
    ("sgd_sign", "sgd_step", "it must subtract lr * grad"),
    ("sgd_rebinds_local", "sgd_step", "rebinding a local name does not change the caller's params"),
    ("sgd_rebinds_local", "train_mlp", "the returned params look untrained"),
    ("train_noop", "train_mlp", "the returned params look untrained"),
    ("torch_autograd", "affine_backward", "imports an autodiff library"),
    ("torch_autograd", "affine_gradcheck", "imports an autodiff library"),
]

# Mistakes whose message on these tests is the generic comparison: the test must still fail.
ALSO_FAILS = [
    ("loss_summed", "net_loss"),
    ("l2_grad_factor", "net_grads"),
    ("reg_on_biases", "net_grads"),
]


@cache
def graded(stem: str) -> model.Report:
    path = SOLUTIONS_DIR / f"{stem}.py"
    return grade_submission("mlp", {"solution.py": path.read_text()}, backend="inprocess")


def result(stem: str, test_id: str) -> model.TestResult:
    return next(t for t in graded(stem).tests if t.id == test_id)


@pytest.mark.parametrize("stem, test_id, phrase", DIAGNOSES, ids=[f"{s}-{t}" for s, t, _ in DIAGNOSES])
def test_known_mistake_is_named(stem: str, test_id: str, phrase: str) -> None:
    r = result(f"wrong_{stem}", test_id)
    assert r.status == "failed" and r.earned == 0 and r.fault == "candidate", (r.status, r.message)
    assert phrase in r.message, r.message


@pytest.mark.parametrize("stem, test_id", ALSO_FAILS, ids=[f"{s}-{t}" for s, t in ALSO_FAILS])
def test_known_mistake_fails_its_other_tests(stem: str, test_id: str) -> None:
    r = result(f"wrong_{stem}", test_id)
    assert r.status == "failed" and r.earned == 0 and r.fault == "candidate", (r.status, r.message)


def test_every_known_wrong_solution_has_a_named_diagnosis() -> None:
    assert {f"wrong_{stem}" for stem, _, _ in DIAGNOSES} == {p.stem for p in SOLUTIONS_DIR.glob("wrong_*.py")}


def test_convention_bug_passes_its_own_gradient_check() -> None:
    # A loss summed over the batch with its gradient summed too is consistent: T1 fails, T3 passes.
    assert result("wrong_loss_summed", "softmax_loss").status == "failed"
    assert result("wrong_loss_summed", "softmax_gradcheck").status == "passed"
    # dlogits not divided by N while the loss is a mean is inconsistent: T3 fails as well.
    assert result("wrong_dlogits_not_averaged", "softmax_gradcheck").status == "failed"


def test_a_backward_mistake_is_not_blamed_on_the_forward_pass() -> None:
    for stem in ("db_mean", "relu_mask_inverted", "dx_not_reshaped"):
        report = graded(f"wrong_{stem}")
        forward = {t.id: t.status for t in report.tests if t.id in ("affine_forward", "relu_forward")}
        assert set(forward.values()) == {"passed"}, (stem, forward)


@pytest.mark.parametrize("stem", sorted(p.stem for p in SOLUTIONS_DIR.glob("correct_*.py")))
def test_correct_solution_earns_full_marks_in_process(stem: str) -> None:
    report = graded(stem)
    assert report.score == report.max_score, [(t.id, t.message) for t in report.tests if t.status != "passed"]
    training = result(stem, "train_mlp")
    assert training.details["held_out_accuracy"] >= mlp_plan.PASS_ACCURACY
    assert training.figures and training.figures[0].kind == "bar"
