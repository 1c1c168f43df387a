"""The mlp reference against PyTorch (torch.nn.functional and autograd) in float64."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference import mlp as ref

# x shapes with N >= 2, 2-D and 3+-dim inputs, paired with an output size M != D.
AFFINE_CASES = [((2, 3), 5), ((3, 4, 5), 7), ((4, 2, 3, 2), 5), ((5, 1), 3), ((2, 6), 4)]
# (N, C): N >= 2, C not a power of two, a binary case and a wide one.
SOFTMAX_CASES = [(2, 3), (5, 10), (7, 2), (16, 13)]
# (N, D, H, C): N >= 2, all sizes distinct.
NET_CASES = [(2, 3, 4, 5), (6, 20, 7, 10), (9, 5, 16, 3)]
SEEDS = [0, 1]


def close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-12) -> None:
    """Assert equal shapes, finite values and a normwise relative error below rtol."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual))
    denom = np.linalg.norm(actual) + np.linalg.norm(expected)
    err = np.linalg.norm(actual - expected) / denom if denom > 0 else 0.0
    assert err < rtol, f"relative error {err:.3e}"


def t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    """A float64 torch copy of a, optionally a leaf that records gradients."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def torch_net_loss(
    p: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray, reg: float
) -> tuple[float, dict[str, np.ndarray]]:
    """The contract's TwoLayerNet loss and gradients computed by torch autograd."""
    tp = {k: t(v, grad=True) for k, v in p.items()}
    hidden = torch.relu(t(X).reshape(X.shape[0], -1) @ tp["W1"] + tp["b1"])
    scores = hidden @ tp["W2"] + tp["b2"]
    loss = F.cross_entropy(scores, torch.tensor(y)) + 0.5 * reg * ((tp["W1"] ** 2).sum() + (tp["W2"] ** 2).sum())
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in tp.items()}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("x_shape, M", AFFINE_CASES)
def test_affine_matches_linear_and_autograd(seed: int, x_shape: tuple[int, ...], M: int) -> None:
    p = ref.affine_inputs(seed, x_shape, M)
    out, cache = ref.affine_forward(p["x"], p["w"], p["b"])
    dout = np.random.default_rng(seed + 100).standard_normal(out.shape)
    dx, dw, db = ref.affine_backward(dout, cache)

    x, w, b = t(p["x"], True), t(p["w"], True), t(p["b"], True)
    # torch.nn.functional.linear takes the (M, D) weight: the contract's w transposed.
    expected = F.linear(x.reshape(x_shape[0], -1), w.T, b)
    expected.backward(t(dout))

    assert out.shape == (x_shape[0], M)
    close(out, expected.detach().numpy())
    assert dx.shape == x_shape, "dx must have x's original shape"
    close(dx, x.grad.numpy())
    close(dw, w.grad.numpy())
    close(db, b.grad.numpy())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(2, 3), (3, 4, 5), (4, 2, 3, 2)])
def test_relu_matches_autograd_away_from_zero(seed: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    x_np = ref.away_from_zero(rng, shape)
    dout = rng.standard_normal(shape)
    out, cache = ref.relu_forward(x_np)
    dx = ref.relu_backward(dout, cache)

    x = t(x_np, True)
    expected = torch.relu(x)
    expected.backward(t(dout))
    close(out, expected.detach().numpy())
    close(dx, x.grad.numpy())
    assert np.any(x_np < 0) and np.any(x_np > 0), "inputs must cover both sides of the kink"


def test_relu_subgradient_at_zero_is_zero_like_pytorch() -> None:
    x = np.array([[-1.0, 0.0, 2.0], [0.0, 3.0, -0.5]])
    dout = np.arange(1.0, 7.0).reshape(2, 3)
    _, cache = ref.relu_forward(x)
    np.testing.assert_array_equal(ref.relu_backward(dout, cache), [[0.0, 0.0, 3.0], [0.0, 5.0, 0.0]])


@pytest.mark.parametrize("scale", [1.0, 30.0])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("N, C", SOFTMAX_CASES)
def test_softmax_cross_entropy_matches_torch(seed: int, N: int, C: int, scale: float) -> None:
    p = ref.classification_inputs(seed, N, C, scale=scale)
    loss, dlogits = ref.softmax_cross_entropy(p["logits"], p["y"])

    logits = t(p["logits"], True)
    expected = F.cross_entropy(logits, torch.tensor(p["y"]), reduction="mean")
    expected.backward()
    assert isinstance(loss, float)
    close(np.array(loss), expected.detach().numpy())
    close(dlogits, logits.grad.numpy())


@pytest.mark.parametrize("magnitude", [1e3, 1e4, 1e6])
@pytest.mark.parametrize("N, C", [(4, 10), (3, 2)])
def test_softmax_cross_entropy_is_finite_and_exact_on_huge_logits(N: int, C: int, magnitude: float) -> None:
    p = ref.large_logits(0, N, C, magnitude=magnitude)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        loss, dlogits = ref.softmax_cross_entropy(p["logits"], p["y"])

    logits = t(p["logits"], True)
    expected = F.cross_entropy(logits, torch.tensor(p["y"]))
    expected.backward()
    close(np.array(loss), expected.detach().numpy())
    close(dlogits, logits.grad.numpy())


def test_large_logits_break_a_softmax_without_max_subtraction() -> None:
    """The stability input is only useful if the naive formula really fails on it."""
    logits = ref.large_logits(0, 4, 10)["logits"]
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(logits)
        naive = e / e.sum(axis=1, keepdims=True)
    assert not np.all(np.isfinite(naive))
    # ... while the true probabilities are all strictly inside (0, 1).
    probs = np.exp(ref.log_softmax(logits))
    assert np.all((probs > 1e-6) & (probs < 1 - 1e-6))


@pytest.mark.parametrize("reg", [0.0, 0.7])
@pytest.mark.parametrize("N, D, H, C", NET_CASES)
def test_two_layer_net_loss_and_grads_match_autograd(N: int, D: int, H: int, C: int, reg: float) -> None:
    model = ref.TwoLayerNet(D, H, C, weight_scale=0.5, reg=reg, seed=3)
    rng = np.random.default_rng(N * 100 + D)
    X = rng.standard_normal((N, D))
    y = rng.integers(0, C, size=N)

    loss, grads = model.loss(X, y)
    expected_loss, expected_grads = torch_net_loss(model.params, X, y, reg)
    close(np.array(loss), np.array(expected_loss))
    assert set(grads) == set(model.params)
    for k in ref.PARAM_KEYS:
        assert grads[k].shape == model.params[k].shape
        close(grads[k], expected_grads[k])

    scores = model.loss(X)
    assert scores.shape == (N, C)
    close(scores, ref.mlp_scores(model.params, X))


def test_two_layer_net_reg_adds_exactly_the_l2_term() -> None:
    plain = ref.TwoLayerNet(6, 5, 4, weight_scale=0.3, reg=0.0, seed=1)
    regularized = ref.TwoLayerNet(6, 5, 4, weight_scale=0.3, reg=0.25, seed=1)
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((3, 6)), np.array([0, 3, 1])
    loss0, grads0 = plain.loss(X, y)
    loss1, grads1 = regularized.loss(X, y)
    p = plain.params
    expected_term = 0.5 * 0.25 * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
    assert loss1 - loss0 == pytest.approx(expected_term, rel=1e-12)
    close(grads1["W1"] - grads0["W1"], 0.25 * p["W1"])
    close(grads1["W2"] - grads0["W2"], 0.25 * p["W2"])
    np.testing.assert_array_equal(grads1["b1"], grads0["b1"])
    np.testing.assert_array_equal(grads1["b2"], grads0["b2"])


def test_two_layer_net_init_follows_the_contract() -> None:
    a = ref.TwoLayerNet(20, 300, 10, weight_scale=0.05, seed=7)
    b = ref.TwoLayerNet(20, 300, 10, weight_scale=0.05, seed=7)
    c = ref.TwoLayerNet(20, 300, 10, weight_scale=0.05, seed=8)
    shapes = {"W1": (20, 300), "b1": (300,), "W2": (300, 10), "b2": (10,)}
    assert {k: v.shape for k, v in a.params.items()} == shapes
    assert all(v.dtype == np.float64 for v in a.params.values())
    for k in ref.PARAM_KEYS:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params["W1"], c.params["W1"])
    assert not a.params["b1"].any() and not a.params["b2"].any()
    # 6,000 draws: the sample standard deviation is within 3% of weight_scale.
    assert a.params["W1"].std() == pytest.approx(0.05, rel=0.03)


def test_sgd_step_updates_the_same_arrays_in_place() -> None:
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s) for k, s in [("W1", (3, 4)), ("b1", (4,)), ("W2", (4, 2)), ("b2", (2,))]}
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    arrays = {k: v for k, v in params.items()}
    assert ref.sgd_step(params, grads, 0.3) is None
    for k in params:
        assert params[k] is arrays[k]
        close(params[k], before[k] - 0.3 * grads[k])


def test_reference_never_mutates_its_inputs() -> None:
    p = ref.affine_inputs(0, (3, 2, 4), 5)
    c = ref.classification_inputs(0, 3, 5)
    dout = np.random.default_rng(1).standard_normal((3, 5))
    dx_up = np.random.default_rng(2).standard_normal((3, 2, 4))
    inputs = (*p.values(), *c.values(), dout, dx_up)
    snapshot = [a.copy() for a in inputs]

    _, cache = ref.affine_forward(p["x"], p["w"], p["b"])
    ref.affine_backward(dout, cache)
    _, cache = ref.relu_forward(p["x"])
    ref.relu_backward(dx_up, cache)
    ref.softmax_cross_entropy(c["logits"], c["y"])

    for before, after in zip(snapshot, inputs):
        assert before.shape == after.shape
        np.testing.assert_array_equal(before, after)


def test_check_params_names_the_problem() -> None:
    params = ref.init_params(4, 3, 2)
    ref.check_params(params, 4, 3, 2)
    with pytest.raises(ValueError, match="no key 'b2'"):
        ref.check_params({k: v for k, v in params.items() if k != "b2"}, 4, 3, 2)
    with pytest.raises(ValueError, match=r"'W1'.*shape \(3, 4\)"):
        ref.check_params({**params, "W1": params["W1"].T}, 4, 3, 2)
    with pytest.raises(ValueError, match="list"):
        ref.check_params({**params, "b1": [0.0, 0.0, 0.0]}, 4, 3, 2)
    with pytest.raises(ValueError, match="NaN"):
        ref.check_params({**params, "W2": np.full((3, 2), np.nan)}, 4, 3, 2)


def test_training_task_is_deterministic_and_within_the_contract() -> None:
    a, b = ref.training_task(0), ref.training_task(0)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.X_train.shape == (1500, ref.NUM_FEATURES) and a.X_train.dtype == np.float64
    assert a.y_train.dtype == np.int64 and set(np.unique(a.y_train)) == set(range(ref.NUM_CLASSES))
    # The held-out split does not depend on how many training examples are drawn.
    np.testing.assert_array_equal(ref.training_task(0, n_train=300).X_test, a.X_test)
    assert not np.array_equal(ref.training_task(1).X_train, a.X_train)
    with pytest.raises(ValueError, match="exceeds"):
        ref.training_task(0, n_train=ref.MAX_TRAIN_EXAMPLES + 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_train_mlp_generalizes_to_held_out_data(seed: int) -> None:
    task = ref.training_task(seed)
    untrained = ref.init_params(ref.NUM_FEATURES, task.hidden_dim, task.num_classes, seed=seed)
    start = time.perf_counter()
    params = ref.train_mlp(task.X_train, task.y_train, task.hidden_dim, task.num_classes, seed)
    elapsed_s = time.perf_counter() - start

    ref.check_params(params, ref.NUM_FEATURES, task.hidden_dim, task.num_classes)
    held_out = ref.accuracy(params, task.X_test, task.y_test)
    assert held_out >= 0.94, f"held-out accuracy {held_out:.3f}"
    assert ref.accuracy(untrained, task.X_test, task.y_test) < 0.2
    assert ref.mean_loss(params, task.X_test, task.y_test) < 0.5 * ref.mean_loss(untrained, task.X_test, task.y_test)
    # The contract allows 60 s; the reference needs well under 1 s, so 10 s is
    # generous even on a loaded machine.
    assert elapsed_s < 10.0


def test_train_mlp_is_deterministic_for_a_seed() -> None:
    task = ref.training_task(0, n_train=400)
    a = ref.train_mlp(task.X_train, task.y_train, task.hidden_dim, task.num_classes, seed=4)
    b = ref.train_mlp(task.X_train, task.y_train, task.hidden_dim, task.num_classes, seed=4)
    for k in ref.PARAM_KEYS:
        np.testing.assert_array_equal(a[k], b[k])
