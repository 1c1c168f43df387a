"""Correct: each gate computed separately from its own weight block, explicit loops over time."""

import numpy as np

GATES = ("i", "f", "g", "o")


def _sigmoid(z):
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _blocks(W, H):
    """Columns of W for each gate, in PyTorch's i, f, g, o order."""
    return {name: W[..., k * H : (k + 1) * H] for k, name in enumerate(GATES)}


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    pre = np.dot(x, Wx) + np.dot(h_prev, Wh) + b
    h_next = np.tanh(pre)
    cache = {"x": x, "h_prev": h_prev, "Wx": Wx, "Wh": Wh, "h_next": h_next}
    return h_next, cache


def rnn_step_backward(dh_next, cache):
    dpre = dh_next * (1.0 - cache["h_next"] * cache["h_next"])
    dx = np.dot(dpre, cache["Wx"].T)
    dh_prev = np.dot(dpre, cache["Wh"].T)
    dWx = np.dot(cache["x"].T, dpre)
    dWh = np.dot(cache["h_prev"].T, dpre)
    db = np.sum(dpre, axis=0)
    return dx, dh_prev, dWx, dWh, db


def lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b):
    H = h_prev.shape[1]
    wx, wh, bb = _blocks(Wx, H), _blocks(Wh, H), _blocks(b, H)
    act = {}
    for name in GATES:
        pre = x.dot(wx[name]) + h_prev.dot(wh[name]) + bb[name]
        act[name] = np.tanh(pre) if name == "g" else _sigmoid(pre)
    c_next = act["f"] * c_prev + act["i"] * act["g"]
    h_next = act["o"] * np.tanh(c_next)
    cache = {"x": x, "h_prev": h_prev, "c_prev": c_prev, "c_next": c_next, "Wx": Wx, "Wh": Wh, "act": act}
    return h_next, c_next, cache


def lstm_step_backward(dh_next, dc_next, cache):
    act, H = cache["act"], cache["h_prev"].shape[1]
    i, f, g, o = act["i"], act["f"], act["g"], act["o"]
    tanh_c = np.tanh(cache["c_next"])
    dc = dc_next + dh_next * o * (1.0 - tanh_c * tanh_c)
    dpre = {
        "i": (dc * g) * i * (1.0 - i),
        "f": (dc * cache["c_prev"]) * f * (1.0 - f),
        "g": (dc * i) * (1.0 - g * g),
        "o": (dh_next * tanh_c) * o * (1.0 - o),
    }
    wx, wh = _blocks(cache["Wx"], H), _blocks(cache["Wh"], H)
    dx = np.zeros_like(cache["x"])
    dh_prev = np.zeros_like(cache["h_prev"])
    dWx = np.zeros_like(cache["Wx"])
    dWh = np.zeros_like(cache["Wh"])
    db = np.zeros(4 * H)
    for k, name in enumerate(GATES):
        cols = slice(k * H, (k + 1) * H)
        dx += dpre[name].dot(wx[name].T)
        dh_prev += dpre[name].dot(wh[name].T)
        dWx[:, cols] = cache["x"].T.dot(dpre[name])
        dWh[:, cols] = cache["h_prev"].T.dot(dpre[name])
        db[cols] = dpre[name].sum(axis=0)
    dc_prev = dc * f
    return dx, dh_prev, dc_prev, dWx, dWh, db


def lstm_forward(x, h0, Wx, Wh, b):
    N, T, D = x.shape
    H = h0.shape[1]
    hs = []
    steps = []
    h_t = h0.copy()
    c_t = np.zeros((N, H))
    for t in range(T):
        h_t, c_t, step = lstm_step_forward(x[:, t, :], h_t, c_t, Wx, Wh, b)
        hs.append(h_t)
        steps.append(step)
    h = np.stack(hs, axis=1)
    return h, {"steps": steps, "D": D}


def lstm_backward(dh, cache):
    N, T, H = dh.shape
    D = cache["D"]
    dx_steps = [None] * T
    dWx = np.zeros((D, 4 * H))
    dWh = np.zeros((H, 4 * H))
    db = np.zeros(4 * H)
    carry_h = np.zeros((N, H))
    carry_c = np.zeros((N, H))
    t = T - 1
    while t >= 0:
        grads = lstm_step_backward(dh[:, t, :] + carry_h, carry_c, cache["steps"][t])
        dx_steps[t], carry_h, carry_c = grads[0], grads[1], grads[2]
        dWx = dWx + grads[3]
        dWh = dWh + grads[4]
        db = db + grads[5]
        t -= 1
    dx = np.stack(dx_steps, axis=1)
    return dx, carry_h, dWx, dWh, db
