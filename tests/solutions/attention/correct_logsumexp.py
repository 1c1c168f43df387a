"""Correct: a log-sum-exp softmax; the backward recomputes the weights from the cached inputs; the layer
projects q, k, v with one concatenated (D, 3D) matrix and splits heads with reshape(N, T, 3, H, D/H)."""

import numpy as np


def _weights(q, k, mask, causal):
    scale = 1.0 / np.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape[-2:], dtype=bool)
    if causal:
        keep = np.tril(keep)
    if mask is not None:
        keep = keep & mask
    s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(s - m), axis=-1, keepdims=True))
    return np.exp(s - lse), scale


def attention_forward(q, k, v, mask=None, causal=False):
    w, _ = _weights(q, k, mask, causal)
    return np.matmul(w, v), (q, k, v, mask, causal)


def attention_backward(dout, cache):
    q, k, v, mask, causal = cache
    w, scale = _weights(q, k, mask, causal)
    dv = np.matmul(np.swapaxes(w, -1, -2), dout)
    dw = np.matmul(dout, np.swapaxes(v, -1, -2))
    ds = w * dw - w * np.sum(w * dw, axis=-1, keepdims=True)
    return np.matmul(ds, k) * scale, np.matmul(np.swapaxes(ds, -1, -2), q) * scale, dv


def mha_forward(x, params, num_heads, mask=None, causal=False):
    n, t, d = x.shape
    w_qkv = np.concatenate([params["Wq"], params["Wk"], params["Wv"]], axis=1)
    b_qkv = np.concatenate([params["bq"], params["bk"], params["bv"]])
    qkv = (x @ w_qkv + b_qkv).reshape(n, t, 3, num_heads, d // num_heads).transpose(2, 0, 3, 1, 4)
    o, attn = attention_forward(qkv[0], qkv[1], qkv[2], mask, causal)
    merged = np.swapaxes(o, 1, 2).reshape(n, t, d)
    return merged @ params["Wo"] + params["bo"], (x, w_qkv, params["Wo"], merged, attn, num_heads)


def mha_backward(dout, cache):
    x, w_qkv, wo, merged, attn, num_heads = cache
    n, t, d = x.shape
    flat = dout.reshape(n * t, d)
    dmerged = (dout @ wo.T).reshape(n, t, num_heads, d // num_heads).transpose(0, 2, 1, 3)
    dq, dk, dv = attention_backward(dmerged, attn)
    dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(n * t, 3 * d)
    dw = x.reshape(n * t, d).T @ dqkv
    db = dqkv.sum(axis=0)
    grads = {"Wo": merged.reshape(n * t, d).T @ flat, "bo": flat.sum(axis=0)}
    for i, name in enumerate("qkv"):
        grads["W" + name] = dw[:, i * d:(i + 1) * d]
        grads["b" + name] = db[i * d:(i + 1) * d]
    dx = (dqkv @ w_qkv.T).reshape(n, t, d)
    return dx, grads
