"""Known lapse: rnn_step_forward returns h_next in float32 (its math is right; the cache keeps float64).
One lapse, one charge: only rnn_step_forward loses its points, for the dtype; the gradient check and
saturation grade values at float32's precision and pass.
Expect: rnn_step_forward
"""

import numpy as np


def sigmoid(z):
    # tanh saturates gracefully, so this form cannot overflow.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    h_next = np.tanh(np.einsum("nd,dh->nh", x, Wx) + np.einsum("nk,kh->nh", h_prev, Wh) + b)
    return h_next.astype(np.float32), (x, h_prev, Wx, Wh, h_next)  # float32: the lapse


def rnn_step_backward(dh_next, cache):
    x, h_prev, Wx, Wh, h_next = cache
    da = dh_next * (1.0 - np.square(h_next))
    return (
        np.einsum("nh,dh->nd", da, Wx),
        np.einsum("nh,kh->nk", da, Wh),
        np.einsum("nd,nh->dh", x, da),
        np.einsum("nk,nh->kh", h_prev, da),
        np.einsum("nh->h", da),
    )


def _cell(a, c_prev):
    """Gates and new state from pre-activations a (..., 4H), split as i, f, g, o."""
    i, f, g, o = np.split(a, 4, axis=-1)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c = f * c_prev + i * g
    return i, f, g, o, c


def _cell_backward(dh, dc_next, i, f, g, o, c_prev, c):
    """Gradient of the pre-activations and of c_prev for one step."""
    tc = np.tanh(c)
    dc = dc_next + dh * o * (1.0 - np.square(tc))
    da = np.concatenate(
        [dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - np.square(g)), dh * tc * o * (1.0 - o)],
        axis=-1,
    )
    return da, dc * f


def lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b):
    a = np.einsum("nd,dk->nk", x, Wx) + np.einsum("nh,hk->nk", h_prev, Wh) + b
    i, f, g, o, c_next = _cell(a, c_prev)
    h_next = o * np.tanh(c_next)
    return h_next, c_next, (x, h_prev, c_prev, Wx, Wh, (i, f, g, o), c_next)


def lstm_step_backward(dh_next, dc_next, cache):
    x, h_prev, c_prev, Wx, Wh, gates, c_next = cache
    da, dc_prev = _cell_backward(dh_next, dc_next, *gates, c_prev, c_next)
    return (
        np.einsum("nk,dk->nd", da, Wx),
        np.einsum("nk,hk->nh", da, Wh),
        dc_prev,
        np.einsum("nd,nk->dk", x, da),
        np.einsum("nh,nk->hk", h_prev, da),
        np.einsum("nk->k", da),
    )


def lstm_forward(x, h0, Wx, Wh, b):
    N, T, _ = x.shape
    H = h0.shape[1]
    xa = np.einsum("ntd,dk->ntk", x, Wx) + b  # input part of every step at once
    hs = np.empty((N, T + 1, H))  # hs[:, t] is the state before step t
    cs = np.empty((N, T + 1, H))
    gates = np.empty((4, N, T, H))
    hs[:, 0], cs[:, 0] = h0, 0.0
    for t in range(T):
        a = xa[:, t] + np.einsum("nh,hk->nk", hs[:, t], Wh)
        i, f, g, o, c = _cell(a, cs[:, t])
        gates[:, :, t] = i, f, g, o
        cs[:, t + 1] = c
        hs[:, t + 1] = o * np.tanh(c)
    return hs[:, 1:].copy(), (x, Wx, Wh, hs, cs, gates)


def lstm_backward(dh, cache):
    x, Wx, Wh, hs, cs, gates = cache
    N, T, H = dh.shape
    da = np.empty((N, T, 4 * H))
    dh_carry = np.zeros((N, H))
    dc_carry = np.zeros((N, H))
    for t in range(T - 1, -1, -1):
        i, f, g, o = gates[:, :, t]
        da[:, t], dc_carry = _cell_backward(dh[:, t] + dh_carry, dc_carry, i, f, g, o, cs[:, t], cs[:, t + 1])
        dh_carry = np.einsum("nk,hk->nh", da[:, t], Wh)
    dx = np.einsum("ntk,dk->ntd", da, Wx)
    dWx = np.einsum("ntd,ntk->dk", x, da)
    dWh = np.einsum("nth,ntk->hk", hs[:, :-1], da)
    db = np.einsum("ntk->k", da)
    return dx, dh_carry, dWx, dWh, db
