"""Reference optimizers (numpy, float64), torch.optim's conventions.

Trusted grader code, never shipped into a sandbox. `SGD`, `Adam` and `AdamW`
follow the `optim` contract exactly: they update a dict of float64 arrays in
place (the same array objects, as torch.optim updates its parameters), read
`self.lr` at every step (a schedule writes it between steps), and keep their
state in the documented plain-data layout:

    {"step": k, "state": {key: {"momentum_buffer": array}}}                 SGD (momentum != 0)
    {"step": k, "state": {key: {"exp_avg": array, "exp_avg_sq": array}}}    Adam, AdamW

with k the number of step() calls so far. The helpers after the classes give
the grader what it needs beyond the contract: a trajectory of parameters under
a schedule of learning rates and gradients, and the small training problem the
training test drives a candidate's optimizer on.

Conventions (torch.optim): SGD's momentum v = mu * v + g (v = g at the first
step), p -= lr * v, weight decay added to the gradient before the momentum;
Adam's weight decay is L2 (g + wd * p enters the moments), AdamW's is
decoupled (p *= 1 - lr * wd, then the Adam update without wd); bias correction
with the 1-based step count t; eps added after the square root of the
bias-corrected second moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray
Params = dict[str, Array]


class SGD:
    """Stochastic gradient descent with optional momentum and L2 weight decay (torch.optim.SGD)."""

    def __init__(self, params: Params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.step_count = 0
        self.state: dict[str, dict[str, Array]] = {}

    def step(self, grads: Params) -> None:
        self.step_count += 1
        for key, p in self.params.items():
            d_p = grads[key]
            if self.weight_decay != 0:
                d_p = d_p + self.weight_decay * p
            if self.momentum != 0:
                state = self.state.setdefault(key, {})
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = np.array(d_p, dtype=np.float64)
                else:
                    buf = state["momentum_buffer"]
                    buf *= self.momentum
                    buf += d_p
                d_p = state["momentum_buffer"]
            p -= self.lr * d_p

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "state": _copy_state(self.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        self.state = _copy_state(state["state"])


class Adam:
    """Adam with L2 weight decay added to the gradient (torch.optim.Adam)."""

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.params = params
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.step_count = 0
        self.state: dict[str, dict[str, Array]] = {}

    def decay(self, p: Array, grad: Array) -> Array:
        """The gradient that enters the moments: L2 decay adds wd * p to it."""
        if self.weight_decay != 0:
            return grad + self.weight_decay * p
        return grad

    def step(self, grads: Params) -> None:
        self.step_count += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1 ** self.step_count
        bias_correction2 = 1 - beta2 ** self.step_count
        for key, p in self.params.items():
            grad = self.decay(p, grads[key])
            state = self.state.setdefault(key, {})
            if not state:
                state["exp_avg"] = np.zeros_like(p)
                state["exp_avg_sq"] = np.zeros_like(p)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg *= beta1
            exp_avg += (1 - beta1) * grad
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            denom = np.sqrt(exp_avg_sq / bias_correction2) + self.eps
            p -= self.lr * (exp_avg / bias_correction1) / denom

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "state": _copy_state(self.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        self.state = _copy_state(state["state"])


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): p *= 1 - lr * wd before the Adam update."""

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def decay(self, p: Array, grad: Array) -> Array:
        p *= 1 - self.lr * self.weight_decay
        return grad


def _copy_state(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Array]]:
    """A deep copy of per-key buffers as float64 arrays (a state dict never aliases the optimizer's arrays)."""
    return {key: {name: np.array(value, dtype=np.float64) for name, value in buffers.items()}
            for key, buffers in state.items()}


# ---------------------------------------------------------------------------
# What the grader needs beyond the contract

OPTIMIZERS: dict[str, type[SGD] | type[Adam]] = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}
BUFFERS = {"SGD": ("momentum_buffer",), "Adam": ("exp_avg", "exp_avg_sq"), "AdamW": ("exp_avg", "exp_avg_sq")}


def make(name: str, params: Params, hyper: dict[str, Any]) -> SGD | Adam:
    """The reference optimizer `name` over params with the hyperparameters given as keywords."""
    return OPTIMIZERS[name](params, **hyper)


@dataclass(frozen=True)
class Step:
    """One step of a trajectory: lr set before it (None: unchanged), then step(grads)."""

    grads: Params
    lr: float | None = None


def copy_params(params: Params) -> Params:
    return {k: np.array(v, dtype=np.float64) for k, v in params.items()}


def trajectory(name: str, params: Params, hyper: dict[str, Any], steps: Sequence[Step],
               state: dict[str, Any] | None = None) -> tuple[list[Params], list[dict[str, Any]]]:
    """(params after each step, state_dict after each step) of the reference on copies of `params`.

    `state`: loaded with load_state_dict before the first step (a resumed run).
    """
    current = copy_params(params)
    opt = make(name, current, hyper)
    if state is not None:
        opt.load_state_dict(state)
    after, states = [], []
    for s in steps:
        if s.lr is not None:
            opt.lr = s.lr
        opt.step(s.grads)
        after.append(copy_params(current))
        states.append(opt.state_dict())
    return after, states


# The training task: logistic regression on generated, nearly separable data with badly scaled features
# (a condition number in the hundreds), mean cross-entropy plus nothing else. The grader computes the
# gradients; the optimizer only sees them.
TRAIN_N = 200
TRAIN_D = 6
FEATURE_SCALES = np.array([8.0, 3.0, 1.0, 1.0, 0.5, 0.2])


def training_data(seed: int) -> tuple[Array, Array]:
    """(X (N, D), y (N,) in {0, 1}) from a fixed linear rule with 5% label noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((TRAIN_N, TRAIN_D)) * FEATURE_SCALES
    w_true = rng.standard_normal(TRAIN_D) / FEATURE_SCALES
    y = ((X @ w_true + 0.3) > 0).astype(np.float64)
    flip = rng.random(TRAIN_N) < 0.05
    y[flip] = 1.0 - y[flip]
    return X, y


def logistic_loss(params: Params, X: Array, y: Array) -> tuple[float, Params]:
    """Mean binary cross-entropy of sigmoid(X w + b) and its gradients {"w": (D,), "b": (1,)}; stable for any logit."""
    z = X @ params["w"] + params["b"][0]
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    s = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
    d = (s - y) / X.shape[0]
    return loss, {"w": X.T @ d, "b": np.array([d.sum()])}


def initial_training_params() -> Params:
    return {"w": np.zeros(TRAIN_D), "b": np.zeros(1)}


def train(name: str, hyper: dict[str, Any], X: Array, y: Array, steps: int,
          lr_at: Any = None) -> tuple[Params, list[float]]:
    """The reference optimizer trained on the logistic problem: final params and the loss before each step
    and after the last. `lr_at(step)` (0-based) is the schedule, None for a constant lr."""
    params = initial_training_params()
    opt = make(name, params, hyper)
    losses = []
    for k in range(steps):
        if lr_at is not None:
            opt.lr = lr_at(k)
        loss, grads = logistic_loss(params, X, y)
        losses.append(loss)
        opt.step(grads)
    losses.append(logistic_loss(params, X, y)[0])
    return params, losses
