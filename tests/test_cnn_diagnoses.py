"""The cnn plan's verdicts: each known mistake is named on its test, and efficiency is reported, not scored.

Grades the sample solutions with the in-process sandbox (trusted code only), so
it needs no sandbox, but it grades every sample end to end (about 20 s), so it
is marked slow; tests/test_catalog.py repeats the score checks in the real sandbox.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from grader.engine import report as model
from problems.cnn import plan as cnn_plan
from reference import cnn as ref
from tests.grading import grade_submission

pytestmark = pytest.mark.slow

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "cnn"

# (wrong solution, test id, a phrase its message must contain)
DIAGNOSES = [
    ("kernel_flipped", "conv_forward", "kernel flipped: this is convolution, the contract is cross-correlation"),
    ("kernel_flipped", "conv_backward", "kernel flipped"),
    ("kernel_flipped", "train_cnn", "with W1 flipped it would pass"),
    ("padding_not_cropped", "conv_backward", "the padding is not cropped from dx"),
    ("crop_minus_pad", "conv_backward", "dx is empty (shape (2, 1, 0, 0)) when pad = 0"),
    ("backward_ignores_stride", "conv_backward", "wrong only when stride > 1"),
    ("backward_ignores_stride", "conv_gradcheck", "backward math is wrong"),
    ("output_size_rounds_up", "conv_forward", "the output size rounds up"),
    ("output_size_rounds_up", "conv_backward", "fix the forward pass first"),
    ("output_size_rounds_up", "pool_forward", "the number of windows rounds up"),
    ("asserts_divisible", "conv_forward", "raises only where H + 2*pad - KH is not a multiple of the stride"),
    ("db_mean", "conv_backward", "db is averaged"),
    ("db_mean", "conv_gradcheck", "db (error"),
    ("pool_assign_not_accumulate", "pool_backward", "accumulate (dx[...] += g) instead of assigning"),
    ("pool_assign_not_accumulate", "pool_gradcheck", "backward math is wrong"),
    ("pool_grad_to_every_position", "pool_backward", "goes to every position of the window"),
    ("pool_grad_to_every_position", "pool_ties", "not a maximum of any window"),
    ("train_untrained", "train_cnn", "the returned params look untrained"),
]


@cache
def graded(stem: str) -> model.Report:
    path = SOLUTIONS_DIR / f"{stem}.py"
    return grade_submission("cnn", {"solution.py": path.read_text()}, backend="inprocess")


def result(stem: str, test_id: str) -> model.TestResult:
    return next(t for t in graded(stem).tests if t.id == test_id)


@pytest.mark.parametrize("stem, test_id, phrase", DIAGNOSES, ids=[f"{s}-{t}" for s, t, _ in DIAGNOSES])
def test_known_mistake_is_named(stem: str, test_id: str, phrase: str) -> None:
    r = result(f"wrong_{stem}", test_id)
    # a wrong answer fails; a solution that raises (asserts_divisible) is an error, the candidate's either way
    assert r.status == ("error" if stem == "asserts_divisible" else "failed") and r.earned == 0
    assert r.fault == "candidate"
    assert phrase in r.message, r.message


def test_every_known_wrong_solution_has_a_named_diagnosis() -> None:
    assert {f"wrong_{stem}" for stem, _, _ in DIAGNOSES} == {p.stem for p in SOLUTIONS_DIR.glob("wrong_*.py")}


SHRUNK = [
    ("wrong_backward_ignores_stride", "conv_backward", ["x.shape=(2, 1,", "stride=2"]),
    ("wrong_crop_minus_pad", "conv_backward", ["x.shape=(2, 1, 1, 1)", "pad=0"]),
    ("wrong_output_size_rounds_up", "conv_forward", ["stride=2", "x.shape=(2, 1, 1, 2)"]),
    ("wrong_pool_assign_not_accumulate", "pool_backward", ["kernel=2, stride=1", "x.shape=(2, 3, 3, 3)"]),
    ("wrong_kernel_flipped", "conv_forward", ["x.shape=(2, 1, 1, 2)", "w.shape=(1, 1, 1, 2)"]),
]


@pytest.mark.parametrize("stem, test_id, parts", SHRUNK, ids=[f"{s}-{t}" for s, t, _ in SHRUNK])
def test_generated_failures_come_with_a_shrunk_counterexample(stem: str, test_id: str, parts: list[str]) -> None:
    counterexample = result(stem, test_id).counterexample
    assert counterexample
    for part in parts:
        assert part in counterexample, counterexample


def test_convention_bug_passes_its_own_gradient_check() -> None:
    # T1 fails and T3 passes: a flipped kernel is a convention, its backward math is consistent.
    assert result("wrong_kernel_flipped", "conv_forward").status == "failed"
    assert result("wrong_kernel_flipped", "conv_gradcheck").status == "passed"


def test_stride_bug_is_not_blamed_on_pooling_or_training() -> None:
    report = graded("wrong_backward_ignores_stride")
    assert {t.id for t in report.tests if t.status != "passed"} == {"conv_backward", "conv_gradcheck"}


@pytest.mark.parametrize("stem", sorted(p.stem for p in SOLUTIONS_DIR.glob("correct_*.py")))
def test_correct_solution_earns_full_marks_in_process(stem: str) -> None:
    report = graded(stem)
    assert report.score == report.max_score, [(t.id, t.message) for t in report.tests if t.status != "passed"]
    training = result(stem, "train_cnn")
    assert training.details["held_out_accuracy"] >= cnn_plan.PASS_ACCURACY
    assert training.figures and len(training.figures[0].series["accuracy"]) == ref.NUM_CLASSES


def test_efficiency_is_reported_not_scored() -> None:
    naive = result("correct_naive_loops", "conv_efficiency")
    vectorized = result("correct_einsum", "conv_efficiency")
    assert naive.points == 0 and naive.status == "passed"
    # Loops over every output element are hundreds of times slower than the vectorized reference.
    assert "x slower than the reference's im2col" in naive.message
    assert naive.details["ratio"] > 10
    assert vectorized.details["ratio"] < naive.details["ratio"] / 5


def test_channels_last_flatten_is_named() -> None:
    split = ref.digits_split(0)
    params = ref.train_cnn(split.X_train, split.y_train, 0)
    # The same network with W2's rows laid out for an (N, 4, 4, 8) flatten.
    order = cnn_plan._channels_last_w2(np.arange(ref.FLAT_DIM)[:, None])[:, 0]
    channels_last = {**params, "W2": params["W2"][np.argsort(order)]}
    assert np.array_equal(cnn_plan._channels_last_w2(channels_last["W2"]), params["W2"])
    assert ref.accuracy(channels_last, split.X_test, split.y_test) < cnn_plan.PASS_ACCURACY
    assert "channels-last" in cnn_plan._training_diagnosis(channels_last, split.X_test, split.y_test)
