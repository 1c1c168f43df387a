"""Reference regularization layers (numpy, float64), PyTorch's conventions.

Trusted grader code, never shipped into a sandbox. The public functions and
`EarlyStopping` follow the `regularization` contract in PROBLEMS.md exactly;
the helpers after them give the grader what it needs beyond the contract:
reading a dropout mask back from an output, the running statistics a sequence
of batch-norm train steps must leave behind (in PyTorch's convention and in
the course convention, to name the one a candidate used), the trace an
early-stopping rule must produce over a whole sequence, and seeded inputs.

Conventions: dropout's p is the probability of dropping a unit; batch norm's
running statistics move as running = (1 - momentum) * running + momentum * batch,
with the unbiased batch variance in running_var and the biased one for
normalizing (torch.nn.BatchNorm1d); best_epoch counts from 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray

# Defaults of bn_param, as torch.nn.BatchNorm1d's.
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
MODES = ("min", "max")


# ---------------------------------------------------------------------------
# L2 penalty


def is_weight_key(key: str) -> bool:
    """True for the keys the contract's L2 term penalises: those starting with "W"."""
    return key.startswith("W")


def l2_penalty(params: dict[str, Array], reg: float) -> tuple[float, dict[str, Array]]:
    """0.5 * reg * sum of squares of every params[k] with k starting with "W", and its gradient for every key."""
    loss = 0.0
    grads: dict[str, Array] = {}
    for key, value in params.items():
        if is_weight_key(key):
            loss += 0.5 * reg * float(np.sum(value * value))
            grads[key] = reg * value
        else:
            grads[key] = np.zeros_like(value)
    return loss, grads


# ---------------------------------------------------------------------------
# Dropout


def dropout_keep_mask(shape: tuple[int, ...], p: float, seed: int) -> Array:
    """The reference's boolean mask of kept units: each kept with probability 1 - p, a function of the seed only."""
    rng = np.random.default_rng(seed)
    return rng.random(shape) >= p


def dropout_forward(x: Array, p: float, train: bool, seed: int) -> tuple[Array, Any]:
    """Inverted dropout: drop each unit with probability p, scale kept units by 1/(1-p).

    The identity in eval mode or at p == 0."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
    if not train or p == 0.0:
        return x.copy(), None
    keep = dropout_keep_mask(x.shape, p, seed)
    # p == 1 drops everything, as torch.nn.functional.dropout does, instead of dividing by zero.
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    multiplier = keep * scale
    return x * multiplier, multiplier


def dropout_backward(dout: Array, cache: Any) -> Array:
    """Gradient of dropout_forward: dout through the forward's own mask and scale."""
    multiplier = cache
    if multiplier is None:
        return dout.copy()
    return dout * multiplier


# ---------------------------------------------------------------------------
# Batch normalization


def _running_stats(bn_param: dict[str, Any], D: int) -> tuple[Array, Array]:
    """bn_param's running mean and variance, created (zeros / ones) and stored in it when absent."""
    if bn_param.get("running_mean") is None:
        bn_param["running_mean"] = np.zeros(D)
    if bn_param.get("running_var") is None:
        bn_param["running_var"] = np.ones(D)
    return bn_param["running_mean"], bn_param["running_var"]


def batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict[str, Any]) -> tuple[Array, Any]:
    """Batch norm over the N rows of x (N, D); a train step updates bn_param's running statistics in place."""
    mode = bn_param.get("mode", "train")
    eps = float(bn_param.get("eps", BN_EPS))
    momentum = float(bn_param.get("momentum", BN_MOMENTUM))
    N, D = x.shape
    running_mean, running_var = _running_stats(bn_param, D)

    if mode == "train":
        if N < 2:
            # The unbiased variance is undefined; torch.nn.BatchNorm1d refuses too.
            raise ValueError(f"batch norm in train mode needs at least 2 rows, got N={N}")
        mean = x.mean(axis=0)
        centered = x - mean
        var = (centered**2).mean(axis=0)  # biased: what the batch is normalized with
        inv_std = 1.0 / np.sqrt(var + eps)
        x_hat = centered * inv_std
        out = gamma * x_hat + beta
        unbiased_var = var * (N / (N - 1))
        # In place, so a caller holding these arrays sees the update as with PyTorch's buffers.
        running_mean *= 1.0 - momentum
        running_mean += momentum * mean
        running_var *= 1.0 - momentum
        running_var += momentum * unbiased_var
        cache = (x_hat, gamma, inv_std)
        return out, cache
    if mode == "eval":
        x_hat = (x - running_mean) / np.sqrt(running_var + eps)
        return gamma * x_hat + beta, None
    raise ValueError(f'bn_param["mode"] must be "train" or "eval", got {mode!r}')


def batchnorm_backward(dout: Array, cache: Any) -> tuple[Array, Array, Array]:
    """Gradients (dx, dgamma, dbeta) of a train-mode batchnorm_forward for upstream dout (N, D)."""
    if cache is None:
        raise ValueError("batchnorm_backward needs the cache of a train-mode forward")
    x_hat, gamma, inv_std = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout * gamma
    # The compact form of the gradient through x_hat, the batch mean and the batch variance.
    dx = (inv_std / N) * (N * dx_hat - dx_hat.sum(axis=0) - x_hat * (dx_hat * x_hat).sum(axis=0))
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------
# Early stopping


class EarlyStopping:
    """Stop when `patience` epochs in a row improved on the best value by no more than min_delta."""

    def __init__(self, patience: int, min_delta: float = 0.0, mode: str = "min") -> None:
        if mode not in MODES:
            raise ValueError(f'mode must be "min" or "max", got {mode!r}')
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.epochs_seen = 0
        self.epochs_without_improvement = 0

    def improves(self, value: float) -> bool:
        """True when value beats the best so far by strictly more than min_delta."""
        if self.best_value is None:
            return True
        if self.mode == "min":
            return self.best_value - value > self.min_delta
        return value - self.best_value > self.min_delta

    def step(self, value: float) -> bool:
        """Record one epoch's value; True when training should stop."""
        if self.improves(value):
            self.best_value = float(value)
            self.best_epoch = self.epochs_seen
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        self.epochs_seen += 1
        return self.epochs_without_improvement >= self.patience


# ---------------------------------------------------------------------------
# Grader helpers: dropout


def dropout_kept(x: Array, out: Array) -> Array:
    """Which units a dropout output kept, read back from it: True where out != 0 (x must have no zeros)."""
    if np.any(x == 0):
        raise ValueError("x has zeros: a dropped unit cannot be told from a kept zero")
    return out != 0


def dropout_inputs(seed: int, shape: tuple[int, ...], low: float = 0.5, high: float = 2.0) -> Array:
    """Values of random sign with magnitude in [low, high], so kept and dropped units are told apart exactly."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


# ---------------------------------------------------------------------------
# Grader helpers: batch norm


@dataclass(frozen=True)
class RunningStats:
    """Running mean and variance of a batch-norm layer after one train step."""

    mean: Array
    var: Array


def running_stats_trace(
    batches: Iterable[Array],
    momentum: float = BN_MOMENTUM,
    running_mean: Array | None = None,
    running_var: Array | None = None,
    *,
    momentum_weights_batch: bool = True,
    unbiased: bool = True,
) -> list[RunningStats]:
    """Running statistics after each train step over `batches`, in PyTorch's convention by default.

    momentum_weights_batch=False is the course convention (running = momentum *
    running + (1 - momentum) * batch); unbiased=False puts the biased batch
    variance in running_var. The grader uses the variants to name a convention.
    """
    trace: list[RunningStats] = []
    mean_now = None if running_mean is None else np.array(running_mean, dtype=np.float64)
    var_now = None if running_var is None else np.array(running_var, dtype=np.float64)
    weight_on_batch = momentum if momentum_weights_batch else 1.0 - momentum
    for x in batches:
        N, D = x.shape
        mean_now = np.zeros(D) if mean_now is None else mean_now
        var_now = np.ones(D) if var_now is None else var_now
        batch_var = x.var(axis=0, ddof=1 if unbiased else 0)
        mean_now = (1.0 - weight_on_batch) * mean_now + weight_on_batch * x.mean(axis=0)
        var_now = (1.0 - weight_on_batch) * var_now + weight_on_batch * batch_var
        trace.append(RunningStats(mean_now.copy(), var_now.copy()))
    return trace


def batchnorm_eval(
    x: Array, gamma: Array, beta: Array, running_mean: Array, running_var: Array, eps: float = BN_EPS
) -> Array:
    """Eval-mode batch norm with the given running statistics."""
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


def batchnorm_inputs(seed: int, N: int, D: int) -> dict[str, Array]:
    """x (N, D) with a different mean and spread per feature, and non-trivial gamma and beta."""
    rng = np.random.default_rng(seed)
    # Per-feature offsets and scales away from 0 and 1, so every running statistic
    # differs visibly from its initial zeros / ones and from the batch's own statistics.
    offset = rng.uniform(-3.0, 3.0, size=D)
    spread = rng.uniform(0.5, 3.0, size=D)
    return {
        "x": offset + spread * rng.standard_normal((N, D)),
        "gamma": rng.uniform(0.5, 2.0, size=D) * rng.choice([-1.0, 1.0], size=D),
        "beta": rng.standard_normal(D),
    }


def batchnorm_batches(seed: int, steps: int, N: int, D: int) -> list[Array]:
    """`steps` batches (N, D) from one per-feature distribution, for several train steps in a row."""
    rng = np.random.default_rng(seed)
    offset = rng.uniform(-3.0, 3.0, size=D)
    spread = rng.uniform(0.5, 3.0, size=D)
    return [offset + spread * rng.standard_normal((N, D)) for _ in range(steps)]


# ---------------------------------------------------------------------------
# Grader helpers: early stopping and L2


@dataclass(frozen=True)
class StopState:
    """What an EarlyStopping must show after one step: its answer and its attributes."""

    stop: bool
    best_value: float
    best_epoch: int


def early_stopping_trace(
    values: Sequence[float], patience: int, min_delta: float = 0.0, mode: str = "min"
) -> list[StopState]:
    """The state after each step of a fresh EarlyStopping fed `values`."""
    stopper = EarlyStopping(patience, min_delta, mode)
    trace = []
    for value in values:
        stop = stopper.step(value)
        assert stopper.best_value is not None and stopper.best_epoch is not None
        trace.append(StopState(stop, stopper.best_value, stopper.best_epoch))
    return trace


def improvement_margin(values: Sequence[float], min_delta: float = 0.0, mode: str = "min") -> float:
    """Smallest |gain - min_delta| over the sequence, gain measured against the best so far.

    Where it is near zero, whether an epoch improved depends on rounding or on
    reading "greater than" as "at least": a convention, not a bug. The grader
    only grades sequences whose margin is comfortably positive.
    """
    margin = np.inf
    best = None
    sign = 1.0 if mode == "max" else -1.0
    for value in values:
        if best is not None:
            gain = sign * (value - best)
            margin = min(margin, abs(gain - min_delta))
            if gain > min_delta:
                best = value
        else:
            best = value
    return float(margin)


def l2_inputs(seed: int, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Array]:
    """A params dict of Gaussian arrays: weights ("W..."), biases and other keys the penalty must leave alone."""
    rng = np.random.default_rng(seed)
    if shapes is None:
        shapes = {"W1": (4, 3), "b1": (3,), "W2": (3, 5), "b2": (5,), "gamma1": (3,), "beta1": (3,)}
    return {k: rng.standard_normal(shape) for k, shape in shapes.items()}
