"""Reference convolution and max-pooling layers (numpy, float64), PyTorch's conventions.

Trusted grader code, never shipped into a sandbox. The public functions follow
the `cnn` contract in PROBLEMS.md exactly; the helpers after them give the
grader what it needs beyond the contract: the grader's own forward pass of the
fixed `train_cnn` architecture (to score returned params on held-out images),
the 8x8 digits split, formulas of common mistakes (a flipped kernel, the
gradient of every window position) to name them in a report, and seeded input
generators.

Layout: images are (N, C, H, W) and filters (F, C, KH, KW) as in
torch.nn.functional.conv2d, which computes a cross-correlation: the kernel is
not flipped. Zero padding of `pad` pixels on all four sides; the output has
H' = 1 + (H + 2*pad - KH) // stride rows (rounded down, windows that would run
past the padded input are dropped). Max-pooling has no padding and rounds
down the same way, as torch.nn.functional.max_pool2d does by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Array = np.ndarray

# The fixed train_cnn architecture from PROBLEMS.md.
NUM_FILTERS = 8
KERNEL_SIZE = 3
CONV_PAD = 1
POOL_SIZE = 2
IMAGE_SIZE = 8
NUM_CLASSES = 10
FLAT_DIM = NUM_FILTERS * (IMAGE_SIZE // POOL_SIZE) ** 2  # 8 * 4 * 4 = 128
PARAM_SHAPES = {
    "W1": (NUM_FILTERS, 1, KERNEL_SIZE, KERNEL_SIZE),
    "b1": (NUM_FILTERS,),
    "W2": (FLAT_DIM, NUM_CLASSES),
    "b2": (NUM_CLASSES,),
}

# The digits split: about 1,400 training images (PROBLEMS.md), the rest held out.
N_TRAIN_DIGITS = 1400
DIGIT_MAX_INTENSITY = 16.0  # load_digits' pixels are integers 0..16


def output_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Number of window positions along one axis: 1 + (size + 2*pad - kernel) // stride."""
    return 1 + (size + 2 * pad - kernel) // stride


# ---------------------------------------------------------------------------
# Convolution


def _windows(xp: Array, KH: int, KW: int, stride: int) -> Array:
    """Read-only view (N, C, H', W', KH, KW) of every strided window of the padded input."""
    # sliding_window_view gives every stride-1 window; taking every stride-th one
    # keeps exactly 1 + (Hp - KH) // stride of them, the rounded-down count.
    return sliding_window_view(xp, (KH, KW), axis=(2, 3))[:, :, ::stride, ::stride]


def conv2d_forward(x: Array, w: Array, b: Array, stride: int = 1, pad: int = 0) -> tuple[Array, Any]:
    """Cross-correlation of x (N, C, H, W) with w (F, C, KH, KW) plus b (F,); out (N, F, H', W')."""
    _, _, KH, KW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = _windows(xp, KH, KW, stride)
    out = np.einsum("nchwij,fcij->nfhw", windows, w, optimize=True) + b[None, :, None, None]
    cache = (x.shape, xp, w, stride, pad)
    return out, cache


def conv2d_backward(dout: Array, cache: Any) -> tuple[Array, Array, Array]:
    """Gradients (dx, dw, db) of conv2d_forward for upstream dout (N, F, H', W')."""
    x_shape, xp, w, stride, pad = cache
    _, _, H, W = x_shape
    _, _, KH, KW = w.shape
    _, _, Ho, Wo = dout.shape
    db = dout.sum(axis=(0, 2, 3))
    dw = np.einsum("nfhw,nchwij->fcij", dout, _windows(xp, KH, KW, stride), optimize=True)
    dxp = np.zeros_like(xp)
    # Each kernel offset (i, j) touches the strided grid of input pixels
    # i + stride*h, j + stride*w; windows overlap, so the grids are accumulated.
    for i in range(KH):
        for j in range(KW):
            dxp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] += np.einsum(
                "nfhw,fc->nchw", dout, w[:, :, i, j]
            )
    # pad:pad+H, not pad:-pad, which is empty when pad is 0.
    dx = dxp[:, :, pad : pad + H, pad : pad + W]
    return dx, dw, db


# ---------------------------------------------------------------------------
# Max-pooling


def _pool_argmax(x: Array, kernel: int, stride: int) -> tuple[Array, Array]:
    """Per window: the max value and the flat (row, col) position in x of its first maximum."""
    windows = _windows(x, kernel, kernel, stride)
    N, C, Ho, Wo = windows.shape[:4]
    flat = windows.reshape(N, C, Ho, Wo, kernel * kernel)
    # argmax takes the first maximum in row-major order, as PyTorch's CPU kernel does.
    first = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, first[..., None], axis=-1)[..., 0]
    rows = stride * np.arange(Ho)[:, None] + first // kernel
    cols = stride * np.arange(Wo)[None, :] + first % kernel
    return out, np.stack([rows, cols])


def maxpool2d_forward(x: Array, kernel: int = 2, stride: int = 2) -> tuple[Array, Any]:
    """Max over kernel x kernel windows every `stride` pixels, no padding: (N, C, H, W) -> (N, C, H', W')."""
    out, positions = _pool_argmax(x, kernel, stride)
    cache = (x.shape, positions)
    return out, cache


def maxpool2d_backward(dout: Array, cache: Any) -> Array:
    """Gradient of maxpool2d_forward: each window's upstream gradient goes to its (first) maximum."""
    x_shape, (rows, cols) = cache
    N, C = x_shape[:2]
    dx = np.zeros(x_shape)
    n = np.arange(N)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    # Overlapping windows (stride < kernel) can share a maximum: add.at accumulates, a plain
    # fancy-index assignment would keep only one of the contributions.
    np.add.at(dx, (n, c, rows, cols), dout)
    return dx


# ---------------------------------------------------------------------------
# The fixed network and its training


def relu(x: Array) -> Array:
    """Elementwise max(x, 0)."""
    return np.maximum(x, 0.0)


def cnn_scores(params: dict[str, Array], X: Array) -> Array:
    """The grader's own forward pass: conv 3x3 pad 1, ReLU, maxpool 2, flatten (C order), affine."""
    X = np.asarray(X, dtype=np.float64)
    W1, b1, W2, b2 = (np.asarray(params[k], dtype=np.float64) for k in PARAM_SHAPES)
    conv, _ = conv2d_forward(X, W1, b1, stride=1, pad=CONV_PAD)
    pooled, _ = maxpool2d_forward(relu(conv), POOL_SIZE, POOL_SIZE)
    # (N, 8, 4, 4) -> (N, 128): channel-major, as torch.flatten on NCHW.
    return pooled.reshape(X.shape[0], -1) @ W2 + b2


def predict(params: dict[str, Array], X: Array) -> Array:
    """Predicted class of every image."""
    return cnn_scores(params, X).argmax(axis=1)


def accuracy(params: dict[str, Array], X: Array, y: Array) -> float:
    """Fraction of images whose highest score is the label."""
    return float(np.mean(predict(params, X) == y))


def check_params(params: Any) -> dict[str, Array]:
    """Raise ValueError naming the first key that is missing, not a float64 array, misshapen or not finite."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of arrays; got {type(params).__name__}")
    for k, shape in PARAM_SHAPES.items():
        if k not in params:
            raise ValueError(f"params has no key {k!r} (expected keys {', '.join(PARAM_SHAPES)})")
        v = params[k]
        if type(v) is not np.ndarray:
            raise ValueError(f"params[{k!r}] is a {type(v).__name__}, expected a numpy array")
        if v.shape != shape:
            raise ValueError(f"params[{k!r}] has shape {v.shape}, expected {shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"params[{k!r}] contains NaN or inf")
    return {k: params[k] for k in PARAM_SHAPES}


def softmax_cross_entropy(scores: Array, y: Array) -> tuple[float, Array]:
    """Mean cross-entropy of (N, C) scores against int labels, and its gradient."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(scores.shape[0])
    dscores = np.exp(log_probs)
    dscores[rows, y] -= 1.0
    return float(-log_probs[rows, y].mean()), dscores / scores.shape[0]


def cnn_loss(params: dict[str, Array], X: Array, y: Array) -> tuple[float, dict[str, Array]]:
    """Mean cross-entropy of the fixed network and the gradient of every param."""
    conv, conv_cache = conv2d_forward(X, params["W1"], params["b1"], stride=1, pad=CONV_PAD)
    act = relu(conv)
    pooled, pool_cache = maxpool2d_forward(act, POOL_SIZE, POOL_SIZE)
    flat = pooled.reshape(X.shape[0], -1)
    loss, dscores = softmax_cross_entropy(flat @ params["W2"] + params["b2"], y)
    grads = {"W2": flat.T @ dscores, "b2": dscores.sum(axis=0)}
    dpooled = (dscores @ params["W2"].T).reshape(pooled.shape)
    dconv = maxpool2d_backward(dpooled, pool_cache) * (conv > 0)
    _, grads["W1"], grads["b1"] = conv2d_backward(dconv, conv_cache)
    return loss, grads


def init_params(seed: int) -> dict[str, Array]:
    """He-scaled Gaussian weights, zero biases."""
    rng = np.random.default_rng(seed)
    fan_in_conv = KERNEL_SIZE * KERNEL_SIZE
    return {
        "W1": rng.standard_normal(PARAM_SHAPES["W1"]) * np.sqrt(2.0 / fan_in_conv),
        "b1": np.zeros(NUM_FILTERS),
        "W2": rng.standard_normal(PARAM_SHAPES["W2"]) * np.sqrt(2.0 / FLAT_DIM),
        "b2": np.zeros(NUM_CLASSES),
    }


# Training recipe of the reference: SGD with momentum, measured in
# tests/test_reference_cnn.py to clear the pass mark in a few seconds on one core.
TRAIN_EPOCHS = 15
TRAIN_BATCH = 32
TRAIN_LR = 0.05
TRAIN_MOMENTUM = 0.9


def train_cnn(X: Array, y: Array, seed: int) -> dict[str, Array]:
    """Minibatch SGD with momentum on the fixed architecture; returns its params."""
    params = init_params(seed)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    N = X.shape[0]
    for _ in range(TRAIN_EPOCHS):
        order = rng.permutation(N)
        for start in range(0, N, TRAIN_BATCH):
            batch = order[start : start + TRAIN_BATCH]
            _, grads = cnn_loss(params, X[batch], y[batch])
            for k in params:
                velocity[k] = TRAIN_MOMENTUM * velocity[k] - TRAIN_LR * grads[k]
                params[k] = params[k] + velocity[k]
    return params


# ---------------------------------------------------------------------------
# Known mistakes, so a report can name them


def conv2d_flipped_forward(x: Array, w: Array, b: Array, stride: int = 1, pad: int = 0) -> Array:
    """True convolution (kernel rotated by 180 degrees): the output of a flipped-kernel implementation."""
    return conv2d_forward(x, w[:, :, ::-1, ::-1], b, stride, pad)[0]


def conv2d_flipped_backward(x: Array, w: Array, b: Array, dout: Array, stride: int = 1,
                            pad: int = 0) -> tuple[Array, Array, Array]:
    """(dx, dw, db) of a consistent true-convolution implementation: dw comes out flipped too."""
    _, cache = conv2d_forward(x, w[:, :, ::-1, ::-1], b, stride, pad)
    dx, dw, db = conv2d_backward(dout, cache)
    return dx, dw[:, :, ::-1, ::-1], db


def maxpool2d_spread_backward(dout: Array, x_shape: tuple[int, ...], kernel: int, stride: int) -> Array:
    """The gradient of a window sent to every position of it, as if the max were a sum."""
    dx = np.zeros(x_shape)
    _, _, Ho, Wo = dout.shape
    for i in range(kernel):
        for j in range(kernel):
            dx[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] += dout
    return dx


def maxpool2d_window_counts(x: Array, kernel: int, stride: int) -> Array:
    """How many windows take each position of x as their maximum (ties resolved to the first)."""
    _, (rows, cols) = _pool_argmax(x, kernel, stride)
    counts = np.zeros(x.shape, dtype=np.int64)
    N, C = x.shape[:2]
    np.add.at(counts, (np.arange(N)[:, None, None, None], np.arange(C)[None, :, None, None], rows, cols), 1)
    return counts


def maxpool2d_tied_positions(x: Array, kernel: int, stride: int) -> Array:
    """Boolean (N, C, H', W', kernel, kernel): which positions of each window hold its maximum."""
    windows = _windows(x, kernel, kernel, stride)
    return windows == windows.max(axis=(-2, -1), keepdims=True)


# ---------------------------------------------------------------------------
# Seeded inputs


def conv_inputs(seed: int, N: int, C: int, H: int, W: int, F: int, KH: int, KW: int) -> dict[str, Array]:
    """x (N, C, H, W), w (F, C, KH, KW) and b (F,): O(1) Gaussians."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((N, C, H, W)),
        "w": rng.standard_normal((F, C, KH, KW)),
        "b": rng.standard_normal(F),
    }


def unique_image(seed: int, shape: tuple[int, ...], gap: float = 0.1) -> Array:
    """Distinct values at least `gap` apart, shuffled: max-pool without ties, far from finite-difference steps."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    values = (np.arange(n) - n / 2) * gap + rng.uniform(0, gap / 4, size=n)
    return rng.permutation(values).reshape(shape)


@dataclass(frozen=True)
class DigitsSplit:
    """The 8x8 digits as (N, 1, 8, 8) float64 images in [0, 1], split into train and held-out sets."""

    X_train: Array
    y_train: Array
    X_test: Array
    y_test: Array


def digits_split(seed: int, n_train: int = N_TRAIN_DIGITS) -> DigitsSplit:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package), shuffled with `seed` and split."""
    from sklearn.datasets import load_digits  # trusted side only: the sandbox has numpy alone

    digits = load_digits()
    X = (digits.images / DIGIT_MAX_INTENSITY).astype(np.float64)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    train, test = order[:n_train], order[n_train:]
    return DigitsSplit(X[train], y[train], X[test], y[test])
