"""Correct: pure update functions over a PyTorch-style state (param_groups with lr behind a property),
new arrays computed then copied into the params with np.copyto."""

import copy

import numpy as np


def sgd_update(p, g, buf, lr, momentum, weight_decay):
    """(new p, new buffer or None)."""
    d_p = g + weight_decay * p
    if momentum == 0:
        return p - lr * d_p, None
    buf = d_p if buf is None else momentum * buf + d_p
    return p - lr * buf, buf


def adam_update(p, g, exp_avg, exp_avg_sq, t, lr, betas, eps, l2, decoupled):
    """(new p, new exp_avg, new exp_avg_sq) at step t (1-based)."""
    beta1, beta2 = betas
    p = p * (1 - lr * decoupled)
    g = g + l2 * p
    exp_avg = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * np.square(g)
    step_size = lr / (1 - beta1**t)
    denom = np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2**t) + eps
    return p - step_size * exp_avg / denom, exp_avg, exp_avg_sq


class _Optimizer:
    def __init__(self, params, **group):
        self.params = params
        self.param_groups = [dict(group)]
        self._state = {"step": 0, "state": {}}

    @property
    def lr(self):
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        self.param_groups[0]["lr"] = value

    def state_dict(self):
        return copy.deepcopy(self._state)

    def load_state_dict(self, state):
        self._state = {"step": int(state["step"]), "state": copy.deepcopy(dict(state["state"]))}

    def step(self, grads):
        self._state["step"] += 1
        group = self.param_groups[0]
        for key, p in self.params.items():
            new_p, buffers = self._update(p, grads[key], self._state["state"].get(key), group)
            np.copyto(p, new_p)
            if buffers is not None:
                self._state["state"][key] = buffers


class SGD(_Optimizer):
    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def _update(self, p, g, state, group):
        buf = None if state is None else state["momentum_buffer"]
        new_p, buf = sgd_update(p, g, buf, group["lr"], group["momentum"], group["weight_decay"])
        return new_p, None if buf is None else {"momentum_buffer": buf}


class Adam(_Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _coefficients(self, group):
        return group["weight_decay"], 0.0  # (L2, decoupled)

    def _update(self, p, g, state, group):
        if state is None:
            state = {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
        l2, decoupled = self._coefficients(group)
        new_p, m, v = adam_update(p, g, state["exp_avg"], state["exp_avg_sq"], self._state["step"], group["lr"],
                                  group["betas"], group["eps"], l2, decoupled)
        return new_p, {"exp_avg": m, "exp_avg_sq": v}


class AdamW(Adam):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        _Optimizer.__init__(self, params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _coefficients(self, group):
        return 0.0, group["weight_decay"]
