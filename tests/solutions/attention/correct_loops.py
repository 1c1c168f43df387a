"""Correct: explicit loops over every leading index and every head; a large negative fill for masked scores."""

import numpy as np

NEG = -1e30


def _allowed(mask, causal, lead, tq, tk):
    allowed = np.ones((*lead, tq, tk), dtype=bool)
    if mask is not None:
        allowed = allowed & np.broadcast_to(mask, (*lead, tq, tk))
    if causal:
        for i in range(tq):
            for j in range(tk):
                if j > i:
                    allowed[..., i, j] = False
    return allowed


def attention_forward(q, k, v, mask=None, causal=False):
    lead = q.shape[:-2]
    tq, d = q.shape[-2:]
    tk, dv = v.shape[-2:]
    allowed = _allowed(mask, causal, lead, tq, tk)
    out = np.zeros((*lead, tq, dv))
    weights = np.zeros((*lead, tq, tk))
    for idx in np.ndindex(*lead):
        for i in range(tq):
            row = np.array([np.dot(q[idx][i], k[idx][j]) / np.sqrt(d) for j in range(tk)])
            row = np.where(allowed[idx][i], row, NEG)
            row = np.exp(row - np.max(row)) * allowed[idx][i]
            w = row / np.sum(row)
            weights[idx][i] = w
            for j in range(tk):
                out[idx][i] += w[j] * v[idx][j]
    return out, {"q": q, "k": k, "v": v, "w": weights, "d": d}


def attention_backward(dout, cache):
    q, k, v, weights, d = cache["q"], cache["k"], cache["v"], cache["w"], cache["d"]
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    tq, tk = weights.shape[-2:]
    for idx in np.ndindex(*q.shape[:-2]):
        for i in range(tq):
            w = weights[idx][i]
            dw = np.array([np.dot(dout[idx][i], v[idx][j]) for j in range(tk)])
            ds = w * (dw - np.dot(w, dw))
            for j in range(tk):
                dv[idx][j] += w[j] * dout[idx][i]
                dq[idx][i] += ds[j] * k[idx][j] / np.sqrt(d)
                dk[idx][j] += ds[j] * q[idx][i] / np.sqrt(d)
    return dq, dk, dv


def mha_forward(x, params, num_heads, mask=None, causal=False):
    n, t, dm = x.shape
    dh = dm // num_heads
    q = x @ params["Wq"] + params["bq"]
    k = x @ params["Wk"] + params["bk"]
    v = x @ params["Wv"] + params["bv"]
    full_mask = None if mask is None else np.broadcast_to(mask, (n, num_heads, t, t))
    merged = np.zeros((n, t, dm))
    caches = []
    for h in range(num_heads):
        cols = slice(h * dh, (h + 1) * dh)
        head_mask = None if full_mask is None else full_mask[:, h]
        o, c = attention_forward(q[:, :, cols], k[:, :, cols], v[:, :, cols], head_mask, causal)
        merged[:, :, cols] = o
        caches.append(c)
    out = merged @ params["Wo"] + params["bo"]
    return out, {"x": x, "p": params, "h": num_heads, "merged": merged, "caches": caches}


def mha_backward(dout, cache):
    x, p, num_heads, merged = cache["x"], cache["p"], cache["h"], cache["merged"]
    n, t, dm = x.shape
    dh = dm // num_heads
    grads = {"Wo": merged.reshape(-1, dm).T @ dout.reshape(-1, dm), "bo": dout.reshape(-1, dm).sum(axis=0)}
    dmerged = dout @ p["Wo"].T
    dproj = {"q": np.zeros_like(x), "k": np.zeros_like(x), "v": np.zeros_like(x)}
    for h in range(num_heads):
        cols = slice(h * dh, (h + 1) * dh)
        dq, dk, dv = attention_backward(dmerged[:, :, cols], cache["caches"][h])
        dproj["q"][:, :, cols] = dq
        dproj["k"][:, :, cols] = dk
        dproj["v"][:, :, cols] = dv
    dx = np.zeros_like(x)
    for name in "qkv":
        g = dproj[name].reshape(-1, dm)
        grads["W" + name] = x.reshape(-1, dm).T @ g
        grads["b" + name] = g.sum(axis=0)
        dx = dx + dproj[name] @ p["W" + name].T
    return dx, grads
