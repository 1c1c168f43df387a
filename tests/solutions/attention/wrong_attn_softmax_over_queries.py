"""Known-wrong: the softmax normalizes over the queries (axis -2) instead of the keys.
Expect: attn_forward, mha_forward
"""

import numpy as np


def attention_forward(q, k, v, mask=None, causal=False):
    d = q.shape[-1]
    scale = 1.0 / np.sqrt(d)
    scores = np.einsum("...qd,...kd->...qk", q, k) * scale
    allowed = None
    if mask is not None:
        allowed = np.asarray(mask, dtype=bool)
    if causal:
        tq, tk = q.shape[-2], k.shape[-2]
        tri = np.arange(tk)[None, :] <= np.arange(tq)[:, None]
        allowed = tri if allowed is None else (allowed & tri)
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    scores = scores - scores.max(axis=-2, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-2, keepdims=True)
    out = np.einsum("...qk,...kv->...qv", weights, v)
    return out, (q, k, v, weights, scale)


def attention_backward(dout, cache):
    q, k, v, weights, scale = cache
    dv = np.einsum("...qk,...qv->...kv", weights, dout)
    dweights = np.einsum("...qv,...kv->...qk", dout, v)
    dscores = weights * (dweights - np.sum(dweights * weights, axis=-1, keepdims=True))
    dq = np.einsum("...qk,...kd->...qd", dscores, k) * scale
    dk = np.einsum("...qk,...qd->...kd", dscores, q) * scale
    return dq, dk, dv


def _split(a, h):
    n, t, d = a.shape
    return a.reshape(n, t, h, d // h).transpose(0, 2, 1, 3)


def _merge(a):
    n, h, t, dh = a.shape
    return a.transpose(0, 2, 1, 3).reshape(n, t, h * dh)


def mha_forward(x, params, num_heads, mask=None, causal=False):
    q = _split(x @ params["Wq"] + params["bq"], num_heads)
    k = _split(x @ params["Wk"] + params["bk"], num_heads)
    v = _split(x @ params["Wv"] + params["bv"], num_heads)
    heads, attn_cache = attention_forward(q, k, v, mask, causal)
    merged = _merge(heads)
    out = merged @ params["Wo"] + params["bo"]
    return out, (x, params, num_heads, merged, attn_cache)


def mha_backward(dout, cache):
    x, params, num_heads, merged, attn_cache = cache
    grads = {
        "Wo": np.einsum("ntd,nte->de", merged, dout),
        "bo": dout.sum(axis=(0, 1)),
    }
    dheads = _split(dout @ params["Wo"].T, num_heads)
    dq, dk, dv = attention_backward(dheads, attn_cache)
    dx = np.zeros_like(x)
    for name, g in (("q", dq), ("k", dk), ("v", dv)):
        g = _merge(g)
        grads["W" + name] = np.einsum("ntd,nte->de", x, g)
        grads["b" + name] = g.sum(axis=(0, 1))
        dx += g @ params["W" + name].T
    return dx, grads
