"""The equivalence probe of `attention` (see grader/mutation/probes.py for what a probe is).

Every contract function on fixed seeded inputs: scaled dot-product attention
on 3- and 4-dim inputs with Tq != Tk and d != dv, without a mask, with a
padding mask, a mask per query and per example, a shared (Tq, Tk) mask, causal
alone and with a mask, scores of 1e4 with and without a mask; the multi-head
layer with one to four heads, with padding, per-head and causal masks and
with scores past 1e4. Each forward is followed by its backward on the
forward's own cache.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from grader.mutation.probes import _layer, _rng, _snapshot


def _attention_inputs(r: np.random.Generator, lead: tuple[int, ...], tq: int, tk: int, d: int,
                      dv: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (r.standard_normal((*lead, tq, d)), r.standard_normal((*lead, tk, d)), r.standard_normal((*lead, tk, dv)),
            r.standard_normal((*lead, tq, dv)))


def _mask(r: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A bool mask with at least one True in every row."""
    mask = r.random(shape) < 0.6
    first = r.integers(0, shape[-1], size=shape[:-1])
    np.put_along_axis(mask, first[..., None], True, axis=-1)
    return mask


def _params(r: np.random.Generator, d: int, scale: float = 0.5) -> dict[str, np.ndarray]:
    params = {}
    for key in ("Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo"):
        params[key] = (scale * r.standard_normal((d, d)) if key.startswith("W") else 0.3 * r.standard_normal(d))
    return params


def probe_attention(m: ModuleType) -> list[Any]:
    out: list[Any] = []
    r = _rng(6)
    padding3 = np.arange(5)[None, None, :] < np.array([5, 2, 3])[:, None, None]  # (3, 1, 5)
    padding4 = np.arange(4)[None, None, None, :] < np.array([4, 2])[:, None, None, None]  # (2, 1, 1, 4)
    cases: list[tuple[tuple[int, ...], int, int, int, int, np.ndarray | None, bool, float]] = [
        ((2,), 3, 4, 5, 2, None, False, 1.0),
        ((2, 3), 4, 3, 2, 3, None, False, 1.0),
        ((3,), 4, 5, 3, 2, padding3, False, 1.0),
        ((2, 2), 3, 4, 2, 3, padding4, False, 1.0),
        ((2, 2), 3, 4, 3, 2, _mask(r, (2, 2, 3, 4)), False, 1.0),
        ((2, 3), 4, 4, 3, 2, _mask(r, (4, 4)), False, 1.0),
        ((2,), 4, 4, 3, 2, None, True, 1.0),
        ((2, 2), 5, 5, 2, 3, _mask(r, (2, 1, 5, 5)) | np.eye(5, dtype=bool), True, 1.0),
        ((2, 2), 4, 5, 4, 3, None, False, 1e4),
        ((2, 2), 4, 5, 4, 3, _mask(r, (4, 5)), False, 1e4),
        ((2,), 4, 4, 4, 3, None, True, 1e4),
    ]
    for lead, tq, tk, d, dv, mask, causal, largest in cases:
        q, k, v, dout = _attention_inputs(r, lead, tq, tk, d, dv)
        if largest > 1:
            q = q * (largest / np.max(np.abs(q @ np.swapaxes(k, -1, -2) / np.sqrt(d))))
        _layer(out, m.attention_forward, m.attention_backward, (q, k, v), dout, mask=mask, causal=causal)
    # Called without the keyword arguments: their defaults are part of the contract.
    q, k, v, dout = _attention_inputs(r, (2,), 3, 4, 2, 3)
    _layer(out, m.attention_forward, m.attention_backward, (q, k, v), dout)
    layer_cases: list[tuple[int, int, int, int, np.ndarray | None, bool, float]] = [
        (2, 3, 6, 2, None, False, 1.0),
        (3, 4, 6, 3, None, False, 1.0),
        (2, 4, 8, 4, padding4, False, 1.0),
        (2, 4, 6, 1, None, True, 1.0),
        (3, 3, 4, 2, _mask(r, (3, 2, 3, 3)) | np.eye(3, dtype=bool), True, 1.0),
        (2, 4, 4, 2, _mask(r, (4, 4)), False, 1.0),
        (2, 4, 4, 2, None, True, 30.0),
    ]
    for n, t, d, heads, mask, causal, scale in layer_cases:
        x, params, dout = r.standard_normal((n, t, d)), _params(r, d), r.standard_normal((n, t, d))
        if scale > 1:
            x = 10.0 * x
            params["Wq"], params["Wk"] = scale * params["Wq"], scale * params["Wk"]
        _layer(out, m.mha_forward, m.mha_backward, (x, params, heads), dout, mask=mask, causal=causal)
    x, params, dout = r.standard_normal((2, 3, 4)), _params(r, 4), r.standard_normal((2, 3, 4))
    _layer(out, m.mha_forward, m.mha_backward, (x, params, 2), dout)
    out.append(_snapshot(params))
    return out
