"""The attention plan's verdicts: each known mistake is named on its test, and costs the tests built on it.

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

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "attention"

# (solution file stem, test id, a phrase its message must contain)
DIAGNOSES = [
    ("wrong_attn_no_scale", "attn_forward", "the scores are not scaled: they must be q @ k^T / sqrt(d)"),
    ("wrong_attn_no_scale", "attn_backward", "a forward pass whose scores are not scaled"),
    ("wrong_attn_no_scale", "mha_forward", "the scores of each head are not scaled"),
    ("wrong_attn_scale_by_d", "attn_forward", "the scores are divided by d; they must be divided by sqrt(d)"),
    ("wrong_attn_scale_by_d", "attn_backward", "a forward pass whose scores are divided by d"),
    ("wrong_attn_scale_by_d", "mha_forward", "the scores of each head are divided by D/H"),
    ("wrong_attn_softmax_over_queries", "attn_forward", "the softmax is taken over the queries (axis -2)"),
    ("wrong_attn_softmax_over_queries", "attn_causal", "the softmax is taken over the queries (axis -2)"),
    ("wrong_attn_no_max_subtraction", "attn_stability", "subtract each row's maximum score before exponentiating"),
    ("wrong_attn_mask_inverted", "attn_mask", "is the mask's sense inverted"),
    ("wrong_attn_mask_after_softmax", "attn_mask", "the mask is applied after the softmax"),
    ("wrong_attn_mask_after_softmax", "attn_causal", "the mask is applied after the softmax"),
    ("wrong_attn_causal_diagonal_excluded", "attn_causal", "is the diagonal left out of the causal mask"),
    ("wrong_attn_causal_transposed", "attn_causal", "causal=True lets query i attend to keys j >= i"),
    ("wrong_attn_causal_transposed", "mha_mask", "causal=True lets query i attend to keys j >= i"),
    ("wrong_attn_backward_no_row_sum", "attn_backward", "leaves out the softmax Jacobian's row-sum term"),
    ("wrong_attn_backward_no_row_sum", "attn_masked_backward", "leaves out the softmax Jacobian's row-sum term"),
    ("wrong_attn_backward_no_row_sum", "attn_gradcheck", "the backward math is wrong"),
    ("wrong_attn_dk_missing_scale", "attn_backward", "dk is missing the 1/sqrt(d) scale"),
    ("wrong_attn_dk_missing_scale", "attn_gradcheck", "dk (error"),
    ("wrong_attn_backward_ignores_mask", "attn_masked_backward", "is not zero at keys the mask hides"),
    ("wrong_attn_backward_ignores_mask", "attn_stability", "the backward uses the softmax weights before masking"),
    ("wrong_attn_backward_ignores_mask", "attn_gradcheck", "the backward math is wrong"),
    ("wrong_mha_split_without_transpose", "mha_forward", "the heads are split by a plain reshape"),
    ("wrong_mha_split_without_transpose", "mha_backward", "the heads are split by a plain reshape"),
    ("wrong_mha_merge_without_transpose", "mha_forward", "the heads are merged by a plain reshape"),
    ("wrong_mha_merge_without_transpose", "mha_backward", "the heads are merged by a plain reshape"),
    ("wrong_mha_scale_by_model_dim", "mha_forward", "divided by sqrt(D); they must be divided by sqrt(D/H)"),
    ("wrong_mha_linear_transposed", "mha_forward", "x @ W.T + b (torch.nn.Linear's convention)"),
    ("wrong_mha_linear_transposed", "mha_backward", "x @ W.T + b (torch.nn.Linear's convention)"),
    ("wrong_mha_dx_only_query_path", "mha_backward", "dx is only the gradient through the query projection"),
    ("wrong_mha_dx_only_query_path", "mha_gradcheck", "dx (error"),
]

# Mistakes whose message on these tests is the generic comparison or a non-finite value: the test must still fail.
ALSO_FAILS = [
    ("wrong_attn_softmax_over_queries", "attn_backward"),
    ("wrong_attn_softmax_over_queries", "mha_forward"),
    ("wrong_attn_mask_inverted", "mha_mask"),
    ("wrong_attn_mask_after_softmax", "mha_mask"),
    ("wrong_attn_causal_diagonal_excluded", "mha_mask"),
    ("wrong_attn_backward_no_row_sum", "mha_backward"),
    ("wrong_attn_backward_ignores_mask", "mha_backward"),
]

# Mistakes that only show in one place: every other test passes.
ONLY = {
    "wrong_attn_no_max_subtraction": {"attn_stability"},
    "wrong_mha_dx_only_query_path": {"mha_backward", "mha_gradcheck"},
    "wrong_mha_scale_by_model_dim": {"mha_forward", "mha_mask", "mha_backward"},
}


@cache
def graded(stem: str) -> model.Report:
    path = SOLUTIONS_DIR / f"{stem}.py"
    return grade_submission("attention", {"solution.py": path.read_text()}, backend="inprocess")


def result(stem: str, test_id: str) -> model.TestResult:
    return next(t for t in graded(stem).tests if t.id == test_id)


def known_wrong() -> list[str]:
    return sorted(p.stem for p in SOLUTIONS_DIR.glob("wrong_*.py"))


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


@pytest.mark.parametrize("stem", sorted(ONLY))
def test_a_local_mistake_fails_only_where_it_shows(stem: str) -> None:
    failed = {t.id for t in graded(stem).tests if t.status != "passed"}
    assert failed == ONLY[stem], [(t.id, t.message) for t in graded(stem).tests if t.status != "passed"]


def test_a_causal_mask_without_the_diagonal_is_named_on_query_0() -> None:
    # -inf everywhere in query 0's row: its softmax is 0/0. The verdict says which row and why, not only "nan".
    message = result("wrong_attn_causal_diagonal_excluded", "attn_causal").message
    assert "only query 0's output is not finite" in message and "j < i instead of j <= i" in message, message


@pytest.mark.parametrize("stem", sorted(p.stem for p in SOLUTIONS_DIR.glob("correct_*.py")))
def test_correct_solution_earns_full_marks_in_process(stem: str) -> None:
    report = graded(stem)
    assert report.score == report.max_score, [(t.id, t.message) for t in report.tests if t.status != "passed"]
