"""grader/engine/checks/variants.py: known mistakes are named only when they explain the wrong answer."""

from __future__ import annotations

import numpy as np
import pytest

from grader.engine.checks.variants import Variant, check_outputs, matches, matching_variant
from grader.engine.plan import CheckFailed

RIGHT = {"dx": np.array([[1.0, 2.0], [3.0, 4.0]]), "db": np.array([4.0, 6.0])}
DB_MEAN = Variant("db is averaged", {"db": RIGHT["db"] / 2})


def test_a_right_answer_passes_even_when_a_variant_coincides_with_it() -> None:
    coinciding = Variant("never shown", {"db": RIGHT["db"].copy()})
    arrays = check_outputs({k: v.copy() for k, v in RIGHT.items()}, RIGHT, [coinciding])
    assert sorted(arrays) == ["db", "dx"]


def test_the_matching_variant_is_named() -> None:
    got = {"dx": RIGHT["dx"].copy(), "db": RIGHT["db"] / 2}
    with pytest.raises(CheckFailed, match="db is averaged"):
        check_outputs(got, RIGHT, [Variant("dx is transposed", {"dx": RIGHT["dx"].T}), DB_MEAN])


def test_a_partial_variant_cannot_claim_a_difference_it_does_not_explain() -> None:
    # db is right (and equals this variant's db), dx is wrong: the generic message names dx.
    coinciding = Variant("db is averaged", {"db": RIGHT["db"]})
    got = {"dx": RIGHT["dx"] + 1.0, "db": RIGHT["db"].copy()}
    assert matching_variant(got, [coinciding], RIGHT) is None
    with pytest.raises(CheckFailed, match="dx differs from the reference"):
        check_outputs(got, RIGHT, [coinciding])


def test_lazy_variants_are_computed_only_when_needed() -> None:
    calls = []

    def expensive() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"db": RIGHT["db"] / 2}

    check_outputs({k: v.copy() for k, v in RIGHT.items()}, RIGHT, [Variant("lazy", expensive)])
    assert calls == []
    with pytest.raises(CheckFailed, match="lazy"):
        check_outputs({"dx": RIGHT["dx"], "db": RIGHT["db"] / 2}, RIGHT, [Variant("lazy", expensive)])
    assert calls == [1]


def test_shapes_and_finiteness_are_checked_first() -> None:
    with pytest.raises(CheckFailed, match="shape"):
        check_outputs({"dx": RIGHT["dx"], "db": np.ones((2, 2))}, RIGHT, [DB_MEAN])
    with pytest.raises(CheckFailed, match="non-finite"):
        check_outputs({"dx": RIGHT["dx"], "db": np.array([np.nan, 1.0])}, RIGHT, [DB_MEAN])
    with pytest.raises(CheckFailed, match="numpy array"):
        check_outputs({"dx": RIGHT["dx"]}, RIGHT)
    assert not matches({"db": np.array([np.inf, 1.0])}, {"db": RIGHT["db"]})


def test_the_hint_follows_a_generic_mismatch() -> None:
    with pytest.raises(CheckFailed, match="fix the forward first"):
        check_outputs({"dx": RIGHT["dx"] * 3, "db": RIGHT["db"]}, RIGHT, hint="fix the forward first")
