"""The tie-split and timing checks on their own: each catches a planted bug and passes correct answers.

Fast, in-process. (Kept beside tests/test_checks.py, which covers the older check modules.)
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from grader.engine.checks.ties import check_tied_split, pool_window_ties
from grader.engine.checks.timing import SpeedComparison, best_time_s, compare_speed
from grader.engine.plan import CheckFailed
from reference import cnn as ref


def tied_case() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """A 2x2-pooled image with many tied maxima and a Gaussian upstream gradient."""
    x = np.random.default_rng(0).integers(-1, 2, size=(2, 2, 4, 6)).astype(np.float64)
    upstream = np.random.default_rng(1).standard_normal((2, 2, 2, 3))
    return x, pool_window_ties(x, 2, 2), upstream.ravel()


def split(x: np.ndarray, groups: list[np.ndarray], upstream: np.ndarray, weights: str) -> np.ndarray:
    """dx with each window's gradient split among its tied maxima: 'first', 'last', 'equal' or 'random'."""
    dx = np.zeros(x.size)
    rng = np.random.default_rng(2)
    for members, g in zip(groups, upstream):
        if weights == "first":
            share = np.eye(len(members))[0]
        elif weights == "last":
            share = np.eye(len(members))[-1]
        elif weights == "equal":
            share = np.full(len(members), 1 / len(members))
        else:
            share = rng.dirichlet(np.ones(len(members)))
        dx[members] += share * g
    return dx.reshape(x.shape)


@pytest.mark.parametrize("weights", ["first", "last", "equal", "random"])
def test_every_valid_split_passes(weights: str) -> None:
    x, groups, upstream = tied_case()
    assert max(len(g) for g in groups) >= 3  # the case really has ties
    check_tied_split(split(x, groups, upstream, weights), groups, upstream, "pool")


def test_the_reference_choice_is_a_valid_split() -> None:
    x, groups, upstream = tied_case()
    out, cache = ref.maxpool2d_forward(x, 2, 2)
    check_tied_split(ref.maxpool2d_backward(upstream.reshape(out.shape), cache), groups, upstream, "pool")


def test_gradient_outside_the_maxima_fails() -> None:
    x, groups, upstream = tied_case()
    dx = ref.maxpool2d_spread_backward(upstream.reshape(2, 2, 2, 3), x.shape, 2, 2)
    with pytest.raises(CheckFailed, match="not a maximum of any window"):
        check_tied_split(dx, groups, upstream, "pool")


def test_every_tied_maximum_getting_the_whole_gradient_fails() -> None:
    x, groups, upstream = tied_case()
    dx = np.zeros(x.size)
    for members, g in zip(groups, upstream):
        dx[members] += g
    with pytest.raises(CheckFailed, match="must share it exactly"):
        check_tied_split(dx.reshape(x.shape), groups, upstream, "pool")


def test_a_split_that_is_not_convex_fails() -> None:
    x, groups, upstream = tied_case()
    dx = split(x, groups, upstream, "first").ravel()
    members, g = next((m, g) for m, g in zip(groups, upstream) if len(m) >= 2)
    dx[members[0]] += 0.5 * g  # 1.5 g and -0.5 g: the right total, not a convex combination
    dx[members[1]] -= 0.5 * g
    with pytest.raises(CheckFailed, match="between 0 and 1"):
        check_tied_split(dx.reshape(x.shape), groups, upstream, "pool")


def test_overlapping_tied_sets_are_refused() -> None:
    x = np.zeros((1, 1, 3, 3))
    with pytest.raises(ValueError, match="overlap"):
        check_tied_split(np.zeros_like(x), pool_window_ties(x, 2, 1), np.ones(4), "pool")


def test_pool_window_ties_agree_with_the_reference() -> None:
    x = np.random.default_rng(3).integers(0, 3, size=(2, 2, 7, 8)).astype(np.float64)
    for kernel, stride in ((2, 2), (3, 2), (2, 3)):
        tied = ref.maxpool2d_tied_positions(x, kernel, stride)
        groups = pool_window_ties(x, kernel, stride)
        assert len(groups) == int(np.prod(tied.shape[:4]))
        assert [len(g) for g in groups] == list(tied.reshape(len(groups), -1).sum(axis=1))


# timing -----------------------------------------------------------------------------------------------


def test_best_time_is_the_minimum_and_respects_the_budget() -> None:
    calls = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.05)

    best = best_time_s(slow, repeats=10, budget_s=0.08)
    assert len(calls) == 2  # stopped once 0.08 s were spent
    assert 0.05 <= best < 0.5


def test_verdicts_say_vectorized_or_how_much_slower() -> None:
    assert SpeedComparison(0.0012, 0.001).verdict("im2col").startswith("vectorized")
    slow = SpeedComparison(0.040, 0.001)
    assert slow.verdict("im2col").startswith("10-100x slower than the reference's im2col")
    assert SpeedComparison(0.0055, 0.001).verdict("im2col").startswith("4-10x slower")
    assert SpeedComparison(5.0, 0.001).verdict("im2col").startswith("over 1000x slower")
    assert slow.details()["ratio"] == 40.0
    # the message is a class of the ratio, so run-to-run noise does not change it
    assert SpeedComparison(0.041, 0.001).verdict("im2col") == slow.verdict("im2col")


def test_round_trip_is_subtracted_from_the_candidate() -> None:
    speed = compare_speed(lambda: time.sleep(0.03), lambda: time.sleep(0.02), round_trip=lambda: time.sleep(0.01),
                          repeats=3)
    assert speed.round_trip_s >= 0.01
    assert 0.01 <= speed.candidate_s < 0.03
    assert speed.ratio < 1.5
