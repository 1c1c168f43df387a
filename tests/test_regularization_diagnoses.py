"""The regularization plan's verdicts: each known mistake is named on its test, and near misses are caught.

The near misses sit just past a threshold of the grader's own checks (a gradient
off by a relative error near 1e-3, a dropout statistic about 10 sigma off, a mask
shared along a row or a column with the right kept fraction), so a gradient-check
tolerance, statistics bounds or mask-independence check made weaker fails a test here.

Grades the sample solutions with the in-process sandbox (trusted code only), so
it needs no sandbox, but it grades every sample end to end (about 1 s each), so
it is marked slow; tests/test_catalog.py repeats the score checks of the wrong_*
files in the real sandbox.
"""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path

import pytest

from grader.engine import report as model
from tests.grading import grade_submission

pytestmark = pytest.mark.slow

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "regularization"

# (solution file stem, test id, a phrase its message must contain)
DIAGNOSES = [
    ("wrong_l2_penalizes_biases", "l2_loss", "the penalty includes keys that do not start with \"W\""),
    ("wrong_l2_penalizes_biases", "l2_grads", "they are not penalised, so their gradient is zero"),
    ("wrong_l2_grad_missing_reg", "l2_grads", "the factor reg is missing"),
    ("wrong_l2_grad_missing_reg", "l2_gradcheck", "backward math is wrong"),
    ("wrong_l2_grad_factor_two", "l2_grads", "the gradient of a weight is 2 * reg * W"),
    ("wrong_l2_grad_factor_two", "l2_gradcheck", "backward math is wrong"),
    ("wrong_l2_loss_missing_half", "l2_loss", "the penalty is reg * sum(W**2)"),
    ("wrong_l2_loss_missing_half", "l2_gradcheck", "backward math is wrong"),
    ("wrong_dropout_p_is_keep", "dropout_forward", "kept units are scaled by 1/p"),
    ("wrong_dropout_p_is_keep", "dropout_statistics", "p is used as the probability of keeping a unit"),
    ("wrong_dropout_p_is_keep", "dropout_backward", "dx is scaled by 1/p"),
    ("wrong_dropout_not_inverted", "dropout_forward", "kept units are not scaled"),
    ("wrong_dropout_not_inverted", "dropout_backward", "without the 1/(1-p) scale"),
    ("wrong_dropout_backward_new_mask", "dropout_backward", "does not use the forward pass's mask"),
    ("wrong_dropout_active_in_eval", "dropout_eval", "dropout is the identity when train is False"),
    ("wrong_dropout_seed_ignored", "dropout_seed", "gave different masks"),
    ("wrong_bn_course_momentum", "bn_running_stats", "follow the course convention (momentum 0.9 style)"),
    ("wrong_bn_running_var_biased", "bn_running_stats", "running_var uses the biased batch variance"),
    ("wrong_bn_unbiased_normalize", "bn_forward", "normalized with the unbiased variance"),
    ("wrong_bn_unbiased_normalize", "bn_backward", "dx is computed with the unbiased variance"),
    ("wrong_bn_unbiased_normalize", "bn_gradcheck", "backward math is wrong"),
    ("wrong_bn_backward_no_mean_var_terms", "bn_backward",
     "dx leaves out the gradient through the batch mean and variance"),
    ("wrong_bn_backward_no_mean_var_terms", "bn_gradcheck", "backward math is wrong"),
    ("wrong_bn_eval_uses_batch_stats", "bn_eval", "eval mode normalizes with the batch's own statistics"),
    ("wrong_bn_eps_outside_sqrt", "bn_forward", "eps is added to the standard deviation"),
    ("wrong_es_patience_off_by_one", "es_min", "it stops one epoch late"),
    ("wrong_es_patience_off_by_one", "es_min_delta", "it stops one epoch late"),
    ("wrong_es_patience_off_by_one", "es_max", "it stops one epoch late"),
    ("wrong_es_ignores_min_delta", "es_min_delta", "min_delta is ignored"),
    ("wrong_es_ignores_min_delta", "es_max", "min_delta is ignored"),
    ("wrong_es_ignores_mode_max", "es_max", "mode='max' is ignored"),
    ("wrong_es_best_epoch_one_based", "es_min", "best_epoch counts from 1"),
    ("wrong_es_best_epoch_one_based", "es_min_delta", "best_epoch counts from 1"),
    ("wrong_es_best_epoch_one_based", "es_max", "best_epoch counts from 1"),
    ("wrong_es_compares_with_last_value", "es_min", "measured against the previous epoch's value"),
    ("wrong_es_compares_with_last_value", "es_min_delta", "measured against the previous epoch's value"),
    ("wrong_es_compares_with_last_value", "es_max", "measured against the previous epoch's value"),
    # Near misses: each is caught by one check only, and only while that check keeps its threshold.
    ("wrong_l2_grad_one_sided_difference", "l2_gradcheck", "disagree with finite differences of your own forward"),
    ("wrong_dropout_drops_too_many", "dropout_statistics", "fraction of units kept with p=0.1"),
    ("wrong_dropout_mask_shared_along_row", "dropout_statistics",
     "agreement between the masks of neighbouring columns"),
    ("wrong_dropout_mask_shared_along_row", "dropout_statistics", "each unit must be dropped independently"),
    ("wrong_dropout_mask_shared_along_column", "dropout_statistics",
     "agreement between the masks of neighbouring rows"),
]

# Mistakes whose message on these tests is the generic comparison: the test must still fail.
ALSO_FAILS = [
    ("wrong_bn_backward_no_mean_var_terms", "bn_stability"),
    ("wrong_bn_eps_outside_sqrt", "bn_backward"),
    ("wrong_bn_eps_outside_sqrt", "bn_stability"),
    ("wrong_bn_unbiased_normalize", "bn_stability"),
    ("wrong_l2_grad_one_sided_difference", "l2_grads"),
]

# The only tests a near miss fails: everything else about it is right.
NEAR_MISSES = {
    "wrong_l2_grad_one_sided_difference": {"l2_grads", "l2_gradcheck"},
    "wrong_dropout_drops_too_many": {"dropout_statistics"},
    "wrong_dropout_mask_shared_along_row": {"dropout_statistics"},
    "wrong_dropout_mask_shared_along_column": {"dropout_statistics"},
}


@cache
def graded(stem: str) -> model.Report:
    path = SOLUTIONS_DIR / f"{stem}.py"
    return grade_submission("regularization", {"solution.py": path.read_text()}, backend="inprocess")


def result(stem: str, test_id: str) -> model.TestResult:
    return next(t for t in graded(stem).tests if t.id == test_id)


def known_wrong() -> list[str]:
    return sorted(p.stem for p in SOLUTIONS_DIR.glob("*.py") if p.stem.startswith("wrong_"))


@pytest.mark.parametrize("stem, test_id, phrase", DIAGNOSES, ids=[f"{s}-{t}" for s, t, _ in DIAGNOSES])
def test_known_mistake_is_named(stem: str, test_id: str, phrase: str) -> None:
    r = result(stem, test_id)
    assert r.status == "failed" and r.earned == 0 and r.fault == "candidate", (r.status, r.message)
    assert phrase in r.message, r.message


@pytest.mark.parametrize("stem, test_id", ALSO_FAILS, ids=[f"{s}-{t}" for s, t in ALSO_FAILS])
def test_known_mistake_fails_its_other_tests(stem: str, test_id: str) -> None:
    r = result(stem, test_id)
    assert r.status == "failed" and r.earned == 0 and r.fault == "candidate", (r.status, r.message)


def test_every_known_wrong_solution_has_a_named_diagnosis() -> None:
    assert {stem for stem, _, _ in DIAGNOSES} == set(known_wrong())


@pytest.mark.parametrize("stem", sorted(NEAR_MISSES))
def test_a_near_miss_fails_only_the_check_that_names_it(stem: str) -> None:
    failed = {t.id for t in graded(stem).tests if t.status != "passed"}
    assert failed == NEAR_MISSES[stem], [(t.id, t.message) for t in graded(stem).tests if t.status != "passed"]


def test_a_gradient_off_by_a_relative_error_near_1e_3_fails_the_gradient_check() -> None:
    # Forward differences with a step of 4e-3 give reg * (W + 0.002): right to about 1e-3, well past the
    # gradient check's tolerance (1e-5) and well inside one a thousand times looser.
    message = result("wrong_l2_grad_one_sided_difference", "l2_gradcheck").message
    errors = [float(e) for e in re.findall(r"\(error ([0-9.]+e[-+][0-9]+)\)", message)]
    assert errors and all(3e-4 < e < 3e-3 for e in errors), message
    assert "dW1" in message and not re.search(r"\bdb\d", message), message  # the zero bias gradients are right


def test_a_dropout_statistic_about_10_sigma_off_fails_the_5_sigma_bounds() -> None:
    # Dropping with p + 0.05 keeps about 0.85 instead of 0.9 of the units at p = 0.1: near 10 sigma over
    # the check's draws, so bounds at 5 sigma catch it and bounds at 50 sigma would not.
    message = result("wrong_dropout_drops_too_many", "dropout_statistics").message
    found = re.search(r"observed ([0-9.]+) over ([0-9]+) draws; expected ([0-9.]+)", message)
    assert found, message
    observed, n, expected = float(found[1]), int(found[2]), float(found[3])
    sigmas = abs(observed - expected) / math.sqrt(expected * (1 - expected) / n)
    assert 7 < sigmas < 13, (sigmas, message)


@pytest.mark.parametrize("stem", sorted(p.stem for p in SOLUTIONS_DIR.glob("correct_*.py")))
def test_correct_solution_earns_full_marks_in_process(stem: str) -> None:
    report = graded(stem)
    assert report.score == report.max_score, [(t.id, t.message) for t in report.tests if t.status != "passed"]
