"""Convolution and max-pooling from scratch, in numpy only.

Every array is float64. Images are (N, C, H, W): N batch size, C channels,
H height, W width. Filters are (F, C, KH, KW). Each `*_forward` returns its
output and a `cache` that only your own `*_backward` ever reads; each
`*_backward` returns the gradients of the loss with respect to the forward's
inputs, in the order given, each with exactly its input's shape.
Do not modify the arrays you are given.
"""

from typing import Any

import numpy as np


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1,
                   pad: int = 0) -> tuple[np.ndarray, Any]:
    """2-D convolution layer as PyTorch's conv2d computes it (a cross-correlation: the kernel is not flipped).

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,). The input is zero-padded by
    `pad` pixels on all four sides; windows are taken every `stride` pixels.
    out[n, f, i, j] = b[f] + sum over c, p, q of
        x_padded[n, c, i * stride + p, j * stride + q] * w[f, c, p, q].
    Returns (out, cache) with out of shape (N, F, H', W'),
    H' = 1 + (H + 2 * pad - KH) // stride and W' = 1 + (W + 2 * pad - KW) // stride
    (rounded down: windows that would run past the padded input are dropped).
    """
    raise NotImplementedError("conv2d_forward: pad x, slide the filters every `stride` pixels, return (out, cache)")


def conv2d_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of conv2d_forward.

    dout: (N, F, H', W'), the upstream gradient of out.
    Returns (dx, dw, db): dx (N, C, H, W) (the unpadded input's shape), dw (F, C, KH, KW), db (F,).
    """
    raise NotImplementedError("conv2d_backward: return (dx, dw, db)")


def maxpool2d_forward(x: np.ndarray, kernel: int = 2, stride: int = 2) -> tuple[np.ndarray, Any]:
    """Max-pooling over kernel x kernel windows taken every `stride` pixels, no padding.

    x: (N, C, H, W). Returns (out, cache) with out of shape (N, C, H', W'),
    H' = 1 + (H - kernel) // stride and W' = 1 + (W - kernel) // stride.
    Windows overlap when stride < kernel.
    """
    raise NotImplementedError("maxpool2d_forward: take the max of every window, return (out, cache)")


def maxpool2d_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Backward pass of maxpool2d_forward: dx with x's shape (N, C, H, W).

    dout: (N, C, H', W'). Where a window has several equal maxima, any split of
    its gradient among them is correct.
    """
    raise NotImplementedError("maxpool2d_backward: route each window's gradient to its maximum, return dx")


def train_cnn(X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Train the fixed network on (X, y) and return its params.

    X: (N, 1, 8, 8) float64 images with pixel values in [0, 1]; y: (N,) integer labels 0..9.
    Network: conv 8 filters 3x3, pad 1, stride 1 -> ReLU -> maxpool 2x2 stride 2
    -> flatten (N, 8, 4, 4) to (N, 128) in C order (x.reshape(N, -1)) -> affine 128 -> 10.
    Choose your own initialization, optimizer, learning rate, epochs and batch size.
    Use np.random.default_rng(seed) for every random choice.
    Returns {"W1": (8, 1, 3, 3), "b1": (8,), "W2": (128, 10), "b2": (10,)}.
    """
    raise NotImplementedError("train_cnn: train the network and return its params")
