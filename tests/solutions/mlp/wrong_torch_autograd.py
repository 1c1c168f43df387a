"""Known-wrong: the gradients are computed with torch autograd in a numpy-only, from-scratch exercise.
Expect: affine_backward, affine_gradcheck
"""

import numpy as np
import torch


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def affine_forward(x, w, b):
    x2d = x.reshape(x.shape[0], -1)
    out = x2d @ w + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    tx, tw, tb = _t(x, True), _t(w, True), _t(b, True)
    out = tx.reshape(x.shape[0], -1) @ tw + tb
    out.backward(_t(dout))
    return tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    tx = _t(cache, True)
    torch.relu(tx).backward(_t(dout))
    return tx.grad.numpy()


def softmax_cross_entropy(logits, y):
    tl = _t(logits, True)
    loss = torch.nn.functional.cross_entropy(tl, torch.as_tensor(y, dtype=torch.int64))
    loss.backward()
    return loss.item(), tl.grad.numpy()


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
        p = {k: _t(v, True) for k, v in self.params.items()}
        h = torch.relu(_t(X).reshape(X.shape[0], -1) @ p["W1"] + p["b1"])
        scores = h @ p["W2"] + p["b2"]
        if y is None:
            return scores.detach().numpy()
        loss = torch.nn.functional.cross_entropy(scores, torch.as_tensor(y, dtype=torch.int64))
        loss = loss + 0.5 * self.reg * ((p["W1"] ** 2).sum() + (p["W2"] ** 2).sum())
        loss.backward()
        return loss.item(), {k: v.grad.numpy() for k, v in p.items()}


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
