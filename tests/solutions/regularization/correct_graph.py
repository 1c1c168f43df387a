"""Correct: batch-norm backward through every node of the computational graph, running statistics
replaced in the dict rather than updated in place, early stopping that keeps the whole history."""

import numpy as np


def l2_penalty(params, reg):
    weights = [k for k in params if k[:1] == "W"]
    loss = 0.5 * reg * sum(float((params[k] ** 2).sum()) for k in weights)
    grads = {k: (reg * params[k] if k in weights else np.zeros(params[k].shape)) for k in params}
    return loss, grads


def dropout_forward(x, p, train, seed):
    if train and p > 0:
        rng = np.random.default_rng(seed)
        keep = rng.binomial(1, 1.0 - p, size=x.shape).astype(bool)
        out = np.where(keep, x / (1.0 - p), 0.0)
        return out, (keep, p)
    return np.array(x, copy=True), (None, p)


def dropout_backward(dout, cache):
    keep, p = cache
    if keep is None:
        return np.array(dout, copy=True)
    return np.where(keep, dout / (1.0 - p), 0.0)


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.1)
    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D))
    running_var = bn_param.get("running_var", np.ones(D))

    if mode == "eval":
        out = (x - running_mean) / np.sqrt(running_var + eps) * gamma + beta
        bn_param["running_mean"] = running_mean
        bn_param["running_var"] = running_var
        return out, None

    # Forward as a chain of elementary nodes, each kept for the backward pass.
    mu = np.sum(x, axis=0) / N
    xmu = x - mu
    sq = xmu**2
    var = np.sum(sq, axis=0) / N
    sqrtvar = np.sqrt(var + eps)
    ivar = 1.0 / sqrtvar
    xhat = xmu * ivar
    gammax = gamma * xhat
    out = gammax + beta

    bn_param["running_mean"] = (1.0 - momentum) * running_mean + momentum * mu
    bn_param["running_var"] = (1.0 - momentum) * running_var + momentum * (np.sum(sq, axis=0) / (N - 1))
    return out, (xhat, gamma, xmu, ivar, sqrtvar, var, eps)


def batchnorm_backward(dout, cache):
    xhat, gamma, xmu, ivar, sqrtvar, var, eps = cache
    N, D = dout.shape
    dbeta = np.sum(dout, axis=0)
    dgammax = dout
    dgamma = np.sum(dgammax * xhat, axis=0)
    dxhat = dgammax * gamma
    divar = np.sum(dxhat * xmu, axis=0)
    dxmu1 = dxhat * ivar
    dsqrtvar = -1.0 / sqrtvar**2 * divar
    dvar = 0.5 / np.sqrt(var + eps) * dsqrtvar
    dsq = np.ones((N, D)) / N * dvar
    dxmu2 = 2 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -np.sum(dx1, axis=0)
    dx2 = np.ones((N, D)) / N * dmu
    dx = dx1 + dx2
    return dx, dgamma, dbeta


class EarlyStopping:
    def __init__(self, patience, min_delta=0.0, mode="min"):
        if mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.history = []
        self.improved = []
        self.best_value = None
        self.best_epoch = None

    def _gain(self, value):
        return self.best_value - value if self.mode == "min" else value - self.best_value

    def step(self, value):
        better = not self.history or self._gain(value) > self.min_delta
        self.history.append(value)
        self.improved.append(better)
        if better:
            self.best_value = value
            self.best_epoch = len(self.history) - 1
        recent = self.improved[len(self.improved) - self.patience:]
        return len(recent) == self.patience and not any(recent)
