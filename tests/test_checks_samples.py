"""The shared checks on generated samples (grader/engine/checks/samples.py), on samples whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from grader.engine.checks.samples import check_mode_coverage, energy_distance, mode_coverage, scatter_figure
from grader.engine.plan import CheckFailed
from sandbox.builtins.gan import Ring

RING = Ring()


def test_exact_samples_cover_every_mode() -> None:
    c = mode_coverage(RING.sample(4000, seed=0), RING.centers(), RING.std)
    assert c.modes_covered == 8 and c.n_modes == 8 and c.n_samples == 4000 and c.non_finite == 0
    # P(|X| < 3 sigma) for a 2-D Gaussian is 1 - exp(-4.5) = 0.989.
    assert 0.98 < c.share_near_mode < 0.995
    check_mode_coverage(c, min_modes=8, min_share=0.95, what="exact samples")


def test_samples_at_the_origin_cover_nothing_and_are_called_untrained() -> None:
    c = mode_coverage(np.zeros((500, 2)), RING.centers(), RING.std)
    assert c.modes_covered == 0 and c.share_near_mode == 0.0
    with pytest.raises(CheckFailed, match="untrained"):
        check_mode_coverage(c, min_modes=6, min_share=0.5, what="G")


def test_a_collapse_onto_one_mode_is_named() -> None:
    c = mode_coverage(np.repeat(RING.centers()[[2]], 500, axis=0), RING.centers(), RING.std)
    assert c.modes_covered == 1 and c.counts_per_mode[2] == 500 and c.share_near_mode == 1.0
    with pytest.raises(CheckFailed, match="mode collapse"):
        check_mode_coverage(c, min_modes=6, min_share=0.5, what="G")


def test_a_mode_needs_a_quarter_of_its_fair_share() -> None:
    centers = RING.centers()
    # Seven modes evenly, the eighth with a tenth of its share: seven covered.
    c = mode_coverage(np.repeat(centers, [100] * 7 + [10], axis=0), centers, RING.std)
    assert c.modes_covered == 7 and c.share_near_mode == 1.0
    # A quarter exactly (25 of 800 / 8 = 100) counts.
    c = mode_coverage(np.repeat(centers, [110] * 6 + [115, 25], axis=0), centers, RING.std)
    assert c.n_samples == 800 and c.modes_covered == 8


def test_samples_between_modes_are_not_near_any() -> None:
    centers = RING.centers()
    midpoints = (centers + np.roll(centers, 1, axis=0)) / 2
    c = mode_coverage(np.repeat(midpoints, 50, axis=0), centers, RING.std)
    assert c.share_near_mode == 0.0
    mixed = mode_coverage(np.concatenate([RING.sample(400, seed=1), np.repeat(midpoints, 75, axis=0)]),
                          centers, RING.std)
    assert mixed.modes_covered == 8 and 0.35 < mixed.share_near_mode < 0.45
    with pytest.raises(CheckFailed, match="not converged"):
        check_mode_coverage(mixed, min_modes=6, min_share=0.5, what="G")


def test_non_finite_samples_count_as_nowhere_and_fail_as_diverged() -> None:
    samples = RING.sample(100, seed=2)
    samples[:10] = np.nan
    samples[10:20] = np.inf
    c = mode_coverage(samples, RING.centers(), RING.std)
    assert c.non_finite == 20 and c.share_near_mode <= 0.8
    with pytest.raises(CheckFailed, match="diverged"):
        check_mode_coverage(c, min_modes=1, min_share=0.1, what="G")


def test_energy_distance_separates_the_ring_from_a_collapse() -> None:
    same = energy_distance(RING.sample(600, seed=0), RING.sample(600, seed=1))
    collapsed = energy_distance(np.repeat(RING.centers()[[0]], 600, axis=0), RING.sample(600, seed=1))
    assert abs(same) < 0.02 and collapsed > 1.0
    x = np.random.default_rng(0).standard_normal((50, 2))
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)


def test_scatter_figure_thins_reproducibly_and_drops_non_finite_points() -> None:
    generated = RING.sample(2000, seed=3)
    generated[0] = np.nan
    fig = scatter_figure("samples", {"generated": generated, "real": RING.sample(100, seed=4)}, max_points=300)
    again = scatter_figure("samples", {"generated": generated, "real": RING.sample(100, seed=4)}, max_points=300)
    assert fig.kind == "scatter" and len(fig.series["generated"]) == 300 and len(fig.series["real"]) == 100
    assert fig.series == again.series
    assert all(np.isfinite(p).all() for p in fig.series["generated"])


def test_ring_sampler_is_seeded_by_its_own_generator() -> None:
    import torch

    torch.manual_seed(0)
    a = RING.sample(4000, seed=5)
    torch.manual_seed(1)
    b = RING.sample(4000, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, RING.sample(4000, seed=6))
    radius = np.linalg.norm(a, axis=1)
    # Radial spread of a 2-D Gaussian of std 0.05 around radius 2; bounds are loose on purpose.
    assert abs(radius.mean() - 2.0) < 0.01 and 0.03 < radius.std() < 0.07
