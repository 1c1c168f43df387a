"""Known-wrong: the kernel is flipped: this is a true convolution, the contract is cross-correlation (as PyTorch's conv2d).
Expect: conv_forward, conv_backward, train_cnn
"""

import numpy as np


def _im2col_indices(C, H, W, KH, KW, stride, pad):
    """Row indices k (channel), i (row) and j (column) of the padded input for every (window, offset)."""
    H_out = (H + 2 * pad - KH) // stride + 1
    W_out = (W + 2 * pad - KW) // stride + 1
    i0 = np.tile(np.repeat(np.arange(KH), KW), C)
    j0 = np.tile(np.arange(KW), KH * C)
    i1 = stride * np.repeat(np.arange(H_out), W_out)
    j1 = stride * np.tile(np.arange(W_out), H_out)
    i = i0.reshape(-1, 1) + i1.reshape(1, -1)
    j = j0.reshape(-1, 1) + j1.reshape(1, -1)
    k = np.repeat(np.arange(C), KH * KW).reshape(-1, 1)
    return k, i, j, H_out, W_out


def im2col(x, KH, KW, stride, pad):
    """(C*KH*KW, H_out*W_out*N) matrix of every window of the padded x."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k, i, j, H_out, W_out = _im2col_indices(C, H, W, KH, KW, stride, pad)
    cols = xp[:, k, i, j]  # (N, C*KH*KW, H_out*W_out)
    return cols.transpose(1, 2, 0).reshape(C * KH * KW, -1), H_out, W_out


def col2im(cols, x_shape, KH, KW, stride, pad):
    """Adjoint of im2col: add every column entry back to the input pixel it was read from."""
    N, C, H, W = x_shape
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    k, i, j, _, _ = _im2col_indices(C, H, W, KH, KW, stride, pad)
    cols = cols.reshape(C * KH * KW, -1, N).transpose(2, 0, 1)
    np.add.at(xp, (slice(None), k, i, j), cols)
    return xp[:, :, pad : pad + H, pad : pad + W]


def conv2d_forward(x, w, b, stride=1, pad=0):
    N = x.shape[0]
    F, C, KH, KW = w.shape
    cols, H_out, W_out = im2col(x, KH, KW, stride, pad)
    w_conv = w[:, :, ::-1, ::-1]  # convolution as in the textbook: rotate the kernel by 180 degrees
    out = w_conv.reshape(F, -1) @ cols + b.reshape(-1, 1)  # (F, H_out*W_out*N)
    out = out.reshape(F, H_out, W_out, N).transpose(3, 0, 1, 2)
    return out, (x.shape, cols, w, stride, pad)


def conv2d_backward(dout, cache):
    x_shape, cols, w, stride, pad = cache
    F, C, KH, KW = w.shape
    db = dout.sum(axis=(0, 2, 3))
    dout_mat = dout.transpose(1, 2, 3, 0).reshape(F, -1)
    w_conv = w[:, :, ::-1, ::-1]
    dw = (dout_mat @ cols.T).reshape(w.shape)[:, :, ::-1, ::-1]
    dcols = w_conv.reshape(F, -1).T @ dout_mat
    dx = col2im(dcols, x_shape, KH, KW, stride, pad)
    return dx, dw, db


def maxpool2d_forward(x, kernel=2, stride=2):
    N, C, H, W = x.shape
    # Pool every channel separately: treat (N*C) single-channel images.
    cols, H_out, W_out = im2col(x.reshape(N * C, 1, H, W), kernel, kernel, stride, 0)
    arg = np.argmax(cols, axis=0)
    out = cols[arg, np.arange(cols.shape[1])]
    out = out.reshape(H_out, W_out, N, C).transpose(2, 3, 0, 1)
    return out, (x.shape, cols.shape, arg, kernel, stride)


def maxpool2d_backward(dout, cache):
    x_shape, cols_shape, arg, kernel, stride = cache
    N, C, H, W = x_shape
    dcols = np.zeros(cols_shape)
    dcols[arg, np.arange(cols_shape[1])] = dout.transpose(2, 3, 0, 1).ravel()
    dx = col2im(dcols, (N * C, 1, H, W), kernel, kernel, stride, 0)
    return dx.reshape(x_shape)


def _forward_backward(params, X, y):
    conv, conv_cache = conv2d_forward(X, params["W1"], params["b1"], stride=1, pad=1)
    relu = np.maximum(conv, 0)
    pooled, pool_cache = maxpool2d_forward(relu, 2, 2)
    flat = pooled.reshape(len(X), -1)
    scores = flat @ params["W2"] + params["b2"]
    shifted = scores - scores.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    dscores = (probs - np.eye(10)[y]) / len(X)
    grads = {"W2": flat.T @ dscores, "b2": dscores.sum(axis=0)}
    dpool = (dscores @ params["W2"].T).reshape(pooled.shape)
    drelu = maxpool2d_backward(dpool, pool_cache)
    _, grads["W1"], grads["b1"] = conv2d_backward(drelu * (conv > 0), conv_cache)
    return grads


def train_cnn(X, y, seed):
    rng = np.random.default_rng(seed)
    params = {
        "W1": rng.normal(0, np.sqrt(2 / 9), (8, 1, 3, 3)),
        "b1": np.zeros(8),
        "W2": rng.normal(0, np.sqrt(2 / 128), (128, 10)),
        "b2": np.zeros(10),
    }
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    lr, momentum, batch = 0.05, 0.9, 50
    for epoch in range(20):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            grads = _forward_backward(params, X[idx], y[idx])
            for k in params:
                velocity[k] = momentum * velocity[k] - lr * grads[k]
                params[k] += velocity[k]
        lr *= 0.9
    return params
