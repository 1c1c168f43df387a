"""Known-wrong: AdamW applies its weight decay as L2 (g + weight_decay * p enters the moments), as Adam does.
Expect: adamw_trajectory, state_dict, load_state_dict, training
"""

import numpy as np


def _copy_state(state):
    return {key: {name: np.array(value, dtype=np.float64) for name, value in buffers.items()}
            for key, buffers in state.items()}


class SGD:
    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.t = 0
        self.state = {}

    def step(self, grads):
        self.t += 1
        for key, p in self.params.items():
            g = grads[key]
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                if key not in self.state:
                    self.state[key] = {"momentum_buffer": g.copy()}
                else:
                    buf = self.state[key]["momentum_buffer"]
                    buf *= self.momentum
                    buf += g
                g = self.state[key]["momentum_buffer"]
            np.subtract(p, self.lr * g, out=p)

    def state_dict(self):
        return {"step": self.t, "state": _copy_state(self.state)}

    def load_state_dict(self, state):
        self.t = int(state["step"])
        self.state = _copy_state(state["state"])


class Adam:
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = params
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.state = {}

    def step(self, grads):
        self.t += 1
        beta1, beta2 = self.betas
        c1 = 1.0 - beta1 ** self.t
        c2 = 1.0 - beta2 ** self.t
        for key, p in self.params.items():
            g = grads[key]
            if self.decoupled:
                p *= 1.0 - self.lr * self.weight_decay
            elif self.weight_decay:
                g = g + self.weight_decay * p
            if key not in self.state:
                self.state[key] = {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
            m = self.state[key]["exp_avg"]
            v = self.state[key]["exp_avg_sq"]
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def state_dict(self):
        return {"step": self.t, "state": _copy_state(self.state)}

    def load_state_dict(self, state):
        self.t = int(state["step"])
        self.state = _copy_state(state["state"])


class AdamW(Adam):
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
