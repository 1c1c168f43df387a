"""Correct: the cache keeps pre-activations and derivatives are recomputed from them; plain 1 / (1 + exp(-a)) sigmoid."""

import numpy as np


def sigmoid(a):
    # exp(-a) overflows to inf for a << 0, which still gives the right limit 0 (numpy only warns).
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-a))


def dsigmoid(a):
    s = sigmoid(a)
    return s * (1.0 - s)


def dtanh(a):
    return 1.0 - np.tanh(a) ** 2


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    a = x.dot(Wx) + h_prev.dot(Wh) + b
    return np.tanh(a), {"x": x, "h_prev": h_prev, "Wx": Wx, "Wh": Wh, "a": a}


def rnn_step_backward(dh_next, cache):
    da = dh_next * dtanh(cache["a"])
    return (da.dot(cache["Wx"].T), da.dot(cache["Wh"].T), cache["x"].T.dot(da), cache["h_prev"].T.dot(da),
            da.sum(axis=0))


def lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b):
    a = x.dot(Wx) + h_prev.dot(Wh) + b
    ai, af, ag, ao = np.split(a, 4, axis=1)
    c_next = sigmoid(af) * c_prev + sigmoid(ai) * np.tanh(ag)
    h_next = sigmoid(ao) * np.tanh(c_next)
    cache = {"x": x, "h_prev": h_prev, "c_prev": c_prev, "c_next": c_next, "Wx": Wx, "Wh": Wh, "a": a}
    return h_next, c_next, cache


def lstm_step_backward(dh_next, dc_next, cache):
    ai, af, ag, ao = np.split(cache["a"], 4, axis=1)
    c_next = cache["c_next"]
    dc = dc_next + dh_next * sigmoid(ao) * dtanh(c_next)
    da = np.concatenate(
        [
            dc * np.tanh(ag) * dsigmoid(ai),
            dc * cache["c_prev"] * dsigmoid(af),
            dc * sigmoid(ai) * dtanh(ag),
            dh_next * np.tanh(c_next) * dsigmoid(ao),
        ],
        axis=1,
    )
    dx = da.dot(cache["Wx"].T)
    dh_prev = da.dot(cache["Wh"].T)
    dc_prev = dc * sigmoid(af)
    return dx, dh_prev, dc_prev, cache["x"].T.dot(da), cache["h_prev"].T.dot(da), da.sum(axis=0)


def lstm_forward(x, h0, Wx, Wh, b):
    N, T, _ = x.shape
    H = h0.shape[1]
    h = np.zeros((N, T, H))
    c = np.zeros((N, H))
    h_prev = h0
    steps = []
    for t in range(T):
        h_prev, c, step = lstm_step_forward(x[:, t, :], h_prev, c, Wx, Wh, b)
        h[:, t, :] = h_prev
        steps.append(step)
    return h, steps


def lstm_backward(dh, cache):
    N, T, H = dh.shape
    dx = np.zeros((N, T, cache[0]["x"].shape[1]))
    dWx = np.zeros_like(cache[0]["Wx"])
    dWh = np.zeros_like(cache[0]["Wh"])
    db = np.zeros(4 * H)
    dh_next = np.zeros((N, H))
    dc_next = np.zeros((N, H))
    for t in range(T - 1, -1, -1):
        dx_t, dh_next, dc_next, dWx_t, dWh_t, db_t = lstm_step_backward(dh[:, t, :] + dh_next, dc_next, cache[t])
        dx[:, t, :] = dx_t
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dh_next, dWx, dWh, db
