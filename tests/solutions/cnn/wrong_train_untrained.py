"""Known-wrong: train_cnn returns its freshly initialized params: the training loop never updates them.
Expect: train_cnn
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _windows(a, kh, kw, stride):
    """(N, C, H_out, W_out, kh, kw) view of every window, one every `stride` pixels."""
    return sliding_window_view(a, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def conv2d_forward(x, w, b, stride=1, pad=0):
    KH, KW = w.shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    out = np.einsum("nchwpq,fcpq->nfhw", _windows(xp, KH, KW, stride), w) + b[:, None, None]
    return out, (xp, w, stride, pad, x.shape)


def conv2d_backward(dout, cache):
    xp, w, stride, pad, x_shape = cache
    F, C, KH, KW = w.shape
    N, _, H_out, W_out = dout.shape
    db = np.einsum("nfhw->f", dout)
    dw = np.einsum("nfhw,nchwpq->fcpq", dout, _windows(xp, KH, KW, stride))
    # dx: spread dout back onto the stride grid (dilation), pad by K-1, and correlate
    # with the kernel rotated by 180 degrees and its channel axes swapped.
    dilated = np.zeros((N, F, (H_out - 1) * stride + 1, (W_out - 1) * stride + 1))
    dilated[:, :, ::stride, ::stride] = dout
    full = np.pad(dilated, [(0, 0), (0, 0), (KH - 1, KH - 1), (KW - 1, KW - 1)])
    w_rot = w[:, :, ::-1, ::-1]
    touched = np.einsum("nfhwpq,fcpq->nchw", _windows(full, KH, KW, 1), w_rot)
    # Rows and columns past the last window (when H + 2*pad - KH is not a multiple
    # of the stride) were never read by the forward pass: their gradient is zero.
    dxp = np.zeros(xp.shape)
    dxp[:, :, : touched.shape[2], : touched.shape[3]] = touched
    H, W = x_shape[2:]
    return dxp[:, :, pad : pad + H, pad : pad + W], dw, db


def maxpool2d_forward(x, kernel=2, stride=2):
    win = _windows(x, kernel, kernel, stride)
    out = win.max(axis=(4, 5))
    return out, (x, kernel, stride)


def maxpool2d_backward(dout, cache):
    x, kernel, stride = cache
    win = _windows(x, kernel, kernel, stride)
    is_max = win == win.max(axis=(4, 5), keepdims=True)
    # Tied maxima share their window's gradient equally (a valid subgradient).
    share = is_max / is_max.sum(axis=(4, 5), keepdims=True) * dout[..., None, None]
    dx = np.zeros(x.shape)
    H_out, W_out = dout.shape[2:]
    for p in range(kernel):
        for q in range(kernel):
            dx[:, :, p : p + stride * H_out : stride, q : q + stride * W_out : stride] += share[..., p, q]
    return dx


def _grads(params, X, y):
    z, cz = conv2d_forward(X, params["W1"], params["b1"], 1, 1)
    a = np.maximum(z, 0)
    pooled, cp = maxpool2d_forward(a, 2, 2)
    flat = pooled.reshape(X.shape[0], -1)
    logits = flat @ params["W2"] + params["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    dlogits = p / len(y)
    dpooled = (dlogits @ params["W2"].T).reshape(pooled.shape)
    dz = maxpool2d_backward(dpooled, cp) * (z > 0)
    _, dW1, db1 = conv2d_backward(dz, cz)
    return {"W1": dW1, "b1": db1, "W2": flat.T @ dlogits, "b2": dlogits.sum(axis=0)}


def train_cnn(X, y, seed):
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((8, 1, 3, 3)) / 3 * np.sqrt(2), "b1": np.zeros(8),
              "W2": rng.standard_normal((128, 10)) / np.sqrt(64), "b2": np.zeros(10)}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    s = {k: np.zeros_like(v) for k, v in params.items()}
    step = 0
    for epoch in range(10):
        perm = rng.permutation(len(y))
        for i in range(0, len(y), 64):
            batch = perm[i : i + 64]
            g = _grads(params, X[batch], y[batch])
            step += 1
            for k in params:
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                s[k] = 0.999 * s[k] + 0.001 * g[k] ** 2
                param = params[k]
                param = param - 0.01 * (m[k] / (1 - 0.9**step)) / (np.sqrt(s[k] / (1 - 0.999**step)) + 1e-8)
    return params
