"""Gradients of a maximum at ties: any split of the upstream gradient among the tied maxima is correct.

A max over a group of values (a max-pool window, max over time, a maxout
unit) is not differentiable where several members share the maximum. Its
subgradients there are the convex combinations: the group's upstream gradient
g split as lambda_i * g over the tied members, lambda_i >= 0 summing to 1.
PyTorch's CPU kernel picks the first maximum, others the last, others share
equally; all are correct, so a tie is checked as a convention, never compared
with one particular choice.

Each group is given as the flat indices (into the input's gradient) of its
tied members. The groups' tied sets must be disjoint: with shared tied members
(overlapping windows tied on the same pixel) the split is no longer checkable
one group at a time, and the plan should choose inputs without that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from grader.engine.checks.compare import ATOL, RTOL
from grader.engine.plan import CheckFailed


def check_tied_split(dx: np.ndarray, tied: Sequence[np.ndarray], upstream: np.ndarray, what: str,
                     rtol: float = RTOL, atol: float = ATOL) -> None:
    """Fail unless dx is a valid split: each group's gradient shared among its tied members, zero elsewhere.

    dx: the candidate's gradient of the input (any shape; indices are into dx.ravel()).
    tied: per group, the flat indices of the members holding the group's maximum.
    upstream: per group, the upstream gradient of its maximum (same length as tied).
    """
    if len(tied) != len(upstream):
        raise ValueError(f"{len(tied)} groups but {len(upstream)} upstream gradients")
    flat = np.asarray(dx, dtype=np.float64).ravel()
    owner = np.full(flat.size, -1)
    for group, members in enumerate(tied):
        if np.any(owner[members] >= 0):
            raise ValueError("tied sets overlap: choose inputs whose groups share no tied member")
        owner[members] = group
    g = np.asarray(upstream, dtype=np.float64).ravel()
    tol = atol * max(1.0, float(np.max(np.abs(g), initial=0.0)))

    outside = np.flatnonzero((owner < 0) & (np.abs(flat) > tol))
    if outside.size:
        idx = np.unravel_index(int(outside[0]), dx.shape)
        raise CheckFailed(f"{what}: gradient reaches index {tuple(int(i) for i in idx)} ({flat[outside[0]]:.6g}), "
                          "which is not a maximum of any window; only the maxima receive gradient")
    for group, members in enumerate(tied):
        shares = flat[members]
        total = float(shares.sum())
        if abs(total - g[group]) > tol + rtol * abs(g[group]):
            raise CheckFailed(f"{what}: a window with {len(members)} tied maxima passes on {total:.6g} in total; "
                              f"its upstream gradient is {g[group]:.6g} (the tied maxima must share it exactly, "
                              "in any proportions)")
        # A convex combination: every share has the upstream gradient's sign and at most its size.
        fractions = shares * np.sign(g[group])
        if np.any(fractions < -tol) or np.any(fractions > abs(g[group]) + tol):
            raise CheckFailed(f"{what}: tied maxima receive {np.array2string(shares, precision=4)} of an upstream "
                              f"gradient of {g[group]:.6g}; a valid split gives each a fraction between 0 and 1")


def pool_window_ties(x: np.ndarray, kernel: int, stride: int) -> list[np.ndarray]:
    """For 2-D max-pooling of x (N, C, H, W) without padding: flat indices of each window's tied maxima.

    Windows are listed in the order of the pooled output (N, C, H', W') raveled.
    """
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - kernel) // stride, 1 + (W - kernel) // stride
    groups = []
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    rows = np.arange(i * stride, i * stride + kernel)
                    cols = np.arange(j * stride, j * stride + kernel)
                    window = x[n, c][np.ix_(rows, cols)]
                    r, q = np.nonzero(window == window.max())
                    groups.append(np.ravel_multi_index((np.full(r.size, n), np.full(r.size, c), rows[r], cols[q]),
                                                       x.shape))
    return groups
