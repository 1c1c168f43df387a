"""Samples of a trained generative model against a known target: mode coverage, closeness, a scatter plot.

A generative exercise (a GAN, a VAE, a diffusion model on toy data) is judged
by what its trained model produces, measured by the grader on samples it draws
itself. For a target made of well-separated Gaussian modes the telling numbers
are how many modes get a fair part of the samples (mode collapse shows as few)
and how many samples land near any mode at all (an untrained or diverged model
shows as few); an energy distance summarizes both in one number for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grader.engine.plan import CheckFailed
from grader.engine.report import Figure

Array = np.ndarray


@dataclass(frozen=True)
class ModeCoverage:
    """How samples sit on the modes of a mixture of isotropic Gaussians."""

    modes_covered: int
    n_modes: int
    share_near_mode: float
    counts_per_mode: tuple[int, ...]
    n_samples: int
    non_finite: int


def mode_coverage(samples: Array, centers: Array, std: float, near_stds: float = 3.0,
                  min_mode_share: float = 0.25) -> ModeCoverage:
    """Assign samples within near_stds*std of a centre to it; a mode counts with min_mode_share of its fair share."""
    samples = np.asarray(samples, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    n, k = samples.shape[0], centers.shape[0]
    finite = np.all(np.isfinite(samples), axis=1)
    dist = np.full((n, k), np.inf)
    dist[finite] = np.linalg.norm(samples[finite, None, :] - centers[None, :, :], axis=2)
    nearest = dist.argmin(axis=1)
    near = dist.min(axis=1) < near_stds * std
    counts = np.bincount(nearest[near], minlength=k)
    return ModeCoverage(
        modes_covered=int(np.sum(counts >= min_mode_share * n / k)),
        n_modes=k,
        share_near_mode=float(near.mean()) if n else 0.0,
        counts_per_mode=tuple(int(c) for c in counts),
        n_samples=n,
        non_finite=int(n - finite.sum()),
    )


def energy_distance(x: Array, y: Array) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| between two samples (0 iff the same distribution)."""

    def mean_dist(a: Array, b: Array) -> float:
        return float(np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2).mean())

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return 2.0 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def check_mode_coverage(coverage: ModeCoverage, min_modes: int, min_share: float, what: str) -> None:
    """Fail unless at least min_modes modes are covered and min_share of the samples are near a mode, saying why."""
    c = coverage
    summary = (f"{what}: {c.modes_covered} of {c.n_modes} modes covered (pass mark {min_modes}), "
               f"{c.share_near_mode:.0%} of samples near a mode (pass mark {min_share:.0%})")
    if c.non_finite:
        raise CheckFailed(f"{summary}; {c.non_finite} of {c.n_samples} samples are not finite: training diverged")
    if c.modes_covered >= min_modes and c.share_near_mode >= min_share:
        return
    if c.share_near_mode < 0.05:
        reason = "almost no sample lands on the target: the model looks untrained or trained towards the wrong target"
    elif c.modes_covered <= max(1, c.n_modes // 4):
        reason = "the samples that land on the target crowd into few modes: mode collapse"
    elif c.share_near_mode < min_share:
        reason = "many samples fall between or away from the modes: training has not converged"
    else:
        reason = "some modes get (almost) no samples: partial mode collapse"
    raise CheckFailed(f"{summary}; {reason}")


def scatter_figure(title: str, series: dict[str, Array], max_points: int = 500, seed: int = 0) -> Figure:
    """A scatter plot of 2-D samples, each series thinned to max_points (chosen at random, reproducibly)."""
    rng = np.random.default_rng(seed)
    points: dict[str, list[list[float]]] = {}
    for name, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[np.all(np.isfinite(values), axis=1)]
        if len(values) > max_points:
            values = values[np.sort(rng.choice(len(values), max_points, replace=False))]
        points[name] = [[round(float(a), 4), round(float(b), 4)] for a, b in values[:, :2]]
    return Figure(kind="scatter", title=title, x_label="x1", y_label="x2", series=points)
