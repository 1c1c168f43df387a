"""Known lapse: affine_forward returns its output in float32 (its math is right; the cache keeps float64).
One lapse, one charge: affine_forward loses its points for the dtype; affine_gradcheck grades values at
float32's precision and passes. TwoLayerNet.loss passes the float32 scores on: net_scores and net_grads grade
the net's own returns, so they charge the net's float32 scores and float32 bias gradients; net_loss (its value
within float64's tolerance) and net_gradcheck (values only) pass.
Expect: affine_forward, net_scores, net_grads
"""

import numpy as np


def affine_forward(x, w, b):
    x2d = x.reshape(x.shape[0], -1)
    out = x2d @ w + b
    return out.astype(np.float32), (x, w)  # float32: the lapse


def affine_backward(dout, cache):
    x, w = cache
    x2d = x.reshape(x.shape[0], -1)
    dx = (dout @ w.T).reshape(x.shape)
    dw = x2d.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    x = cache
    return dout * (x > 0)


def softmax_cross_entropy(logits, y):
    N = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(exp.sum(axis=1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(N), y])
    dlogits = probs.copy()
    dlogits[np.arange(N), y] -= 1
    dlogits /= N
    return loss, dlogits


class TwoLayerNet:
    def __init__(self, input_dim, hidden_dim, num_classes, weight_scale=1e-2, reg=0.0, seed=0):
        rng = np.random.default_rng(seed)
        self.reg = reg
        self.params = {
            "W1": weight_scale * rng.standard_normal((input_dim, hidden_dim)),
            "b1": np.zeros(hidden_dim),
            "W2": weight_scale * rng.standard_normal((hidden_dim, num_classes)),
            "b2": np.zeros(num_classes),
        }

    def loss(self, X, y=None):
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        h_pre, c1 = affine_forward(X, W1, b1)
        h, cr = relu_forward(h_pre)
        scores, c2 = affine_forward(h, W2, b2)
        if y is None:
            return scores
        loss, dscores = softmax_cross_entropy(scores, y)
        loss += 0.5 * self.reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
        grads = {}
        dh, grads["W2"], grads["b2"] = affine_backward(dscores, c2)
        dh_pre = relu_backward(dh, cr)
        _, grads["W1"], grads["b1"] = affine_backward(dh_pre, c1)
        grads["W1"] += self.reg * W1
        grads["W2"] += self.reg * W2
        return loss, grads


def sgd_step(params, grads, lr):
    for k in params:
        params[k] -= lr * grads[k]


def train_mlp(X, y, hidden_dim, num_classes, seed):
    rng = np.random.default_rng(seed)
    N, D = X.shape
    net = TwoLayerNet(D, hidden_dim, num_classes, weight_scale=np.sqrt(2.0 / D), reg=1e-4, seed=seed)
    lr, batch = 0.2, 64
    for epoch in range(60):
        order = rng.permutation(N)
        for i in range(0, N, batch):
            idx = order[i:i + batch]
            _, grads = net.loss(X[idx], y[idx])
            sgd_step(net.params, grads, lr)
        lr *= 0.97
    return net.params
