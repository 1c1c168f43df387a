"""Explicit Python loops over the batch (and classes), one example at a time."""

import math

import numpy as np


def affine_forward(x, w, b):
    N = x.shape[0]
    D, M = w.shape
    out = np.zeros((N, M))
    for n in range(N):
        row = x[n].reshape(D)
        out[n] = row.dot(w) + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache):
    x, w, b = cache
    N = x.shape[0]
    D, M = w.shape
    dx = np.zeros(x.shape)
    dw = np.zeros((D, M))
    db = np.zeros(M)
    for n in range(N):
        row = x[n].reshape(D)
        dx[n] = w.dot(dout[n]).reshape(x.shape[1:])
        dw += np.outer(row, dout[n])
        db += dout[n]
    return dx, dw, db


def relu_forward(x):
    out = x.copy()
    out[out < 0] = 0.0
    return out, x


def relu_backward(dout, cache):
    x = cache
    dx = dout.copy()
    dx[x <= 0] = 0.0
    return dx


def softmax_cross_entropy(logits, y):
    N, C = logits.shape
    loss = 0.0
    dlogits = np.zeros((N, C))
    for n in range(N):
        m = max(logits[n])
        total = 0.0
        for c in range(C):
            total += math.exp(logits[n, c] - m)
        log_z = m + math.log(total)
        loss += log_z - logits[n, y[n]]
        for c in range(C):
            p = math.exp(logits[n, c] - log_z)
            dlogits[n, c] = (p - (1.0 if c == y[n] else 0.0)) / N
    return loss / N, dlogits


class TwoLayerNet:
    def __init__(self, input_dim, hidden_dim, num_classes, weight_scale=1e-2, reg=0.0, seed=0):
        rng = np.random.default_rng(seed)
        self.reg = reg
        self.params = {}
        self.params["W1"] = rng.normal(0.0, weight_scale, size=(input_dim, hidden_dim))
        self.params["b1"] = np.zeros(hidden_dim)
        self.params["W2"] = rng.normal(0.0, weight_scale, size=(hidden_dim, num_classes))
        self.params["b2"] = np.zeros(num_classes)

    def loss(self, X, y=None):
        a1, cache1 = affine_forward(X, self.params["W1"], self.params["b1"])
        h1, cache_r = relu_forward(a1)
        scores, cache2 = affine_forward(h1, self.params["W2"], self.params["b2"])
        if y is None:
            return scores
        data_loss, dscores = softmax_cross_entropy(scores, y)
        reg_loss = 0.0
        for name in ("W1", "W2"):
            reg_loss += 0.5 * self.reg * np.sum(self.params[name] ** 2)
        grads = {}
        dh1, dW2, db2 = affine_backward(dscores, cache2)
        da1 = relu_backward(dh1, cache_r)
        _, dW1, db1 = affine_backward(da1, cache1)
        grads["W1"] = dW1 + self.reg * self.params["W1"]
        grads["b1"] = db1
        grads["W2"] = dW2 + self.reg * self.params["W2"]
        grads["b2"] = db2
        return data_loss + reg_loss, grads


def sgd_step(params, grads, lr):
    for name, value in params.items():
        value -= lr * grads[name]


def train_mlp(X, y, hidden_dim, num_classes, seed):
    rng = np.random.default_rng(seed)
    N, D = X.shape
    net = TwoLayerNet(D, hidden_dim, num_classes, weight_scale=0.1, reg=1e-3, seed=seed)
    batch = 100
    for epoch in range(40):
        lr = 0.3 if epoch < 25 else 0.1
        order = rng.permutation(N)
        for start in range(0, N, batch):
            idx = order[start:start + batch]
            _, grads = net.loss(X[idx], y[idx])
            sgd_step(net.params, grads, lr)
    return net.params
