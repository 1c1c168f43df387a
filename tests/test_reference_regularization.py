"""The regularization reference against PyTorch (autograd, dropout, BatchNorm1d) in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import regularization as ref

# Batch-norm shapes (N, D): N >= 2, D = 1, D != N, one odd larger case.
BN_SHAPES = [(2, 3), (3, 1), (5, 4), (7, 10), (33, 6)]
# Never only 0.5: p = 0.5 cannot tell the drop probability from the keep probability.
DROPOUT_PS = [0.1, 0.25, 0.5, 0.8]
SEEDS = [0, 1]


def close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-12) -> None:
    """Assert equal shapes, finite values and a normwise relative error below rtol."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    denom = np.linalg.norm(actual) + np.linalg.norm(expected)
    err = np.linalg.norm(actual - expected) / denom if denom > 0 else 0.0
    assert err < rtol, f"relative error {err:.3e}"


def t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    """A float64 torch copy of a, optionally a leaf that records gradients."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------------------
# L2 penalty


@pytest.mark.parametrize("reg", [0.0, 1e-3, 0.7])
@pytest.mark.parametrize(
    "shapes",
    [
        None,
        {"W": (3, 2), "b": (2,)},
        {"Wx": (2, 3, 4), "Wh": (4, 4), "b": (4,), "gamma": (4,), "W_out": (4, 1)},
    ],
)
def test_l2_penalty_matches_autograd(reg: float, shapes: dict | None) -> None:
    params = ref.l2_inputs(3, shapes)
    before = {k: v.copy() for k, v in params.items()}
    loss, grads = ref.l2_penalty(params, reg)

    tensors = {k: t(v, grad=True) for k, v in params.items()}
    torch_loss = 0.5 * reg * sum((v**2).sum() for k, v in tensors.items() if k.startswith("W"))
    torch_loss.backward()

    assert isinstance(loss, float)
    assert math.isclose(loss, torch_loss.item(), rel_tol=1e-13, abs_tol=1e-15)
    assert set(grads) == set(params)
    for k, v in tensors.items():
        expected = v.grad.numpy() if v.grad is not None else np.zeros_like(params[k])
        assert grads[k].shape == params[k].shape
        np.testing.assert_allclose(grads[k], expected, rtol=1e-14, atol=0)
        if not k.startswith("W"):
            assert np.all(grads[k] == 0)
        np.testing.assert_array_equal(params[k], before[k])


# ---------------------------------------------------------------------------
# Dropout


@pytest.mark.parametrize("p", DROPOUT_PS)
def test_dropout_keeps_with_probability_one_minus_p_and_scales_like_torch(p: float) -> None:
    shape = (40, 50)
    x = ref.dropout_inputs(0, shape)
    x_before = x.copy()
    out, _ = ref.dropout_forward(x, p, True, seed=7)
    np.testing.assert_array_equal(x, x_before)

    kept = ref.dropout_kept(x, out)
    n = kept.size
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < 5 * sd

    # torch.nn.functional.dropout applied to ones shows its scale on every kept unit.
    torch.manual_seed(0)
    torch_kept_value = F.dropout(torch.ones(1000, dtype=torch.float64), p=p, training=True).max().item()
    np.testing.assert_allclose(out[kept] / x[kept], torch_kept_value, rtol=1e-15)
    assert np.all(out[~kept] == 0)


@pytest.mark.parametrize("p", DROPOUT_PS)
def test_dropout_is_unbiased_on_average(p: float) -> None:
    # E[out] = x is what the 1/(1-p) scaling is for; a 5-sigma bound on the mean of out / x.
    x = ref.dropout_inputs(1, (200, 100))
    out, _ = ref.dropout_forward(x, p, True, seed=11)
    ratio = out / x
    sd = math.sqrt(p / (1 - p))  # standard deviation of keep / (1 - p)
    assert abs(ratio.mean() - 1.0) < 5 * sd / math.sqrt(ratio.size)


def test_dropout_same_seed_same_mask_other_seed_other_mask() -> None:
    x = ref.dropout_inputs(2, (8, 9))
    a, _ = ref.dropout_forward(x, 0.3, True, seed=5)
    b, _ = ref.dropout_forward(x, 0.3, True, seed=5)
    c, _ = ref.dropout_forward(x, 0.3, True, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ref.dropout_kept(x, a), ref.dropout_kept(x, c))
    # The mask depends on the seed, not on the values of x.
    y = ref.dropout_inputs(3, (8, 9))
    d, _ = ref.dropout_forward(y, 0.3, True, seed=5)
    np.testing.assert_array_equal(ref.dropout_kept(x, a), ref.dropout_kept(y, d))


@pytest.mark.parametrize("p, train", [(0.3, False), (0.9, False), (0.0, True), (0.0, False)])
def test_dropout_is_identity_in_eval_or_at_p_zero(p: float, train: bool) -> None:
    x = ref.dropout_inputs(4, (3, 4, 5))
    out, cache = ref.dropout_forward(x, p, train, seed=1)
    np.testing.assert_array_equal(out, x)
    assert out is not x
    dout = np.random.default_rng(0).standard_normal(x.shape)
    np.testing.assert_array_equal(ref.dropout_backward(dout, cache), dout)


@pytest.mark.parametrize("p", DROPOUT_PS)
@pytest.mark.parametrize("shape", [(2, 3), (4, 3, 5)])
def test_dropout_backward_matches_autograd_through_the_forward_mask(p: float, shape: tuple[int, ...]) -> None:
    x = ref.dropout_inputs(5, shape)
    out, cache = ref.dropout_forward(x, p, True, seed=9)
    dout = np.random.default_rng(1).standard_normal(shape)
    dx = ref.dropout_backward(dout, cache)

    keep = t(ref.dropout_kept(x, out).astype(np.float64))
    xt = t(x, grad=True)
    (xt * keep / (1 - p)).backward(t(dout))
    close(out, (t(x) * keep / (1 - p)).numpy(), rtol=1e-15)
    close(dx, xt.grad.numpy(), rtol=1e-15)


def test_dropout_p_one_drops_everything_like_torch() -> None:
    x = ref.dropout_inputs(6, (3, 3))
    out, cache = ref.dropout_forward(x, 1.0, True, seed=0)
    np.testing.assert_array_equal(out, F.dropout(t(x), p=1.0, training=True).numpy())
    assert np.all(ref.dropout_backward(np.ones_like(x), cache) == 0)


def test_dropout_kept_refuses_inputs_with_zeros() -> None:
    with pytest.raises(ValueError, match="zeros"):
        ref.dropout_kept(np.array([0.0, 1.0]), np.array([0.0, 2.0]))


# ---------------------------------------------------------------------------
# Batch norm


def torch_bn(D: int, momentum: float, eps: float, gamma: np.ndarray, beta: np.ndarray) -> torch.nn.BatchNorm1d:
    """A float64 BatchNorm1d holding gamma and beta, with fresh running statistics (zeros / ones)."""
    bn = torch.nn.BatchNorm1d(D, eps=eps, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(t(gamma))
        bn.bias.copy_(t(beta))
    return bn


@pytest.mark.parametrize("momentum, eps", [(0.1, 1e-5), (0.3, 1e-3)])
@pytest.mark.parametrize("N, D", BN_SHAPES)
def test_batchnorm_train_steps_then_eval_match_batchnorm1d(N: int, D: int, momentum: float, eps: float) -> None:
    p = ref.batchnorm_inputs(0, N, D)
    batches = ref.batchnorm_batches(1, 4, N, D)
    bn = torch_bn(D, momentum, eps, p["gamma"], p["beta"])
    running_mean, running_var = np.zeros(D), np.ones(D)
    bn_param = {"mode": "train", "eps": eps, "momentum": momentum, "running_mean": running_mean,
                "running_var": running_var}

    bn.train()
    for x in batches:
        x_before = x.copy()
        out, _ = ref.batchnorm_forward(x, p["gamma"], p["beta"], bn_param)
        np.testing.assert_array_equal(x, x_before)
        close(out, bn(t(x)).detach().numpy())
        close(bn_param["running_mean"], bn.running_mean.numpy())
        close(bn_param["running_var"], bn.running_var.numpy())
    # Updated in place: the arrays the caller handed in hold the new statistics.
    assert bn_param["running_mean"] is running_mean and bn_param["running_var"] is running_var

    bn.eval()
    x = p["x"]
    out, _ = ref.batchnorm_forward(x, p["gamma"], p["beta"], {**bn_param, "mode": "eval"})
    close(out, bn(t(x)).detach().numpy())
    close(out, ref.batchnorm_eval(x, p["gamma"], p["beta"], running_mean, running_var, eps))


def test_batchnorm_defaults_are_torchs_and_running_stats_are_created() -> None:
    p = ref.batchnorm_inputs(2, 6, 3)
    bn_param: dict = {"mode": "train"}
    out, _ = ref.batchnorm_forward(p["x"], p["gamma"], p["beta"], bn_param)
    bn = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(t(p["gamma"]))
        bn.bias.copy_(t(p["beta"]))
    close(out, bn(t(p["x"])).detach().numpy())
    close(bn_param["running_mean"], bn.running_mean.numpy())
    close(bn_param["running_var"], bn.running_var.numpy())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("N, D", BN_SHAPES)
def test_batchnorm_backward_matches_autograd(N: int, D: int, seed: int) -> None:
    p = ref.batchnorm_inputs(seed, N, D)
    out, cache = ref.batchnorm_forward(p["x"], p["gamma"], p["beta"], {"mode": "train"})
    dout = np.random.default_rng(seed + 100).standard_normal((N, D))
    dx, dgamma, dbeta = ref.batchnorm_backward(dout, cache)

    x, gamma, beta = t(p["x"], True), t(p["gamma"], True), t(p["beta"], True)
    out_t = F.batch_norm(x, None, None, gamma, beta, training=True, eps=ref.BN_EPS)
    out_t.backward(t(dout))
    close(out, out_t.detach().numpy())
    # dx sums terms that cancel to a small vector (it is orthogonal to the ones vector
    # and to x_hat per feature): 1e-10 still catches any missing term by many orders.
    close(dx, x.grad.numpy(), rtol=1e-10)
    close(dgamma, gamma.grad.numpy())
    close(dbeta, beta.grad.numpy())


def test_batchnorm_is_accurate_for_a_large_offset_and_a_tiny_spread() -> None:
    rng = np.random.default_rng(3)
    x = 1e4 + 1e-2 * rng.standard_normal((8, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    out, cache = ref.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dout = rng.standard_normal((8, 3))
    dx, _, _ = ref.batchnorm_backward(dout, cache)
    xt = t(x, True)
    out_t = F.batch_norm(xt, None, None, t(gamma), t(beta), training=True, eps=ref.BN_EPS)
    out_t.backward(t(dout))
    close(out, out_t.detach().numpy(), rtol=1e-9)
    close(dx, xt.grad.numpy(), rtol=1e-8)


def test_batchnorm_rejects_a_single_row_and_an_unknown_mode() -> None:
    p = ref.batchnorm_inputs(0, 1, 3)
    with pytest.raises(ValueError, match="at least 2 rows"):
        ref.batchnorm_forward(p["x"], p["gamma"], p["beta"], {"mode": "train"})
    with pytest.raises(ValueError, match="mode"):
        ref.batchnorm_forward(p["x"], p["gamma"], p["beta"], {"mode": "test"})


@pytest.mark.parametrize("momentum", [0.1, 0.25])
def test_running_stats_trace_follows_torch_and_its_variants_differ(momentum: float) -> None:
    N, D = 5, 4
    batches = ref.batchnorm_batches(4, 3, N, D)
    bn = torch.nn.BatchNorm1d(D, momentum=momentum, dtype=torch.float64)
    trace = ref.running_stats_trace(batches, momentum)
    for x, stats in zip(batches, trace):
        bn(t(x))
        close(stats.mean, bn.running_mean.numpy())
        close(stats.var, bn.running_var.numpy())

    course = ref.running_stats_trace(batches, momentum, momentum_weights_batch=False)
    biased = ref.running_stats_trace(batches, momentum, unbiased=False)
    assert not np.allclose(course[-1].mean, trace[-1].mean, rtol=1e-3)
    assert not np.allclose(biased[-1].var, trace[-1].var, rtol=1e-3)
    np.testing.assert_array_equal(biased[-1].mean, trace[-1].mean)


# ---------------------------------------------------------------------------
# Early stopping


def stops_by_history(values: list[float], patience: int, min_delta: float, mode: str) -> list[tuple[bool, float, int]]:
    """An independent reading of the contract, from the whole history at each epoch."""
    sign = -1.0 if mode == "min" else 1.0
    improved = []
    best, best_epoch = values[0], 0
    states = []
    for epoch, value in enumerate(values):
        if epoch == 0 or sign * (value - best) > min_delta:
            best, best_epoch = value, epoch
            improved.append(True)
        else:
            improved.append(False)
        recent = improved[-patience:] if patience > 0 else []
        stop = len(recent) == patience and not any(recent)
        states.append((stop, best, best_epoch))
    return states


def test_early_stopping_hand_cases() -> None:
    # patience 2, min mode: epochs 1 and 2 bring nothing, so epoch 2 stops.
    assert [s.stop for s in ref.early_stopping_trace([3.0, 3.0, 3.5], 2)] == [False, False, True]
    # An improvement resets the count.
    trace = ref.early_stopping_trace([3.0, 4.0, 2.0, 2.5, 2.4], 2)
    assert [s.stop for s in trace] == [False, False, False, False, True]
    assert (trace[-1].best_value, trace[-1].best_epoch) == (2.0, 2)
    # Gains of 0.05, 0.08, 0.06 are not above min_delta 0.1: no improvement, best stays at epoch 0.
    trace = ref.early_stopping_trace([1.0, 0.95, 0.92, 0.94], 3, min_delta=0.1)
    assert [s.stop for s in trace] == [False, False, False, True]
    assert (trace[-1].best_value, trace[-1].best_epoch) == (1.0, 0)
    # Max mode: rising accuracy is an improvement.
    trace = ref.early_stopping_trace([0.5, 0.6, 0.7, 0.7, 0.69], 2, mode="max")
    assert [s.stop for s in trace] == [False, False, False, False, True]
    assert (trace[-1].best_value, trace[-1].best_epoch) == (0.7, 2)


def test_early_stopping_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        ref.EarlyStopping(3, mode="minimum")


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    values=st.lists(st.integers(-20, 20).map(lambda v: v / 4), min_size=1, max_size=25),
    patience=st.integers(1, 5),
    min_delta=st.sampled_from([0.0, 0.1, 0.6, 1.1]),
    mode=st.sampled_from(ref.MODES),
)
def test_early_stopping_matches_the_history_reading(
    values: list[float], patience: int, min_delta: float, mode: str
) -> None:
    # Values on a grid of 0.25 and min_delta off the grid: no gain is ever exactly min_delta.
    trace = ref.early_stopping_trace(values, patience, min_delta, mode)
    expected = stops_by_history(values, patience, min_delta, mode)
    assert [(s.stop, s.best_value, s.best_epoch) for s in trace] == expected
    assert all(isinstance(s.stop, bool) for s in trace)


def test_improvement_margin_measures_the_distance_to_the_threshold() -> None:
    assert ref.improvement_margin([1.0], 0.1) == math.inf
    # gains against the best: 0.3 (improves, best 0.7), then -0.1 -> margins 0.2 and 0.2
    assert math.isclose(ref.improvement_margin([1.0, 0.7, 0.8], 0.1), 0.2)
    assert math.isclose(ref.improvement_margin([1.0, 1.1], 0.1, mode="max"), 0.0, abs_tol=1e-12)
