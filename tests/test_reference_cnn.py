"""The cnn reference against PyTorch in float64: conv2d, max-pooling, the fixed network and its training.

Shapes follow GRADING.md's "inputs that expose bugs": N >= 2, strides of 2 and
3, pad 0 as well as pad >= 1, sizes where (H + 2*pad - K) is not divisible by
the stride, non-square kernels and images, overlapping pools (stride < kernel)
and unique max-pool values separated by much more than a finite-difference step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference import cnn as ref

RTOL = 1e-12

# (seed, N, C, H, W, F, KH, KW, stride, pad)
CONV_CASES = [
    (0, 2, 1, 5, 5, 2, 3, 3, 1, 0),
    (1, 2, 3, 7, 6, 4, 3, 2, 2, 1),  # (7 + 2 - 3) = 6 divisible, (6 + 2 - 2) = 6 divisible
    (2, 3, 2, 8, 7, 3, 3, 3, 2, 0),  # (8 - 3) = 5 and (7 - 3) = 4: one axis not divisible by 2
    (3, 2, 2, 9, 10, 5, 2, 4, 3, 2),  # (9 + 4 - 2) = 11 and (10 + 4 - 4) = 10: neither divisible by 3
    (4, 4, 3, 6, 6, 2, 1, 1, 2, 1),  # 1x1 kernel with padding: the border outputs are only the bias
    (5, 2, 2, 4, 5, 3, 4, 5, 1, 0),  # kernel as large as the input along W
]

# (seed, N, C, H, W, kernel, stride)
POOL_CASES = [
    (0, 2, 3, 4, 4, 2, 2),
    (1, 2, 2, 5, 7, 2, 2),  # odd sizes: the last row/column is dropped
    (2, 3, 1, 6, 6, 3, 1),  # overlapping windows
    (3, 2, 2, 7, 8, 3, 2),  # overlapping windows, sizes not divisible by the stride
    (4, 2, 2, 6, 5, 2, 1),  # overlapping windows
    (5, 2, 1, 7, 7, 2, 3),  # stride > kernel: some positions belong to no window
]


def normwise(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) + np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / denom if denom else 0.0


def assert_matches(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert got.dtype == np.float64, f"{name}: dtype {got.dtype}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * max(1.0, float(np.abs(want).max())), err_msg=name)


def torch_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, dout: np.ndarray | None, stride: int,
               pad: int) -> tuple[np.ndarray, ...]:
    """PyTorch's conv2d output and, for the upstream gradient dout, its (dx, dw, db)."""
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    out = F.conv2d(tx, tw, tb, stride=stride, padding=pad)
    if dout is None:
        return (out.detach().numpy(),)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def torch_pool(x: np.ndarray, dout: np.ndarray | None, kernel: int, stride: int) -> tuple[np.ndarray, ...]:
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = F.max_pool2d(tx, kernel, stride)
    if dout is None:
        return (out.detach().numpy(),)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), tx.grad.numpy()


# -- conv2d ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"seed{c[0]}-s{c[8]}-p{c[9]}")
def test_conv2d_matches_torch(case: tuple[int, ...]) -> None:
    seed, N, C, H, W, Fn, KH, KW, stride, pad = case
    p = ref.conv_inputs(seed, N, C, H, W, Fn, KH, KW)
    x0, w0, b0 = (p[k].copy() for k in ("x", "w", "b"))
    out, cache = ref.conv2d_forward(p["x"], p["w"], p["b"], stride=stride, pad=pad)
    dout = np.random.default_rng(seed + 100).standard_normal(out.shape)
    t_out, t_dx, t_dw, t_db = torch_conv(p["x"], p["w"], p["b"], dout, stride, pad)
    assert out.shape == (N, Fn, ref.output_size(H, KH, stride, pad), ref.output_size(W, KW, stride, pad))
    assert_matches(out, t_out, "out")
    dx, dw, db = ref.conv2d_backward(dout, cache)
    assert_matches(dx, t_dx, "dx")
    assert_matches(dw, t_dw, "dw")
    assert_matches(db, t_db, "db")
    for name, before in (("x", x0), ("w", w0), ("b", b0)):
        assert np.array_equal(p[name], before), f"the reference modified {name}"


def test_conv2d_large_preactivations_stay_exact() -> None:
    p = ref.conv_inputs(7, 2, 2, 6, 6, 3, 3, 3)
    x, w, b = p["x"] * 1e3, p["w"] * 1e3, p["b"] * 1e6
    out, cache = ref.conv2d_forward(x, w, b, stride=2, pad=1)
    dout = np.random.default_rng(8).standard_normal(out.shape)
    t_out, t_dx, t_dw, t_db = torch_conv(x, w, b, dout, 2, 1)
    for got, want in zip((out, *ref.conv2d_backward(dout, cache)), (t_out, t_dx, t_dw, t_db)):
        assert normwise(got, want) < RTOL


def test_output_size_rounds_down_like_torch() -> None:
    for size in range(3, 12):
        for kernel in (1, 2, 3):
            for stride in (1, 2, 3):
                for pad in (0, 1, 2):
                    x = torch.zeros(1, 1, size, size, dtype=torch.float64)
                    w = torch.zeros(1, 1, kernel, kernel, dtype=torch.float64)
                    expected = F.conv2d(x, w, stride=stride, padding=pad).shape[-1]
                    assert ref.output_size(size, kernel, stride, pad) == expected, (size, kernel, stride, pad)


def test_flipped_kernel_helpers_describe_a_true_convolution() -> None:
    p = ref.conv_inputs(9, 2, 2, 5, 6, 3, 3, 2)
    w_flipped = p["w"][:, :, ::-1, ::-1].copy()
    out = ref.conv2d_flipped_forward(p["x"], p["w"], p["b"], stride=2, pad=1)
    dout = np.random.default_rng(10).standard_normal(out.shape)
    t_out, t_dx, t_dw, t_db = torch_conv(p["x"], w_flipped, p["b"], dout, 2, 1)
    assert_matches(out, t_out, "flipped out")
    dx, dw, db = ref.conv2d_flipped_backward(p["x"], p["w"], p["b"], dout, stride=2, pad=1)
    assert_matches(dx, t_dx, "flipped dx")
    # The gradient with respect to the candidate's own (unflipped) w is torch's gradient flipped back.
    assert_matches(dw, t_dw[:, :, ::-1, ::-1], "flipped dw")
    assert_matches(db, t_db, "flipped db")
    assert normwise(out, ref.conv2d_forward(p["x"], p["w"], p["b"], 2, 1)[0]) > 1e-3


# -- max-pooling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"seed{c[0]}-k{c[5]}-s{c[6]}")
def test_maxpool_matches_torch(case: tuple[int, ...]) -> None:
    seed, N, C, H, W, kernel, stride = case
    x = ref.unique_image(seed, (N, C, H, W))
    x0 = x.copy()
    out, cache = ref.maxpool2d_forward(x, kernel, stride)
    dout = np.random.default_rng(seed + 100).standard_normal(out.shape)
    t_out, t_dx = torch_pool(x, dout, kernel, stride)
    assert_matches(out, t_out, "out")
    assert_matches(ref.maxpool2d_backward(dout, cache), t_dx, "dx")
    assert np.array_equal(x, x0)


def test_overlapping_pool_accumulates_a_shared_maximum() -> None:
    # A single large pixel in the middle is the maximum of all four overlapping 2x2 windows.
    x = np.arange(9.0).reshape(1, 1, 3, 3) * 0.01
    x[0, 0, 1, 1] = 5.0
    x = np.concatenate([x, -x], axis=0)
    out, cache = ref.maxpool2d_forward(x, kernel=2, stride=1)
    dout = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2) * np.ones((2, 1, 1, 1))
    dx = ref.maxpool2d_backward(dout, cache)
    assert dx[0, 0, 1, 1] == 10.0
    assert ref.maxpool2d_window_counts(x, 2, 1)[0, 0, 1, 1] == 4
    assert_matches(dx, torch_pool(x, dout, 2, 1)[1], "dx")


def test_maxpool_ties_split_validly() -> None:
    rng = np.random.default_rng(11)
    x = rng.integers(0, 2, size=(2, 2, 6, 6)).astype(np.float64)  # many tied maxima
    out, cache = ref.maxpool2d_forward(x, 2, 2)
    dout = rng.standard_normal(out.shape)
    dx = ref.maxpool2d_backward(dout, cache)
    assert_matches(out, torch_pool(x, None, 2, 2)[0], "out")
    tied = ref.maxpool2d_tied_positions(x, 2, 2)
    # Non-overlapping windows: dx viewed per window holds the whole upstream gradient on tied positions.
    dx_windows = dx.reshape(2, 2, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5)
    assert np.all(dx_windows[~tied] == 0.0)
    assert np.allclose(dx_windows.sum(axis=(-2, -1)), dout)
    # Of the valid splits, the reference picks PyTorch's: the first maximum in row-major order.
    assert_matches(dx, torch_pool(x, dout, 2, 2)[1], "dx")


def test_spread_backward_is_the_gradient_of_sum_pooling() -> None:
    x = ref.unique_image(12, (2, 2, 7, 6))
    kernel, stride = 3, 2
    tx = torch.tensor(x, requires_grad=True)
    sum_pool = F.avg_pool2d(tx, kernel, stride) * kernel * kernel
    dout = np.random.default_rng(13).standard_normal(tuple(sum_pool.shape))
    sum_pool.backward(torch.tensor(dout))
    assert_matches(ref.maxpool2d_spread_backward(dout, x.shape, kernel, stride), tx.grad.numpy(), "spread dx")


def test_window_counts_cover_every_window_once() -> None:
    x = ref.unique_image(14, (2, 3, 7, 7))
    counts = ref.maxpool2d_window_counts(x, 3, 2)
    assert np.all(counts.sum(axis=(2, 3)) == 3 * 3)
    assert counts.max() >= 2  # with overlap some pixel wins two windows


# -- the fixed network ----------------------------------------------------------------------------


def torch_net(params: dict[str, np.ndarray]) -> torch.nn.Sequential:
    conv = torch.nn.Conv2d(1, ref.NUM_FILTERS, ref.KERNEL_SIZE, padding=ref.CONV_PAD).double()
    linear = torch.nn.Linear(ref.FLAT_DIM, ref.NUM_CLASSES).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(params["W1"]))
        conv.bias.copy_(torch.tensor(params["b1"]))
        linear.weight.copy_(torch.tensor(params["W2"].T))  # W2 is (128, 10): the transpose of nn.Linear's
        linear.bias.copy_(torch.tensor(params["b2"]))
    return torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.MaxPool2d(ref.POOL_SIZE), torch.nn.Flatten(), linear)


def test_grader_forward_pass_and_gradients_match_torch() -> None:
    params = ref.init_params(15)
    params["b1"] = np.random.default_rng(16).standard_normal(ref.NUM_FILTERS) * 0.1
    rng = np.random.default_rng(17)
    X = rng.uniform(0, 1, size=(5, 1, 8, 8))
    y = rng.integers(0, 10, size=5)
    net = torch_net(params)
    scores = net(torch.tensor(X))
    assert_matches(ref.cnn_scores(params, X), scores.detach().numpy(), "scores")
    loss, grads = ref.cnn_loss(params, X, y)
    t_loss = F.cross_entropy(scores, torch.tensor(y))
    t_loss.backward()
    assert abs(loss - t_loss.item()) < 1e-12
    conv, linear = net[0], net[4]
    expected = {"W1": conv.weight.grad.numpy(), "b1": conv.bias.grad.numpy(),
                "W2": linear.weight.grad.numpy().T, "b2": linear.bias.grad.numpy()}
    for k, want in expected.items():
        assert_matches(grads[k], want, k)


def test_check_params_names_the_problem() -> None:
    params = ref.init_params(0)
    assert set(ref.check_params(params)) == set(ref.PARAM_SHAPES)
    with pytest.raises(ValueError, match="W2"):
        ref.check_params({**params, "W2": params["W2"].T})
    with pytest.raises(ValueError, match="b1"):
        ref.check_params({k: v for k, v in params.items() if k != "b1"})
    with pytest.raises(ValueError, match="NaN"):
        ref.check_params({**params, "b2": np.full(10, np.nan)})


def test_digits_split() -> None:
    split = ref.digits_split(0)
    assert split.X_train.shape == (ref.N_TRAIN_DIGITS, 1, 8, 8) and split.y_train.shape == (ref.N_TRAIN_DIGITS,)
    assert split.X_test.shape == (1797 - ref.N_TRAIN_DIGITS, 1, 8, 8)
    assert split.X_train.dtype == np.float64 and 0.0 <= split.X_train.min() and split.X_train.max() <= 1.0
    assert set(np.unique(split.y_test)) == set(range(10))
    assert np.array_equal(ref.digits_split(0).y_test, split.y_test)
    assert not np.array_equal(ref.digits_split(1).y_test, split.y_test)


def test_train_cnn_clears_the_pass_mark_on_held_out_digits() -> None:
    split = ref.digits_split(3)
    params = ref.train_cnn(split.X_train, split.y_train, seed=0)
    ref.check_params(params)
    assert ref.accuracy(params, split.X_test, split.y_test) >= 0.95
    again = ref.train_cnn(split.X_train, split.y_train, seed=0)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    untrained = ref.init_params(0)
    assert ref.accuracy(untrained, split.X_test, split.y_test) < 0.5
