"""Reference attention layers (numpy, float64), PyTorch's conventions.

Trusted grader code, never shipped into a sandbox. The four public functions
follow the `attention` contract of problems/attention/statement.md exactly;
the helpers after them give the grader what it needs beyond the contract (the
mask a call attends with, seeded inputs and masks).

Conventions: scores = q @ k^T / sqrt(d) with d the last dimension of q; a
boolean mask says True where a query may attend to a key
(torch.nn.functional.scaled_dot_product_attention's bool attn_mask);
causal=True lets query i attend to keys j <= i (torch.tril, as is_causal);
the layer computes x @ W + b (W of shape (D_in, D_out), the transpose of
torch.nn.Linear's weight).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray
PARAM_KEYS = ("Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo")


# ---------------------------------------------------------------------------
# Scaled dot-product attention


def allowed_mask(mask: Array | None, causal: bool, tq: int, tk: int) -> Array | None:
    """The boolean mask a call attends with (True: the query may attend to the key), or None for every key."""
    allowed = None if mask is None else np.asarray(mask, dtype=bool)
    if causal:
        tril = np.tril(np.ones((tq, tk), dtype=bool))
        allowed = tril if allowed is None else allowed & tril
    return allowed


def attention_forward(q: Array, k: Array, v: Array, mask: Array | None = None,
                      causal: bool = False) -> tuple[Array, Any]:
    """softmax(q @ k^T / sqrt(d), over the keys, masked) @ v; q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv)."""
    scale = 1.0 / np.sqrt(q.shape[-1])
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    allowed = allowed_mask(mask, causal, q.shape[-2], k.shape[-2])
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    shifted = scores - np.max(scores, axis=-1, keepdims=True)
    e = np.exp(shifted)
    weights = e / np.sum(e, axis=-1, keepdims=True)
    out = weights @ v
    return out, (q, k, v, weights, scale)


def attention_backward(dout: Array, cache: Any) -> tuple[Array, Array, Array]:
    """(dq, dk, dv) for the upstream gradient dout (..., Tq, dv); masked pairs carry no gradient."""
    q, k, v, weights, scale = cache
    dv = np.swapaxes(weights, -1, -2) @ dout
    dweights = dout @ np.swapaxes(v, -1, -2)
    dscores = weights * (dweights - np.sum(dweights * weights, axis=-1, keepdims=True))
    dq = (dscores @ k) * scale
    dk = (np.swapaxes(dscores, -1, -2) @ q) * scale
    return dq, dk, dv


# ---------------------------------------------------------------------------
# Multi-head self-attention


def split_heads(a: Array, num_heads: int) -> Array:
    """(N, T, D) -> (N, H, T, D / H): head h holds features h * D/H to (h + 1) * D/H."""
    n, t, d = a.shape
    return a.reshape(n, t, num_heads, d // num_heads).transpose(0, 2, 1, 3)


def merge_heads(a: Array) -> Array:
    """(N, H, T, D / H) -> (N, T, D), the inverse of split_heads."""
    n, h, t, dh = a.shape
    return a.transpose(0, 2, 1, 3).reshape(n, t, h * dh)


def mha_forward(x: Array, params: dict[str, Array], num_heads: int, mask: Array | None = None,
                causal: bool = False) -> tuple[Array, Any]:
    """Multi-head self-attention: projections x @ W + b, attention per head, heads merged, output projection."""
    q = split_heads(x @ params["Wq"] + params["bq"], num_heads)
    k = split_heads(x @ params["Wk"] + params["bk"], num_heads)
    v = split_heads(x @ params["Wv"] + params["bv"], num_heads)
    heads, attention_cache = attention_forward(q, k, v, mask, causal)
    merged = merge_heads(heads)
    out = merged @ params["Wo"] + params["bo"]
    return out, (x, params, num_heads, merged, attention_cache)


def mha_backward(dout: Array, cache: Any) -> tuple[Array, dict[str, Array]]:
    """(dx, grads) for the upstream gradient dout (N, T, D); grads has a key per param."""
    x, params, num_heads, merged, attention_cache = cache
    grads: dict[str, Array] = {}
    grads["Wo"] = np.einsum("ntd,nte->de", merged, dout)
    grads["bo"] = np.sum(dout, axis=(0, 1))
    dheads = split_heads(dout @ params["Wo"].T, num_heads)
    dq, dk, dv = attention_backward(dheads, attention_cache)
    dx = np.zeros_like(x)
    for name, d in (("q", dq), ("k", dk), ("v", dv)):
        dproj = merge_heads(d)
        grads["W" + name] = np.einsum("ntd,nte->de", x, dproj)
        grads["b" + name] = np.sum(dproj, axis=(0, 1))
        dx += dproj @ params["W" + name].T
    return dx, {key: grads[key] for key in PARAM_KEYS}


# ---------------------------------------------------------------------------
# Grader helpers (not part of the contract)


def mha_params(seed: int, d_model: int, scale: float = 0.5) -> dict[str, Array]:
    """Seeded Gaussian params (weights scaled, non-zero biases), keyed as the contract's."""
    rng = np.random.default_rng(seed)
    params = {}
    for key in PARAM_KEYS:
        shape = (d_model, d_model) if key.startswith("W") else (d_model,)
        params[key] = (scale if key.startswith("W") else 0.3) * rng.standard_normal(shape)
    return params


def padding_mask(lengths: Array | list[int], t: int) -> Array:
    """(N, T) True for the first lengths[n] positions of each sequence (keys past a length are padding)."""
    return np.arange(t)[None, :] < np.asarray(lengths)[:, None]


def random_mask(rng: np.random.Generator, shape: tuple[int, ...], keep: float = 0.6) -> Array:
    """A boolean mask of `shape` (..., Tq, Tk) with at least one True in every row (no query left without a key)."""
    mask = rng.random(shape) < keep
    first = rng.integers(0, shape[-1], size=shape[:-1])
    np.put_along_axis(mask, first[..., None], True, axis=-1)
    return mask
