"""Recurrent networks and the LSTM cell, in numpy only.

Every array is float64. Shapes: N batch size, T sequence length, D input size,
H hidden size. Each `*_forward` returns its outputs and a `cache` that only
your own `*_backward` ever reads; each `*_backward` returns the gradients of
the loss with respect to the forward's inputs, in the order given.
Do not modify the arrays you are given.
"""

from typing import Any

import numpy as np


def rnn_step_forward(
    x: np.ndarray, h_prev: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, Any]:
    """One step of a tanh RNN: h_next = tanh(x @ Wx + h_prev @ Wh + b).

    x: (N, D), h_prev: (N, H), Wx: (D, H), Wh: (H, H), b: (H,).
    Returns (h_next, cache) with h_next of shape (N, H).
    """
    raise NotImplementedError("rnn_step_forward: compute h_next and a cache for the backward pass")


def rnn_step_backward(dh_next: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    """Backward pass of rnn_step_forward.

    dh_next: (N, H), the upstream gradient of h_next.
    Returns (dx, dh_prev, dWx, dWh, db), each shaped like the matching input.
    """
    raise NotImplementedError("rnn_step_backward: return (dx, dh_prev, dWx, dWh, db)")


def lstm_step_forward(
    x: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, Any]:
    """One LSTM step.

    x: (N, D), h_prev: (N, H), c_prev: (N, H), Wx: (D, 4H), Wh: (H, 4H), b: (4H,).
    The pre-activation a = x @ Wx + h_prev @ Wh + b, shape (N, 4H), splits into
    four blocks of H columns in PyTorch's order: input i, forget f, cell g, output o.
    i, f, o = sigmoid(.), g = tanh(.); c_next = f * c_prev + i * g;
    h_next = o * tanh(c_next). Must stay finite for pre-activations of magnitude 1e3.
    Returns (h_next, c_next, cache), both (N, H).
    """
    raise NotImplementedError("lstm_step_forward: compute h_next, c_next and a cache")


def lstm_step_backward(dh_next: np.ndarray, dc_next: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    """Backward pass of lstm_step_forward.

    dh_next, dc_next: (N, H), the upstream gradients of h_next and c_next.
    Returns (dx, dh_prev, dc_prev, dWx, dWh, db), each shaped like the matching input.
    """
    raise NotImplementedError("lstm_step_backward: return (dx, dh_prev, dc_prev, dWx, dWh, db)")


def lstm_forward(
    x: np.ndarray, h0: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, Any]:
    """An LSTM over a whole sequence, starting from h0 and a zero cell state.

    x: (N, T, D), h0: (N, H), Wx: (D, 4H), Wh: (H, 4H), b: (4H,).
    Returns (h, cache) with h: (N, T, H), the hidden state at every time step.
    """
    raise NotImplementedError("lstm_forward: run the LSTM over the T steps of x")


def lstm_backward(dh: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    """Backward pass of lstm_forward.

    dh: (N, T, H), the upstream gradient of every hidden state (not only the last).
    Returns (dx, dh0, dWx, dWh, db) with dx: (N, T, D), dh0: (N, H),
    dWx: (D, 4H), dWh: (H, 4H), db: (4H,).
    """
    raise NotImplementedError("lstm_backward: return (dx, dh0, dWx, dWh, db)")
