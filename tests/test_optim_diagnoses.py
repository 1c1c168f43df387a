"""The optim plan's verdicts: each known mistake is named on its test, and the correct styles earn full marks.

Grades the sample solutions with the in-process sandbox (trusted code only), so
it needs no sandbox, but it grades every sample end to end (a few seconds each),
so it is marked slow; tests/test_catalog.py repeats the score checks of the
wrong_* files in the real sandbox.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from grader.engine import report as model
from tests.grading import grade_submission

pytestmark = pytest.mark.slow

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "optim"

CLASSIC = "the momentum follows the course convention v = momentum * v - lr * g; p += v"
DAMPENED = "the momentum is dampened"
SCHEDULE = "the lr set between steps is ignored"

# (solution file stem, test id, a phrase its message must contain)
DIAGNOSES = [
    ("wrong_sgd_classic_momentum", "sgd_trajectory", CLASSIC),
    ("wrong_sgd_classic_momentum", "state_dict", "the momentum_buffer holds the course convention's velocity"),
    ("wrong_sgd_classic_momentum", "load_state_dict", CLASSIC),
    ("wrong_sgd_classic_momentum", "training", CLASSIC),
    ("wrong_sgd_dampening", "sgd_trajectory", DAMPENED),
    ("wrong_sgd_dampening", "state_dict", "the momentum_buffer is dampened"),
    ("wrong_sgd_dampening", "training", DAMPENED),
    ("wrong_sgd_decay_after_momentum", "sgd_trajectory", "weight decay is added after the momentum"),
    ("wrong_sgd_decay_after_momentum", "state_dict", "the momentum_buffer leaves out the weight decay"),
    ("wrong_adam_no_bias_correction", "adam_trajectory", "the moments are not bias-corrected"),
    ("wrong_adam_no_bias_correction", "adamw_trajectory", "the moments are not bias-corrected"),
    ("wrong_adam_no_bias_correction", "training", "the moments are not bias-corrected"),
    ("wrong_adam_bias_correction_zero_based", "adam_trajectory", "with t = 0 at the first step divides by zero"),
    ("wrong_adam_bias_correction_zero_based", "adamw_trajectory", "with t = 0 at the first step divides by zero"),
    ("wrong_adam_bias_correction_zero_based", "load_state_dict", "the bias correction uses t - 1 at step t"),
    ("wrong_adam_eps_inside_sqrt", "adam_trajectory", "eps is inside the square root"),
    ("wrong_adam_eps_inside_sqrt", "adamw_trajectory", "eps is inside the square root"),
    ("wrong_adam_eps_inside_sqrt", "training", "eps is inside the square root"),
    ("wrong_adamw_coupled_decay", "adamw_trajectory", "AdamW's weight decay is coupled"),
    ("wrong_adamw_coupled_decay", "state_dict", "the moments include weight_decay * p"),
    ("wrong_adamw_coupled_decay", "training", "AdamW's weight decay is coupled"),
    ("wrong_adam_decoupled_decay", "adam_trajectory", "Adam's weight decay is decoupled"),
    ("wrong_adam_decoupled_decay", "state_dict", "the moments leave out the L2 weight decay"),
    ("wrong_params_rebound", "in_place", "is a new array: the array the caller passed in does not hold the new"),
    ("wrong_grads_kept_as_buffer", "grads_untouched", "of step 1 was modified (after the later steps"),
    ("wrong_grads_decay_in_place", "grads_untouched", "was modified"),
    ("wrong_state_dict_without_step", "state_dict", "must return a dict with the keys 'step' and 'state'"),
    ("wrong_state_dict_without_step", "load_state_dict", "but not the step count"),
    ("wrong_load_state_dict_step_only", "load_state_dict", "restored the step count but not the"),
    ("wrong_lr_read_once", "sgd_trajectory", SCHEDULE),
    ("wrong_lr_read_once", "adam_trajectory", SCHEDULE),
    ("wrong_lr_read_once", "adamw_trajectory", SCHEDULE),
    ("wrong_lr_read_once", "training", SCHEDULE),
]

# Only the conformance test of a conformance mistake fails: its values are right everywhere else.
ONLY = {
    "wrong_params_rebound": {"in_place"},
    "wrong_grads_kept_as_buffer": {"grads_untouched"},
    "wrong_grads_decay_in_place": {"grads_untouched"},
    "wrong_load_state_dict_step_only": {"load_state_dict"},
}


@cache
def graded(stem: str) -> model.Report:
    path = SOLUTIONS_DIR / f"{stem}.py"
    return grade_submission("optim", {"solution.py": path.read_text()}, backend="inprocess")


def result(stem: str, test_id: str) -> model.TestResult:
    return next(t for t in graded(stem).tests if t.id == test_id)


def known_wrong() -> list[str]:
    return sorted(p.stem for p in SOLUTIONS_DIR.glob("*.py") if p.stem.startswith("wrong_"))


@pytest.mark.parametrize("stem, test_id, phrase", DIAGNOSES, ids=[f"{s}-{t}" for s, t, _ in DIAGNOSES])
def test_known_mistake_is_named(stem: str, test_id: str, phrase: str) -> None:
    r = result(stem, test_id)
    assert r.status == "failed" and r.earned == 0 and r.fault == "candidate", (r.status, r.message)
    assert phrase in r.message, r.message


def test_every_known_wrong_solution_has_a_named_diagnosis() -> None:
    assert {stem for stem, _, _ in DIAGNOSES} == set(known_wrong())


@pytest.mark.parametrize("stem", sorted(ONLY))
def test_a_conformance_mistake_costs_only_its_own_test(stem: str) -> None:
    failed = {t.id for t in graded(stem).tests if t.status != "passed"}
    assert failed == ONLY[stem], [(t.id, t.message) for t in graded(stem).tests if t.status != "passed"]


def test_classic_momentum_is_invisible_at_a_constant_lr() -> None:
    # The course convention agrees with PyTorch's while lr stays put: the trajectory test fails only because
    # its cases change lr between steps. The training run keeps lr constant until step 100 and parts there.
    message = result("wrong_sgd_classic_momentum", "training").message
    assert "after step 101" in message, message


@pytest.mark.parametrize("stem", sorted(p.stem for p in SOLUTIONS_DIR.glob("correct_*.py")))
def test_correct_solution_earns_full_marks_in_process(stem: str) -> None:
    report = graded(stem)
    assert report.score == report.max_score, [(t.id, t.message) for t in report.tests if t.status != "passed"]


def test_reference_earns_full_marks_in_process() -> None:
    path = Path(__file__).parents[1] / "reference" / "optim.py"
    report = grade_submission("optim", {"solution.py": path.read_text()}, backend="inprocess")
    assert report.score == report.max_score, [(t.id, t.message) for t in report.tests if t.status != "passed"]
