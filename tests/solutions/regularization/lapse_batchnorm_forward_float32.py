"""Known lapse: batchnorm_forward returns out in float32 in both modes (its math is right; the cache keeps float64).
One lapse, one charge: only bn_forward loses its points, for the dtype; bn_eval and bn_gradcheck grade
values at float32's precision and pass.
Expect: bn_forward
"""

import numpy as np


def l2_penalty(params, reg):
    loss = 0.0
    grads = {}
    for k, v in params.items():
        if k.startswith("W"):
            loss += 0.5 * reg * np.sum(v * v)
            grads[k] = reg * v
        else:
            grads[k] = np.zeros_like(v)
    return float(loss), grads


def dropout_forward(x, p, train, seed):
    if not train or p == 0:
        return x.copy(), None
    rng = np.random.default_rng(seed)
    mask = (rng.random(x.shape) >= p) / (1 - p)
    return x * mask, mask


def dropout_backward(dout, cache):
    mask = cache
    if mask is None:
        return dout.copy()
    return dout * mask


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.1)
    N, D = x.shape
    if bn_param.get("running_mean") is None:
        bn_param["running_mean"] = np.zeros(D)
    if bn_param.get("running_var") is None:
        bn_param["running_var"] = np.ones(D)
    running_mean = bn_param["running_mean"]
    running_var = bn_param["running_var"]

    if mode == "train":
        mu = x.mean(axis=0)
        var = x.var(axis=0)
        inv_std = 1.0 / np.sqrt(var + eps)
        x_hat = (x - mu) * inv_std
        out = gamma * x_hat + beta
        running_mean[:] = (1 - momentum) * running_mean + momentum * mu
        running_var[:] = (1 - momentum) * running_var + momentum * var * N / (N - 1)
        return out.astype(np.float32), (x_hat, gamma, inv_std)  # float32: the lapse
    x_hat = (x - running_mean) / np.sqrt(running_var + eps)
    return (gamma * x_hat + beta).astype(np.float32), None  # float32: the lapse


def batchnorm_backward(dout, cache):
    x_hat, gamma, inv_std = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout * gamma
    dx = inv_std / N * (N * dx_hat - dx_hat.sum(axis=0) - x_hat * (dx_hat * x_hat).sum(axis=0))
    return dx, dgamma, dbeta


class EarlyStopping:
    def __init__(self, patience, min_delta=0.0, mode="min"):
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best_value = None
        self.best_epoch = None
        self.epoch = -1
        self.bad_epochs = 0

    def step(self, value):
        self.epoch += 1
        if self.best_value is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.best_value - self.min_delta
        else:
            improved = value > self.best_value + self.min_delta
        if improved:
            self.best_value = value
            self.best_epoch = self.epoch
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience
