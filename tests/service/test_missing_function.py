"""A function the submission does not define is one verdict wherever it is needed: `failed`, the candidate's
fault, with a message naming it; whether the grader calls it directly or the candidate's own code calls it
(a NameError inside, e.g., TwoLayerNet.loss). Graded with the in-process fake: this is about verdicts, not
isolation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.grading import grade_submission

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


def _without(source: str, function: str) -> str:
    """The source with one top-level function removed (up to the next top-level statement)."""
    cut = re.sub(rf"\ndef {function}\(.*?(?=\n(?:def |class |[A-Za-z_@])|\Z)", "\n", source, flags=re.S)
    assert f"def {function}(" not in cut and cut != source
    return cut


@pytest.mark.parametrize(("problem", "solution", "function", "called_by_candidate"), [
    ("mlp", "correct_vectorized.py", "affine_backward", {"net_loss": "TwoLayerNet.loss", "train_mlp": "train_mlp"}),
    ("mlp", "correct_vectorized.py", "sgd_step", {"train_mlp": "train_mlp"}),
    ("regularization", "correct_compact.py", "batchnorm_forward", {}),
    ("rnn", "correct_vectorized.py", "lstm_step_backward", {"lstm_backward": "lstm_backward"}),
    ("cnn", "correct_im2col.py", "conv2d_forward", {"train_cnn": "train_cnn"}),
])
def test_every_test_needing_a_missing_function_fails_naming_it(problem: str, solution: str, function: str,
                                                               called_by_candidate: dict[str, str]) -> None:
    source = (SOLUTIONS / problem / solution).read_text()
    full = grade_submission(problem, {"solution.py": source}, backend="inprocess")
    assert all(t.status == "passed" for t in full.tests), [(t.id, t.status) for t in full.tests]
    report = grade_submission(problem, {"solution.py": _without(source, function)}, backend="inprocess")
    needing = [t for t in report.tests if t.status != "passed"]
    assert len(needing) >= 2, [(t.id, t.status) for t in report.tests]
    assert {(t.status, t.fault) for t in needing} == {("failed", "candidate")}, \
        [(t.id, t.status, t.fault, t.message) for t in needing]
    for t in needing:
        assert f"solution.py does not define `{function}`" in t.message, (t.id, t.message)
        assert t.earned == 0
    by_id = {t.id: t for t in report.tests}
    for test_id, caller in called_by_candidate.items():  # reached through the candidate's own code
        assert f"which {caller} calls (solution.py, line " in by_id[test_id].message, by_id[test_id].message
    assert report.score == round(sum(t.earned for t in report.tests), 6) < full.score
