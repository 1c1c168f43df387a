"""Regularization from scratch: L2 penalty, dropout, batch norm and early stopping, in numpy only.

Every array is float64. Each `*_forward` returns its output and a `cache` that
only your own `*_backward` ever reads; each `*_backward` returns the gradients
of the loss with respect to the forward's inputs, in the order given.
Do not modify the arrays you are given (batch norm's running statistics in
bn_param are the one exception: a train step updates them).
"""

from typing import Any

import numpy as np


def l2_penalty(params: dict[str, np.ndarray], reg: float) -> tuple[float, dict[str, np.ndarray]]:
    """L2 weight penalty and its gradient.

    loss = 0.5 * reg * (sum of squares of every params[k] whose key k starts with "W").
    Returns (loss, grads): loss a float, grads a dict with a key for every key of
    params, each shaped like its param (zeros for the keys that are not penalised).
    """
    raise NotImplementedError("l2_penalty: return (loss, grads)")


def dropout_forward(x: np.ndarray, p: float, train: bool, seed: int) -> tuple[np.ndarray, Any]:
    """Inverted dropout on x of any shape.

    p is the probability of DROPPING a unit (PyTorch's meaning); kept units are
    scaled by 1 / (1 - p). When train is False or p == 0, out equals x.
    Draw the mask from np.random.default_rng(seed): the same seed gives the same mask.
    Returns (out, cache) with out shaped like x.
    """
    raise NotImplementedError("dropout_forward: return (out, cache)")


def dropout_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Backward pass of dropout_forward: returns dx, shaped like dout."""
    raise NotImplementedError("dropout_backward: return dx")


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict[str, Any]
) -> tuple[np.ndarray, Any]:
    """Batch normalization over the batch dimension, as torch.nn.BatchNorm1d.

    x: (N, D), gamma: (D,), beta: (D,).
    bn_param: "mode" ("train" or "eval"), "eps" (default 1e-5), "momentum"
    (default 0.1), "running_mean" (D,) and "running_var" (D,) (zeros and ones
    when absent).
    train: normalize with the batch mean and the biased batch variance, then
    update in bn_param
        running = (1 - momentum) * running + momentum * batch_stat
    with the UNBIASED batch variance for running_var.
    eval: normalize with running_mean and running_var; nothing is updated.
    Returns (out, cache) with out: (N, D).
    """
    raise NotImplementedError("batchnorm_forward: return (out, cache)")


def batchnorm_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of a train-mode batchnorm_forward.

    dout: (N, D). Returns (dx, dgamma, dbeta) with dx: (N, D), dgamma: (D,), dbeta: (D,).
    """
    raise NotImplementedError("batchnorm_backward: return (dx, dgamma, dbeta)")


class EarlyStopping:
    """Decides when to stop training from one monitored value per epoch.

    mode "min": lower is better (a loss); mode "max": higher is better (an accuracy).
    An epoch improves when it beats the best value so far by more than min_delta.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, mode: str = "min") -> None:
        raise NotImplementedError("EarlyStopping.__init__: store the settings and set up the state")

    def step(self, value: float) -> bool:
        """Record this epoch's value; return True once `patience` epochs in a row brought no improvement.

        Keep the attributes best_value (the best value so far) and best_epoch
        (its epoch, counting the first call to step as epoch 0) up to date.
        """
        raise NotImplementedError("EarlyStopping.step: return True when training should stop")
