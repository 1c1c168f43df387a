"""Every answer is zeros of the right shape; nothing is computed. Scored 14/100 before: gradient checks
compared zero finite differences with zero gradients."""

import numpy as np


def affine_forward(x, w, b):
    return np.zeros((x.shape[0], w.shape[1])), (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return np.zeros_like(x), np.zeros_like(w), np.zeros(w.shape[1])


def relu_forward(x):
    return np.zeros_like(x), x


def relu_backward(dout, cache):
    return np.zeros_like(cache)


def softmax_cross_entropy(logits, y):
    return 0.0, np.zeros_like(logits)


class TwoLayerNet:
    def __init__(self, input_dim, hidden_dim, num_classes, weight_scale=1e-2, reg=0.0, seed=0):
        self.params = {"W1": np.zeros((input_dim, hidden_dim)), "b1": np.zeros(hidden_dim),
                       "W2": np.zeros((hidden_dim, num_classes)), "b2": np.zeros(num_classes)}

    def loss(self, X, y=None):
        scores = np.zeros((X.shape[0], self.params["b2"].shape[0]))
        if y is None:
            return scores
        return 0.0, {k: np.zeros_like(v) for k, v in self.params.items()}


def sgd_step(params, grads, lr):
    pass


def train_mlp(X, y, hidden_dim, num_classes, seed):
    D = int(np.prod(X.shape[1:]))
    return {"W1": np.zeros((D, hidden_dim)), "b1": np.zeros(hidden_dim),
            "W2": np.zeros((hidden_dim, num_classes)), "b2": np.zeros(num_classes)}
