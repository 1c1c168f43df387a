"""Correct: explicit loops over keys and features, dropout backward that regenerates the mask from
the seed, early stopping that compares signed gains."""

import numpy as np


def l2_penalty(params, reg):
    loss = 0.0
    grads = {}
    for name in params:
        w = params[name]
        g = np.zeros_like(w)
        if name.startswith("W"):
            flat = w.ravel()
            total = 0.0
            for i in range(flat.size):
                total += flat[i] * flat[i]
            loss += 0.5 * reg * total
            g = reg * w
        grads[name] = g
    return loss, grads


def _keep_mask(shape, p, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size=shape) >= p


def dropout_forward(x, p, train, seed):
    active = bool(train) and p > 0
    out = x.copy()
    if active:
        keep = _keep_mask(x.shape, p, seed)
        out[~keep] = 0.0
        out[keep] /= 1.0 - p
    # The same seed gives the same mask, so the backward can draw it again.
    return out, (active, p, seed, x.shape)


def dropout_backward(dout, cache):
    active, p, seed, shape = cache
    dx = dout.copy()
    if active:
        keep = _keep_mask(shape, p, seed)
        dx[~keep] = 0.0
        dx[keep] /= 1.0 - p
    return dx


def batchnorm_forward(x, gamma, beta, bn_param):
    N, D = x.shape
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.1)
    if "running_mean" not in bn_param:
        bn_param["running_mean"] = np.zeros(D)
    if "running_var" not in bn_param:
        bn_param["running_var"] = np.ones(D)
    rm = bn_param["running_mean"]
    rv = bn_param["running_var"]

    out = np.empty((N, D))
    if mode == "eval":
        for j in range(D):
            out[:, j] = gamma[j] * (x[:, j] - rm[j]) / np.sqrt(rv[j] + eps) + beta[j]
        return out, None

    x_hat = np.empty((N, D))
    std = np.empty(D)
    for j in range(D):
        col = x[:, j]
        m = col.sum() / N
        v = ((col - m) ** 2).sum() / N
        std[j] = np.sqrt(v + eps)
        x_hat[:, j] = (col - m) / std[j]
        out[:, j] = gamma[j] * x_hat[:, j] + beta[j]
        rm[j] = (1 - momentum) * rm[j] + momentum * m
        rv[j] = (1 - momentum) * rv[j] + momentum * v * N / (N - 1)
    return out, (x_hat, gamma, std)


def batchnorm_backward(dout, cache):
    x_hat, gamma, std = cache
    N, D = dout.shape
    dx = np.empty((N, D))
    dgamma = np.empty(D)
    dbeta = np.empty(D)
    for j in range(D):
        g = dout[:, j]
        dbeta[j] = g.sum()
        dgamma[j] = (g * x_hat[:, j]).sum()
        dxh = g * gamma[j]
        dx[:, j] = (dxh - dxh.mean() - x_hat[:, j] * (dxh * x_hat[:, j]).mean()) / std[j]
    return dx, dgamma, dbeta


class EarlyStopping:
    def __init__(self, patience, min_delta=0.0, mode="min"):
        self.patience = patience
        self.min_delta = min_delta
        self.sign = 1.0 if mode == "max" else -1.0
        self.best_value = None
        self.best_epoch = None
        self.epochs = 0
        self.wait = 0

    def step(self, value):
        epoch = self.epochs
        self.epochs += 1
        if self.best_value is None or self.sign * (value - self.best_value) > self.min_delta:
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
            return self.wait >= self.patience
        self.wait += 1
        return self.wait >= self.patience
