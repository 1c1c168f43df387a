"""Correct: explicit loops over keys and over elements (np.ndindex), every update written with p[...] = ...;
buffers allocated at construction, the step count kept per key as PyTorch's Adam does."""

import numpy as np


class SGD:
    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.steps = 0
        self.buffers = {}

    def step(self, grads):
        self.steps += 1
        for key in self.params:
            p = self.params[key]
            g = np.empty_like(p)
            for i in np.ndindex(p.shape):
                g[i] = grads[key][i] + self.weight_decay * p[i]
            if self.momentum != 0.0:
                if key in self.buffers:
                    old = self.buffers[key]
                    new = np.empty_like(p)
                    for i in np.ndindex(p.shape):
                        new[i] = self.momentum * old[i] + g[i]
                    self.buffers[key] = new
                else:
                    self.buffers[key] = g.copy()
                g = self.buffers[key]
            p[...] = p - self.lr * g

    def state_dict(self):
        return {"step": self.steps,
                "state": {k: {"momentum_buffer": b.copy()} for k, b in self.buffers.items()}}

    def load_state_dict(self, state):
        self.steps = state["step"]
        self.buffers = {k: np.array(s["momentum_buffer"], dtype=float) for k, s in state["state"].items()}


def _adam_update(opt, decoupled):
    beta1, beta2 = opt.betas
    for key in opt.params:
        p = opt.params[key]
        st = opt.per_key[key]
        st["step"] += 1
        t = st["step"]
        g = grads_of(opt, key)
        if decoupled:
            p[...] = p * (1.0 - opt.lr * opt.weight_decay)
        else:
            g = g + opt.weight_decay * p
        st["exp_avg"][...] = beta1 * st["exp_avg"] + (1.0 - beta1) * g
        st["exp_avg_sq"][...] = beta2 * st["exp_avg_sq"] + (1.0 - beta2) * g ** 2
        m_hat = st["exp_avg"] / (1.0 - beta1 ** t)
        v_hat = st["exp_avg_sq"] / (1.0 - beta2 ** t)
        for i in np.ndindex(p.shape):
            p[i] = p[i] - opt.lr * m_hat[i] / (np.sqrt(v_hat[i]) + opt.eps)


def grads_of(opt, key):
    return opt.current_grads[key]


class Adam:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = params
        self.lr = lr
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self.per_key = {k: {"step": 0, "exp_avg": np.zeros(v.shape), "exp_avg_sq": np.zeros(v.shape)}
                        for k, v in params.items()}
        self.current_grads = None

    def _decoupled(self):
        return False

    def step(self, grads):
        self.current_grads = grads
        try:
            _adam_update(self, self._decoupled())
        finally:
            self.current_grads = None

    def state_dict(self):
        steps = {st["step"] for st in self.per_key.values()}
        return {"step": steps.pop() if steps else 0,
                "state": {k: {"exp_avg": st["exp_avg"].copy(), "exp_avg_sq": st["exp_avg_sq"].copy()}
                          for k, st in self.per_key.items()}}

    def load_state_dict(self, state):
        for k, st in self.per_key.items():
            st["step"] = int(state["step"])
            if k in state["state"]:
                st["exp_avg"] = np.array(state["state"][k]["exp_avg"], dtype=np.float64)
                st["exp_avg_sq"] = np.array(state["state"][k]["exp_avg_sq"], dtype=np.float64)
            else:
                st["exp_avg"] = np.zeros(self.params[k].shape)
                st["exp_avg_sq"] = np.zeros(self.params[k].shape)


class AdamW(Adam):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _decoupled(self):
        return True
