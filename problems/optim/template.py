"""Optimizers from scratch: SGD with momentum, Adam and AdamW, in numpy only, as torch.optim defines them.

`params` is a dict of float64 arrays; step(grads) updates those arrays IN PLACE
(the same array objects keep the new values) and never modifies `grads`.
`lr` is a plain attribute a schedule may change between steps; every step
uses its current value. See the statement for the exact update rules and the
state_dict() layout.
"""

from typing import Any

import numpy as np


class SGD:
    """SGD with momentum (v = momentum * v + g, v = g at the first step; p -= lr * v) and L2 weight decay."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        raise NotImplementedError("SGD.__init__: keep params (the dict itself), the hyperparameters and the state")

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Update every params[key] in place from grads[key] (grads are left unchanged)."""
        raise NotImplementedError("SGD.step: update the params in place")

    def state_dict(self) -> dict[str, Any]:
        """{"step": number of step() calls, "state": {key: {"momentum_buffer": array}}}."""
        raise NotImplementedError("SGD.state_dict: return the step count and the momentum buffers")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step count and the buffers from a dict laid out as state_dict()'s."""
        raise NotImplementedError("SGD.load_state_dict: restore the step count and the buffers")


class Adam:
    """Adam with L2 weight decay (g + weight_decay * p enters the moments), bias correction with t = 1, 2, ..."""

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        raise NotImplementedError("Adam.__init__: keep params (the dict itself), the hyperparameters and the state")

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """p -= lr * m_hat / (sqrt(v_hat) + eps) for every key, in place."""
        raise NotImplementedError("Adam.step: update the params in place")

    def state_dict(self) -> dict[str, Any]:
        """{"step": number of step() calls, "state": {key: {"exp_avg": array, "exp_avg_sq": array}}}."""
        raise NotImplementedError("Adam.state_dict: return the step count and the moments")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step count and the moments from a dict laid out as state_dict()'s."""
        raise NotImplementedError("Adam.load_state_dict: restore the step count and the moments")


class AdamW:
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay, then the Adam update without decay."""

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        raise NotImplementedError("AdamW.__init__: keep params (the dict itself), the hyperparameters and the state")

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Decay, then the Adam update, in place."""
        raise NotImplementedError("AdamW.step: update the params in place")

    def state_dict(self) -> dict[str, Any]:
        """{"step": number of step() calls, "state": {key: {"exp_avg": array, "exp_avg_sq": array}}}."""
        raise NotImplementedError("AdamW.state_dict: return the step count and the moments")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step count and the moments from a dict laid out as state_dict()'s."""
        raise NotImplementedError("AdamW.load_state_dict: restore the step count and the moments")
