"""einsum and log-sum-exp, an sgd_step that replaces dict entries, momentum in training."""

import numpy as np

KEYS = ("W1", "b1", "W2", "b2")


def affine_forward(x, w, b):
    flat = np.reshape(x, (len(x), w.shape[0]))
    return np.einsum("nd,dm->nm", flat, w) + b[None, :], {"flat": flat, "w": w, "shape": x.shape}


def affine_backward(dout, cache):
    dx = np.einsum("nm,dm->nd", dout, cache["w"]).reshape(cache["shape"])
    dw = np.einsum("nd,nm->dm", cache["flat"], dout)
    db = np.einsum("nm->m", dout)
    return dx, dw, db


def relu_forward(x):
    mask = x > 0
    return np.where(mask, x, 0.0), mask


def relu_backward(dout, cache):
    return np.where(cache, dout, 0.0)


def logsumexp(z):
    m = np.max(z, axis=1)
    return m + np.log(np.sum(np.exp(z - m[:, None]), axis=1))


def softmax_cross_entropy(logits, y):
    N, C = logits.shape
    lse = logsumexp(logits)
    onehot = np.eye(C)[y]
    loss = float(np.mean(lse - np.sum(onehot * logits, axis=1)))
    probs = np.exp(logits - lse[:, None])
    return loss, (probs - onehot) / N


class TwoLayerNet:
    def __init__(self, input_dim, hidden_dim, num_classes, weight_scale=1e-2, reg=0.0, seed=0):
        rng = np.random.default_rng(seed)
        W1 = rng.standard_normal((input_dim, hidden_dim)) * weight_scale
        W2 = rng.standard_normal((hidden_dim, num_classes)) * weight_scale
        self.params = dict(W1=W1, b1=np.zeros(hidden_dim), W2=W2, b2=np.zeros(num_classes))
        self.reg = reg

    def loss(self, X, y=None):
        p = self.params
        z1, c1 = affine_forward(X, p["W1"], p["b1"])
        a1, cr = relu_forward(z1)
        scores, c2 = affine_forward(a1, p["W2"], p["b2"])
        if y is None:
            return scores
        data_loss, dscores = softmax_cross_entropy(scores, y)
        penalty = 0.5 * self.reg * sum(np.vdot(p[k], p[k]) for k in ("W1", "W2"))
        da1, dW2, db2 = affine_backward(dscores, c2)
        _, dW1, db1 = affine_backward(relu_backward(da1, cr), c1)
        grads = {"W1": dW1 + self.reg * p["W1"], "b1": db1, "W2": dW2 + self.reg * p["W2"], "b2": db2}
        return data_loss + penalty, grads


def sgd_step(params, grads, lr):
    # Rebinds each entry to a new array: the dict is updated, the old arrays are not.
    for k in list(params):
        params[k] = params[k] - lr * grads[k]


def train_mlp(X, y, hidden_dim, num_classes, seed):
    rng = np.random.default_rng(seed)
    N, D = X.shape
    net = TwoLayerNet(D, hidden_dim, num_classes, weight_scale=np.sqrt(1.0 / D), reg=5e-4, seed=seed)
    velocity = {k: np.zeros_like(v) for k, v in net.params.items()}
    lr, mu, batch = 0.05, 0.9, 128
    for epoch in range(50):
        perm = rng.permutation(N)
        for lo in range(0, N, batch):
            idx = perm[lo:lo + batch]
            _, grads = net.loss(X[idx], y[idx])
            for k in KEYS:
                velocity[k] = mu * velocity[k] + grads[k]
            sgd_step(net.params, velocity, lr)
        if epoch in (30, 42):
            lr *= 0.3
    return net.params
