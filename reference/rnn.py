"""Reference RNN and LSTM layers (numpy, float64), PyTorch's conventions.

Trusted grader code, never shipped into a sandbox. The public layer functions
follow the `rnn` contract in PROBLEMS.md exactly; the helpers below them give
the grader what it needs beyond the contract: sequence versions of the vanilla
RNN, the gate-order mapping used to diagnose the course convention, the
gradient-through-time measurement and seeded input generators.

Gate layout: the pre-activation a = x Wx + h_prev Wh + b has 4H columns split
as PyTorch's LSTM does, in the order i, f, g, o (input, forget, cell, output).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray

# PyTorch's order of the four gate blocks; the widely used course order differs.
TORCH_GATE_ORDER = "ifgo"
COURSE_GATE_ORDER = "ifog"


def sigmoid(x: Array) -> Array:
    """Logistic function, finite and accurate for any finite input."""
    # exp is only ever taken of a non-positive number, so it cannot overflow.
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


# ---------------------------------------------------------------------------
# Vanilla RNN step


def rnn_step_forward(x: Array, h_prev: Array, Wx: Array, Wh: Array, b: Array) -> tuple[Array, Any]:
    """One tanh RNN step: h_next = tanh(x Wx + h_prev Wh + b), shapes (N, D) -> (N, H)."""
    h_next = np.tanh(x @ Wx + h_prev @ Wh + b)
    cache = (x, h_prev, Wx, Wh, h_next)
    return h_next, cache


def rnn_step_backward(dh_next: Array, cache: Any) -> tuple[Array, Array, Array, Array, Array]:
    """Gradients (dx, dh_prev, dWx, dWh, db) of one RNN step for upstream dh_next (N, H)."""
    x, h_prev, Wx, Wh, h_next = cache
    da = dh_next * (1.0 - h_next**2)
    dx = da @ Wx.T
    dh_prev = da @ Wh.T
    dWx = x.T @ da
    dWh = h_prev.T @ da
    db = da.sum(axis=0)
    return dx, dh_prev, dWx, dWh, db


# ---------------------------------------------------------------------------
# LSTM step


def _split_gates(a: Array) -> tuple[Array, Array, Array, Array]:
    """Split (N, 4H) pre-activations into the i, f, g, o blocks of (N, H) each."""
    H = a.shape[1] // 4
    return a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]


def lstm_step_forward(
    x: Array, h_prev: Array, c_prev: Array, Wx: Array, Wh: Array, b: Array
) -> tuple[Array, Array, Any]:
    """One LSTM step with PyTorch's gate order i, f, g, o; returns (h_next, c_next, cache)."""
    a = x @ Wx + h_prev @ Wh + b
    a_i, a_f, a_g, a_o = _split_gates(a)
    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o)
    g = np.tanh(a_g)
    c_next = f * c_prev + i * g
    tanh_c = np.tanh(c_next)
    h_next = o * tanh_c
    cache = (x, h_prev, c_prev, Wx, Wh, i, f, g, o, tanh_c)
    return h_next, c_next, cache


def lstm_step_backward(
    dh_next: Array, dc_next: Array, cache: Any
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """Gradients (dx, dh_prev, dc_prev, dWx, dWh, db) of one LSTM step."""
    x, h_prev, c_prev, Wx, Wh, i, f, g, o, tanh_c = cache
    # The cell state reaches the loss directly (dc_next) and through h_next.
    dc = dc_next + dh_next * o * (1.0 - tanh_c**2)
    da_i = dc * g * i * (1.0 - i)
    da_f = dc * c_prev * f * (1.0 - f)
    da_g = dc * i * (1.0 - g**2)
    da_o = dh_next * tanh_c * o * (1.0 - o)
    da = np.concatenate([da_i, da_f, da_g, da_o], axis=1)
    dx = da @ Wx.T
    dh_prev = da @ Wh.T
    dc_prev = dc * f
    dWx = x.T @ da
    dWh = h_prev.T @ da
    db = da.sum(axis=0)
    return dx, dh_prev, dc_prev, dWx, dWh, db


# ---------------------------------------------------------------------------
# LSTM over a sequence


def lstm_forward(x: Array, h0: Array, Wx: Array, Wh: Array, b: Array) -> tuple[Array, Any]:
    """LSTM over x (N, T, D) from h0 (N, H) and c0 = 0; returns every hidden state h (N, T, H)."""
    N, T, _ = x.shape
    H = h0.shape[1]
    h = np.empty((N, T, H), dtype=np.result_type(x, h0, Wx, Wh, b))
    h_t, c_t = h0, np.zeros_like(h0)
    step_caches = []
    for t in range(T):
        h_t, c_t, step_cache = lstm_step_forward(x[:, t, :], h_t, c_t, Wx, Wh, b)
        h[:, t, :] = h_t
        step_caches.append(step_cache)
    return h, step_caches


def lstm_backward(dh: Array, cache: Any) -> tuple[Array, Array, Array, Array, Array]:
    """Gradients (dx, dh0, dWx, dWh, db) for the upstream gradient dh (N, T, H) of every hidden state."""
    step_caches = cache
    N, T, H = dh.shape
    D = step_caches[0][0].shape[1]
    dx = np.empty((N, T, D), dtype=dh.dtype)
    dWx = np.zeros((D, 4 * H), dtype=dh.dtype)
    dWh = np.zeros((H, 4 * H), dtype=dh.dtype)
    db = np.zeros(4 * H, dtype=dh.dtype)
    # Gradients carried from step t+1 back into step t through h and c.
    dh_carry = np.zeros((N, H), dtype=dh.dtype)
    dc_carry = np.zeros((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        dx_t, dh_carry, dc_carry, dWx_t, dWh_t, db_t = lstm_step_backward(
            dh[:, t, :] + dh_carry, dc_carry, step_caches[t]
        )
        dx[:, t, :] = dx_t
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dh_carry, dWx, dWh, db


# ---------------------------------------------------------------------------
# Helpers for the grader (not part of the candidate contract)


def rnn_forward(x: Array, h0: Array, Wx: Array, Wh: Array, b: Array) -> tuple[Array, Any]:
    """Vanilla RNN over x (N, T, D) from h0 (N, H); returns every hidden state h (N, T, H)."""
    N, T, _ = x.shape
    h = np.empty((N, T, h0.shape[1]), dtype=np.result_type(x, h0, Wx, Wh, b))
    h_t = h0
    step_caches = []
    for t in range(T):
        h_t, step_cache = rnn_step_forward(x[:, t, :], h_t, Wx, Wh, b)
        h[:, t, :] = h_t
        step_caches.append(step_cache)
    return h, step_caches


def rnn_backward(dh: Array, cache: Any) -> tuple[Array, Array, Array, Array, Array]:
    """Gradients (dx, dh0, dWx, dWh, db) of rnn_forward for the upstream gradient dh (N, T, H)."""
    step_caches = cache
    N, T, H = dh.shape
    D = step_caches[0][0].shape[1]
    dx = np.empty((N, T, D), dtype=dh.dtype)
    dWx = np.zeros((D, H), dtype=dh.dtype)
    dWh = np.zeros((H, H), dtype=dh.dtype)
    db = np.zeros(H, dtype=dh.dtype)
    dh_carry = np.zeros((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        dx_t, dh_carry, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t, :] + dh_carry, step_caches[t])
        dx[:, t, :] = dx_t
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dh_carry, dWx, dWh, db


def reorder_gates(w: Array, src: str = TORCH_GATE_ORDER, dst: str = COURSE_GATE_ORDER) -> Array:
    """Permute the four H-wide gate blocks of w's last axis from order `src` to order `dst`.

    A cell that reads its gates in order `dst` computes, on reorder_gates(W), what
    a cell reading order `src` computes on W. So a candidate who used the course
    order i, f, o, g matches lstm_step_forward(x, h, c, reorder_gates(Wx), ...).
    """
    if sorted(src) != sorted("ifgo") or sorted(dst) != sorted("ifgo"):
        raise ValueError(f"gate orders must be permutations of 'ifgo', got src={src!r}, dst={dst!r}")
    if w.shape[-1] % 4:
        raise ValueError(f"last axis of w must be 4H, got {w.shape[-1]}")
    blocks = np.split(w, 4, axis=-1)
    by_name = dict(zip(src, blocks))
    return np.concatenate([by_name[name] for name in dst], axis=-1)


def hidden_gradient_norms(step_dh_prev: list[Array]) -> list[float]:
    """Frobenius norm of each dL/dh_t, listed from t = 0 to T - 1."""
    return [float(np.linalg.norm(g)) for g in step_dh_prev]


def rnn_gradient_through_time(
    x: Array, h0: Array, Wx: Array, Wh: Array, b: Array, dh_last: Array
) -> list[float]:
    """Norms of dL/dh_t for t = 0..T-1 when the loss depends only on the last hidden state."""
    _, caches = rnn_forward(x, h0, Wx, Wh, b)
    T = x.shape[1]
    grads: list[Array] = [np.empty(0)] * T
    dh_t = dh_last
    for t in reversed(range(T)):
        grads[t] = dh_t
        _, dh_t, _, _, _ = rnn_step_backward(dh_t, caches[t])
    return hidden_gradient_norms(grads)


def lstm_gradient_through_time(
    x: Array, h0: Array, Wx: Array, Wh: Array, b: Array, dh_last: Array
) -> list[float]:
    """Norms of dL/dh_t for t = 0..T-1 when the loss depends only on the last hidden state."""
    _, caches = lstm_forward(x, h0, Wx, Wh, b)
    T = x.shape[1]
    grads: list[Array] = [np.empty(0)] * T
    dh_t, dc_t = dh_last, np.zeros_like(dh_last)
    for t in reversed(range(T)):
        grads[t] = dh_t
        _, dh_t, dc_t, _, _, _ = lstm_step_backward(dh_t, dc_t, caches[t])
    return hidden_gradient_norms(grads)


# ---------------------------------------------------------------------------
# Seeded input generators


def rnn_step_inputs(seed: int, N: int, D: int, H: int, scale: float = 1.0) -> dict[str, Array]:
    """Inputs of rnn_step_forward with weights scaled so tanh is neither linear nor saturated."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((N, D)),
        "h_prev": rng.standard_normal((N, H)),
        "Wx": scale * rng.standard_normal((D, H)) / np.sqrt(D),
        "Wh": scale * rng.standard_normal((H, H)) / np.sqrt(H),
        "b": scale * rng.standard_normal(H),
    }


def lstm_step_inputs(seed: int, N: int, D: int, H: int, scale: float = 1.0) -> dict[str, Array]:
    """Inputs of lstm_step_forward; c_prev is drawn too so dc_prev depends on it."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((N, D)),
        "h_prev": rng.standard_normal((N, H)),
        "c_prev": rng.standard_normal((N, H)),
        "Wx": scale * rng.standard_normal((D, 4 * H)) / np.sqrt(D),
        "Wh": scale * rng.standard_normal((H, 4 * H)) / np.sqrt(H),
        "b": scale * rng.standard_normal(4 * H),
    }


def lstm_sequence_inputs(seed: int, N: int, T: int, D: int, H: int, scale: float = 1.0) -> dict[str, Array]:
    """Inputs of lstm_forward: x (N, T, D), h0 (N, H) and the weights."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((N, T, D)),
        "h0": rng.standard_normal((N, H)),
        "Wx": scale * rng.standard_normal((D, 4 * H)) / np.sqrt(D),
        "Wh": scale * rng.standard_normal((H, 4 * H)) / np.sqrt(H),
        "b": scale * rng.standard_normal(4 * H),
    }


def saturating_bias(seed: int, H: int, gates: int = 4, magnitude: float = 1e3) -> Array:
    """A bias of +-magnitude per unit: pre-activations of that size saturate every gate."""
    rng = np.random.default_rng(seed)
    return magnitude * rng.choice([-1.0, 1.0], size=gates * H)
