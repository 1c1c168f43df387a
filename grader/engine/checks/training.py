"""Scoring a trained classifier: held-out accuracy against a pass mark, per-class accuracy as a figure.

A training test hands the candidate a training split, takes back parameters,
and scores them with the grader's own forward pass on data the candidate
never saw. What it reports is the same for every classifier exercise: the
accuracy (details and a note), a bar chart per class, and, under the pass
mark, chance for comparison and the exercise's own diagnosis of why.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from grader.engine.plan import CheckFailed, Context
from grader.engine.report import Figure


def per_class_accuracy(predictions: np.ndarray, y: np.ndarray, classes: int) -> list[float]:
    """Accuracy on each class's held-out examples (0 for a class with none)."""
    return [float(np.mean(predictions[y == k] == k)) if np.any(y == k) else 0.0 for k in range(classes)]


def score_classifier(ctx: Context, predictions: np.ndarray, y: np.ndarray, classes: int, pass_mark: float, *,
                     per_class_title: str, class_label: str, on: str = "",
                     diagnosis: Callable[[float], str] = lambda accuracy: "") -> float:
    """Fail under the pass mark (with `diagnosis(accuracy)` appended), else note the accuracy; returns it.

    `on` names the held-out set in messages (" on 360 digits"); the details keep the accuracy rounded.
    """
    accuracy = float(np.mean(predictions == y))
    ctx.details["held_out_accuracy"] = round(accuracy, 4)
    ctx.figure(Figure(kind="bar", title=per_class_title, x_label=class_label, y_label="accuracy",
                      series={"accuracy": [[float(k), a] for k, a in
                                           enumerate(per_class_accuracy(predictions, y, classes))]}))
    chance = 1 / classes
    if accuracy < pass_mark:
        raise CheckFailed(f"held-out accuracy {accuracy:.3f}{on} is under the pass mark {pass_mark:.2f} "
                          f"(chance is {chance:.2f}){diagnosis(accuracy)}")
    ctx.note(f"held-out accuracy {accuracy:.3f}{on} (pass mark {pass_mark:.2f}; chance is {chance:.2f})")
    return accuracy
