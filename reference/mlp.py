"""Reference multi-layer perceptron from scratch (numpy, float64), PyTorch's conventions.

Trusted grader code, never shipped into a sandbox. The public functions and
`TwoLayerNet` follow the `mlp` contract in PROBLEMS.md exactly; the helpers
after them give the grader what it needs beyond the contract: a pure forward
pass and accuracy on any params (to score what `train_mlp` returns on held-out
data), the L2 term on its own, and seeded input and data-set generators.

Layout: an affine layer computes out = x.reshape(N, D) @ w + b with w (D, M),
i.e. the transpose of torch.nn.Linear's weight. Losses are means over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray

# Keys of TwoLayerNet.params, in the order the contract lists them.
PARAM_KEYS = ("W1", "b1", "W2", "b2")
# Only the weights are regularized; the biases are not (the contract's L2 term).
REGULARIZED_KEYS = ("W1", "W2")

# Data limits of train_mlp from PROBLEMS.md.
MAX_TRAIN_EXAMPLES = 2000
NUM_FEATURES = 20
NUM_CLASSES = 10


# ---------------------------------------------------------------------------
# Layers


def affine_forward(x: Array, w: Array, b: Array) -> tuple[Array, Any]:
    """Affine layer: x (N, d1, ..., dk) flattened to (N, D), out = x2d @ w + b of shape (N, M)."""
    x2d = x.reshape(x.shape[0], -1)
    out = x2d @ w + b
    cache = (x2d, w, x.shape)
    return out, cache


def affine_backward(dout: Array, cache: Any) -> tuple[Array, Array, Array]:
    """Gradients (dx, dw, db) of affine_forward for upstream dout (N, M); dx has x's shape."""
    x2d, w, x_shape = cache
    dx = (dout @ w.T).reshape(x_shape)
    dw = x2d.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x: Array) -> tuple[Array, Any]:
    """Elementwise max(x, 0), any shape."""
    out = np.maximum(x, 0.0)
    return out, x


def relu_backward(dout: Array, cache: Any) -> Array:
    """Gradient of relu_forward; the subgradient at exactly 0 is taken as 0 (as PyTorch)."""
    x = cache
    return dout * (x > 0)


def log_softmax(logits: Array) -> Array:
    """Row-wise log-softmax of (N, C) logits, finite for any finite input."""
    # Subtracting the row maximum makes every exponent <= 0: no overflow at 1e4.
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: Array, y: Array) -> tuple[float, Array]:
    """Mean cross-entropy of (N, C) logits against int labels y (N,), and its gradient dlogits."""
    N = logits.shape[0]
    log_probs = log_softmax(logits)
    rows = np.arange(N)
    loss = -log_probs[rows, y].mean()
    dlogits = np.exp(log_probs)
    dlogits[rows, y] -= 1.0
    dlogits /= N
    return float(loss), dlogits


# ---------------------------------------------------------------------------
# Network


def init_params(
    input_dim: int, hidden_dim: int, num_classes: int, weight_scale: float = 1e-2, seed: int = 0
) -> dict[str, Array]:
    """Gaussian weights of standard deviation weight_scale (W1 drawn before W2) and zero biases."""
    rng = np.random.default_rng(seed)
    return {
        "W1": weight_scale * rng.standard_normal((input_dim, hidden_dim)),
        "b1": np.zeros(hidden_dim),
        "W2": weight_scale * rng.standard_normal((hidden_dim, num_classes)),
        "b2": np.zeros(num_classes),
    }


def l2_term(params: dict[str, Array], reg: float) -> float:
    """The contract's penalty 0.5 * reg * (sum(W1**2) + sum(W2**2))."""
    return 0.5 * reg * float(sum(np.sum(params[k] ** 2) for k in REGULARIZED_KEYS))


class TwoLayerNet:
    """affine - ReLU - affine classifier with an L2 penalty on W1 and W2."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        num_classes: int,
        weight_scale: float = 1e-2,
        reg: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.reg = reg
        self.params: dict[str, Array] = init_params(input_dim, hidden_dim, num_classes, weight_scale, seed)

    def loss(self, X: Array, y: Array | None = None) -> Array | tuple[float, dict[str, Array]]:
        """Scores (N, C) when y is None, else (loss, grads) with grads keyed like params."""
        p = self.params
        hidden_pre, cache1 = affine_forward(X, p["W1"], p["b1"])
        hidden, cache_relu = relu_forward(hidden_pre)
        scores, cache2 = affine_forward(hidden, p["W2"], p["b2"])
        if y is None:
            return scores

        data_loss, dscores = softmax_cross_entropy(scores, y)
        loss = data_loss + l2_term(p, self.reg)
        grads: dict[str, Array] = {}
        dhidden, grads["W2"], grads["b2"] = affine_backward(dscores, cache2)
        dhidden_pre = relu_backward(dhidden, cache_relu)
        _, grads["W1"], grads["b1"] = affine_backward(dhidden_pre, cache1)
        for k in REGULARIZED_KEYS:
            grads[k] = grads[k] + self.reg * p[k]
        return loss, grads


def sgd_step(params: dict[str, Array], grads: dict[str, Array], lr: float) -> None:
    """Plain SGD, in place: params[k] -= lr * grads[k] for every key of params."""
    for k in params:
        params[k] -= lr * grads[k]


# Training recipe of the reference: measured in tests/test_reference_mlp.py to
# reach well above the pass mark in about a second on one core.
TRAIN_EPOCHS = 60
TRAIN_BATCH = 64
TRAIN_LR = 0.2
TRAIN_LR_DECAY = 0.97  # per epoch
TRAIN_REG = 1e-4


def train_mlp(X: Array, y: Array, hidden_dim: int, num_classes: int, seed: int) -> dict[str, Array]:
    """Minibatch SGD on a TwoLayerNet (He-scaled init, decaying step); returns its params."""
    N, D = X.shape[0], int(np.prod(X.shape[1:]))
    model = TwoLayerNet(D, hidden_dim, num_classes, weight_scale=np.sqrt(2.0 / D), reg=TRAIN_REG, seed=seed)
    rng = np.random.default_rng(seed)
    lr = TRAIN_LR
    for _ in range(TRAIN_EPOCHS):
        order = rng.permutation(N)
        for start in range(0, N, TRAIN_BATCH):
            batch = order[start : start + TRAIN_BATCH]
            _, grads = model.loss(X[batch], y[batch])
            sgd_step(model.params, grads, lr)
        lr *= TRAIN_LR_DECAY
    return model.params


# ---------------------------------------------------------------------------
# Grader helpers: the grader's own forward pass, used on returned params


def check_params(params: dict[str, Array], input_dim: int, hidden_dim: int, num_classes: int) -> None:
    """Raise ValueError naming the first key that is missing, not an ndarray, misshapen or not finite."""
    expected = {
        "W1": (input_dim, hidden_dim),
        "b1": (hidden_dim,),
        "W2": (hidden_dim, num_classes),
        "b2": (num_classes,),
    }
    for k, shape in expected.items():
        if k not in params:
            raise ValueError(f"params has no key {k!r} (expected keys {', '.join(PARAM_KEYS)})")
        v = params[k]
        if type(v) is not np.ndarray:
            raise ValueError(f"params[{k!r}] is a {type(v).__name__}, expected a numpy array")
        if v.shape != shape:
            raise ValueError(f"params[{k!r}] has shape {v.shape}, expected {shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"params[{k!r}] contains NaN or inf")


def mlp_scores(params: dict[str, Array], X: Array) -> Array:
    """The grader's own forward pass: relu(X W1 + b1) W2 + b2 on (N, D) inputs, in float64."""
    X2d = np.asarray(X, dtype=np.float64).reshape(X.shape[0], -1)
    W1, b1, W2, b2 = (np.asarray(params[k], dtype=np.float64) for k in PARAM_KEYS)
    return np.maximum(X2d @ W1 + b1, 0.0) @ W2 + b2


def accuracy(params: dict[str, Array], X: Array, y: Array) -> float:
    """Fraction of rows of X whose highest score is the label in y."""
    return float(np.mean(mlp_scores(params, X).argmax(axis=1) == y))


def mean_loss(params: dict[str, Array], X: Array, y: Array) -> float:
    """Mean cross-entropy of the grader's forward pass (no L2 term)."""
    loss, _ = softmax_cross_entropy(mlp_scores(params, X), y)
    return loss


# ---------------------------------------------------------------------------
# Seeded inputs


def affine_inputs(seed: int, x_shape: tuple[int, ...], M: int) -> dict[str, Array]:
    """x of the given shape (N, d1, ..., dk), w (D, M) and b (M,), all O(1) Gaussians."""
    rng = np.random.default_rng(seed)
    D = int(np.prod(x_shape[1:]))
    return {
        "x": rng.standard_normal(x_shape),
        "w": rng.standard_normal((D, M)) / np.sqrt(D),
        "b": rng.standard_normal(M),
    }


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...], margin: float = 0.1) -> Array:
    """Gaussian values with |v| >= margin, so ReLU's kink is far from every entry."""
    v = rng.standard_normal(shape)
    return np.sign(v) * (margin + np.abs(v))


def classification_inputs(seed: int, N: int, C: int, scale: float = 1.0) -> dict[str, Array]:
    """Logits (N, C) of standard deviation `scale` and int64 labels y (N,) covering several classes."""
    rng = np.random.default_rng(seed)
    return {
        "logits": scale * rng.standard_normal((N, C)),
        "y": rng.integers(0, C, size=N).astype(np.int64),
    }


def large_logits(seed: int, N: int, C: int, magnitude: float = 1e4) -> dict[str, Array]:
    """Logits of magnitude about `magnitude` whose softmax is neither uniform nor exactly one-hot."""
    rng = np.random.default_rng(seed)
    # A large common offset per row plus O(1) differences: a naive exp overflows,
    # yet the true probabilities are all well inside (0, 1).
    offset = magnitude * rng.choice([-1.0, 1.0], size=(N, 1))
    return {
        "logits": offset + rng.standard_normal((N, C)),
        "y": rng.integers(0, C, size=N).astype(np.int64),
    }


@dataclass(frozen=True)
class TrainingTask:
    """A train/held-out split drawn from one distribution, plus the network size to train."""

    X_train: Array
    y_train: Array
    X_test: Array
    y_test: Array
    hidden_dim: int
    num_classes: int


def training_task(
    seed: int,
    n_train: int = 1500,
    n_test: int = 2000,
    n_features: int = NUM_FEATURES,
    n_classes: int = NUM_CLASSES,
    clusters_per_class: int = 3,
    hidden_dim: int = 64,
    noise: float = 0.7,
) -> TrainingTask:
    """Gaussian clusters, several per class, so the classes are not linearly separable.

    Features are O(1), so training on the raw inputs works without rescaling
    (the grader scores with its own forward pass on raw inputs).
    """
    if n_train > MAX_TRAIN_EXAMPLES:
        raise ValueError(f"n_train={n_train} exceeds the contract's {MAX_TRAIN_EXAMPLES} training examples")
    rng = np.random.default_rng(seed)
    n_clusters = n_classes * clusters_per_class
    # Standard Gaussian centres: with 20 features and noise 0.7 a linear model
    # reaches about 0.8 held-out accuracy and a trained TwoLayerNet about 0.96.
    centres = rng.standard_normal((n_clusters, n_features))
    cluster_class = np.arange(n_clusters) % n_classes

    def draw(n: int, stream: np.random.Generator) -> tuple[Array, Array]:
        cluster = stream.integers(0, n_clusters, size=n)
        X = centres[cluster] + noise * stream.standard_normal((n, n_features))
        return X, cluster_class[cluster].astype(np.int64)

    # Separate streams: the held-out set does not depend on n_train.
    train_stream, test_stream = (np.random.default_rng(s) for s in rng.integers(0, 2**63, size=2))
    X_train, y_train = draw(n_train, train_stream)
    X_test, y_test = draw(n_test, test_stream)
    return TrainingTask(X_train, y_train, X_test, y_test, hidden_dim, n_classes)
