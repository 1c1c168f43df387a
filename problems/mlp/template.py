"""A two-layer neural network from scratch, in numpy only.

Every array is float64 unless stated. Shapes: N batch size, D input size
(the product of all of x's dimensions after the first), M output size of an
affine layer, H hidden size, C number of classes. Each `*_forward` returns its
output and a `cache` that only your own `*_backward` ever reads; each
`*_backward` returns the gradients of the loss with respect to the forward's
inputs, in the order given. Losses are means over the batch.
Do not modify the arrays you are given (except the params in `sgd_step`).
"""

from typing import Any

import numpy as np


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
    """Affine (fully connected) layer: out = x.reshape(N, D) @ w + b.

    x: (N, d1, ..., dk) with D = d1 * ... * dk, w: (D, M), b: (M,).
    Returns (out, cache) with out of shape (N, M).
    """
    raise NotImplementedError("affine_forward: flatten x to (N, D), compute out and a cache for the backward pass")


def affine_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of affine_forward.

    dout: (N, M), the upstream gradient of out.
    Returns (dx, dw, db): dx with x's original shape (N, d1, ..., dk), dw (D, M), db (M,).
    """
    raise NotImplementedError("affine_backward: return (dx, dw, db)")


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    """Elementwise ReLU: out = max(x, 0), any shape. Returns (out, cache)."""
    raise NotImplementedError("relu_forward: compute out and a cache for the backward pass")


def relu_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Backward pass of relu_forward: dx with dout's shape (at exactly x == 0, 0 or 1 are both fine)."""
    raise NotImplementedError("relu_backward: return dx")


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Softmax followed by cross-entropy, averaged over the batch.

    logits: (N, C), y: (N,) integer labels in 0..C-1.
    Returns (loss, dlogits): loss a float, the mean over the N examples;
    dlogits (N, C), its gradient with respect to logits.
    Must stay finite for logits of magnitude 1e4.
    """
    raise NotImplementedError("softmax_cross_entropy: return (loss, dlogits)")


class TwoLayerNet:
    """affine - ReLU - affine classifier: scores = relu(X @ W1 + b1) @ W2 + b2."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        num_classes: int,
        weight_scale: float = 1e-2,
        reg: float = 0.0,
        seed: int = 0,
    ) -> None:
        """Create self.params: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,).

        Weights are drawn from a Gaussian of standard deviation weight_scale with
        np.random.default_rng(seed); biases start at zero. reg is the L2 strength.
        """
        raise NotImplementedError("TwoLayerNet.__init__: fill self.params with W1, b1, W2, b2")

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        """Scores or loss and gradients for a batch X (N, D).

        When y is None, return the scores (N, C). Otherwise return (loss, grads):
        loss = mean softmax cross-entropy + 0.5 * reg * (sum(W1**2) + sum(W2**2)),
        grads a dict with the same keys and shapes as self.params.
        """
        raise NotImplementedError("TwoLayerNet.loss: return scores, or (loss, grads) when y is given")


def sgd_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
    """One step of plain gradient descent on every entry of params, in place; returns None."""
    raise NotImplementedError("sgd_step: update params with lr and grads")


def train_mlp(X: np.ndarray, y: np.ndarray, hidden_dim: int, num_classes: int, seed: int) -> dict[str, np.ndarray]:
    """Train a TwoLayerNet on (X, y) and return its params dict.

    X: (N, D) float64, y: (N,) integer labels in 0..num_classes-1.
    Choose your own learning rate, number of epochs, batch size and reg.
    Use np.random.default_rng(seed) for every random choice.
    Returns {"W1": (D, hidden_dim), "b1": (hidden_dim,), "W2": (hidden_dim, num_classes), "b2": (num_classes,)}.
    """
    raise NotImplementedError("train_mlp: train a TwoLayerNet and return its params")
