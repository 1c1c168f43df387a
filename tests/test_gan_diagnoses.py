"""The gan plan's verdicts: each known mistake is named on its test, and the report carries the training data.

Grades the sample solutions with the in-process sandbox (trusted code only), so
it needs no sandbox, but it grades many samples end to end, training included
(about 10 s each), so it is marked slow; tests/test_catalog.py repeats the score
checks in the real sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import torch

from grader.engine import report as model
from problems.gan import plan as gan_plan
from tests.grading import grade_submission

pytestmark = pytest.mark.slow

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "gan"

# (wrong solution, test id, a phrase its message must contain)
DIAGNOSES = [
    ("labels_swapped", "discriminator_loss", "labels are swapped"),
    ("labels_swapped", "losses_backward", "labels are swapped"),
    ("loss_summed", "discriminator_loss", "summed over the batch"),
    ("loss_summed", "generator_loss", "summed over the batch"),
    ("d_loss_averaged", "discriminator_loss", "terms are averaged"),
    ("log_sigmoid", "losses_stability", "round to log(0)"),
    ("saturating_generator_loss", "generator_loss", "saturating minimax loss"),
    ("saturating_generator_loss", "losses_backward", "saturating minimax loss"),
    ("no_zero_grad", "train_step_params", "gradients are never zeroed"),
    ("no_detach", "d_update_isolated", "received a gradient before opt_D.step()"),
    ("fresh_z", "same_z", "a fresh z"),
    ("fresh_z", "train_step_params", "other than the z passed in"),
    ("g_before_d", "d_before_g", "opt_G.step() ran before opt_D.step()"),
    ("g_before_d", "train_step_params", "G is updated before D"),
    ("g_update_detached", "train_step_params", "detached G(z)"),
    ("g_update_detached", "train_gan", "parameters unchanged"),
    ("returns_tensors", "train_step_conformance", "as a tensor"),
    ("train_gan_noop", "train_gan", "parameters unchanged"),
    ("no_zero_grad", "train_gan", "untrained"),
]


@pytest.fixture(autouse=True)
def restore_torch_defaults() -> Iterator[None]:
    """The in-process sandbox runs the builders in this process; they set float64 as torch's default dtype."""
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@cache
def graded(stem: str) -> model.Report:
    path = SOLUTIONS_DIR / f"{stem}.py"
    return grade_submission("gan", {"solution.py": path.read_text()}, backend="inprocess")


def result(stem: str, test_id: str) -> model.TestResult:
    return next(t for t in graded(stem).tests if t.id == test_id)


@pytest.mark.parametrize("stem, test_id, phrase", DIAGNOSES, ids=[f"{s}-{t}" for s, t, _ in DIAGNOSES])
def test_the_mistake_is_named_on_its_test(stem: str, test_id: str, phrase: str) -> None:
    r = result(f"wrong_{stem}", test_id)
    assert r.status == "failed" and r.earned == 0, (r.status, r.message)
    assert phrase in r.message, r.message


def test_every_known_wrong_solution_has_a_named_diagnosis() -> None:
    assert {f"wrong_{stem}" for stem, _, _ in DIAGNOSES} == {p.stem for p in SOLUTIONS_DIR.glob("wrong_*.py")}


def test_a_loss_mistake_is_counted_in_the_loss_tests_only() -> None:
    # train_step is checked with the contract's losses standing in for the candidate's.
    for stem in ("labels_swapped", "loss_summed", "saturating_generator_loss", "log_sigmoid", "d_loss_averaged"):
        failed = {t.id for t in graded(f"wrong_{stem}").tests if t.status != "passed"}
        assert not failed & {"train_step_conformance", "train_step_params", "d_update_isolated", "d_before_g",
                             "same_z"}, (stem, failed)


def test_a_generated_failure_is_reported_on_its_shrunk_case() -> None:
    r = result("wrong_loss_summed", "discriminator_loss")
    assert r.counterexample is not None and "shape=(2" in r.counterexample
    step = result("wrong_no_zero_grad", "train_step_params")
    assert step.counterexample is not None and "n=2" in step.counterexample and "z_dim=1" in step.counterexample


def test_the_training_report_has_the_numbers_and_the_scatter_plot() -> None:
    r = result("correct_functional", "train_gan")
    assert r.status == "passed", r.message
    assert r.details["modes_covered"] >= gan_plan.MIN_MODES
    assert r.details["share_near_mode"] >= gan_plan.MIN_SHARE
    assert len(r.details["samples_per_mode"]) == 8 and r.details["energy_distance"] < 0.1
    (figure,) = r.figures
    assert figure.kind == "scatter" and set(figure.series) == {"target", "generated"}
    assert all(len(points) == 500 for points in figure.series.values())
    assert "modes covered" in r.message


def test_an_untrained_generator_fails_with_the_numbers() -> None:
    r = result("wrong_no_zero_grad", "train_gan")
    assert r.details["modes_covered"] < gan_plan.MIN_MODES and r.figures


def test_grading_is_deterministic() -> None:
    again = grade_submission("gan", {"solution.py": (SOLUTIONS_DIR / "correct_functional.py").read_text()},
                             backend="inprocess")
    first = graded("correct_functional")
    assert [(t.id, t.status, t.message) for t in again.tests] == [(t.id, t.status, t.message) for t in first.tests]
    assert again.tests[-1].details["samples_per_mode"] == first.tests[-1].details["samples_per_mode"]
