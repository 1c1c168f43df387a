"""The rnn reference against PyTorch (RNNCell, LSTMCell, LSTM and autograd) in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference import rnn as ref

# (N, T, D, H): N >= 2 and T >= 2, D != H, H not a power of two, one larger case.
SHAPES = [(2, 2, 3, 4), (3, 5, 4, 3), (2, 7, 1, 5), (5, 4, 6, 2), (4, 9, 10, 7)]
SEEDS = [0, 1]


def close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-10) -> None:
    """Assert equal shapes and a normwise relative error below rtol."""
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    denom = np.linalg.norm(actual) + np.linalg.norm(expected)
    err = np.linalg.norm(actual - expected) / denom if denom > 0 else 0.0
    assert err < rtol, f"relative error {err:.3e}"


def t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    """A float64 torch copy of a, optionally a leaf that records gradients."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def mapped_lstm_cell(Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray) -> torch.nn.LSTMCell:
    """An LSTMCell holding the contract's weights: weight_ih = Wx.T, weight_hh = Wh.T, bias split."""
    D, four_h = Wx.shape
    cell = torch.nn.LSTMCell(D, four_h // 4, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.copy_(t(Wx.T))
        cell.weight_hh.copy_(t(Wh.T))
        cell.bias_ih.copy_(t(b))
        cell.bias_hh.zero_()
    return cell


def test_sigmoid_is_finite_and_exact_at_the_extremes() -> None:
    x = np.array([-1e4, -1e3, -40.0, -1.0, 0.0, 1.0, 40.0, 1e3, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        s = ref.sigmoid(x)
    np.testing.assert_allclose(s, torch.sigmoid(t(x)).numpy(), rtol=1e-15, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("N, T, D, H", SHAPES)
def test_rnn_step_matches_rnncell_and_autograd(seed: int, N: int, T: int, D: int, H: int) -> None:
    p = ref.rnn_step_inputs(seed, N, D, H)
    h_next, cache = ref.rnn_step_forward(p["x"], p["h_prev"], p["Wx"], p["Wh"], p["b"])

    cell = torch.nn.RNNCell(D, H, nonlinearity="tanh", dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.copy_(t(p["Wx"].T))
        cell.weight_hh.copy_(t(p["Wh"].T))
        cell.bias_ih.copy_(t(p["b"]))
        cell.bias_hh.zero_()
    x, h_prev = t(p["x"], True), t(p["h_prev"], True)
    out = cell(x, h_prev)
    close(h_next, out.detach().numpy())

    dh_next = np.random.default_rng(seed + 100).standard_normal((N, H))
    out.backward(t(dh_next))
    dx, dh_prev, dWx, dWh, db = ref.rnn_step_backward(dh_next, cache)
    close(dx, x.grad.numpy())
    close(dh_prev, h_prev.grad.numpy())
    close(dWx, cell.weight_ih.grad.numpy().T)
    close(dWh, cell.weight_hh.grad.numpy().T)
    close(db, cell.bias_ih.grad.numpy())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("N, T, D, H", SHAPES)
def test_lstm_step_matches_lstmcell_and_autograd(seed: int, N: int, T: int, D: int, H: int) -> None:
    p = ref.lstm_step_inputs(seed, N, D, H)
    h_next, c_next, cache = ref.lstm_step_forward(p["x"], p["h_prev"], p["c_prev"], p["Wx"], p["Wh"], p["b"])

    cell = mapped_lstm_cell(p["Wx"], p["Wh"], p["b"])
    x, h_prev, c_prev = t(p["x"], True), t(p["h_prev"], True), t(p["c_prev"], True)
    h_out, c_out = cell(x, (h_prev, c_prev))
    close(h_next, h_out.detach().numpy())
    close(c_next, c_out.detach().numpy())

    # Both upstream gradients non-zero and random, so every path into the cell is exercised.
    rng = np.random.default_rng(seed + 100)
    dh_next, dc_next = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    torch.autograd.backward([h_out, c_out], [t(dh_next), t(dc_next)])
    dx, dh_prev, dc_prev, dWx, dWh, db = ref.lstm_step_backward(dh_next, dc_next, cache)
    close(dx, x.grad.numpy())
    close(dh_prev, h_prev.grad.numpy())
    close(dc_prev, c_prev.grad.numpy())
    close(dWx, cell.weight_ih.grad.numpy().T)
    close(dWh, cell.weight_hh.grad.numpy().T)
    close(db, cell.bias_ih.grad.numpy())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("N, T, D, H", SHAPES)
def test_lstm_sequence_matches_nn_lstm_and_autograd(seed: int, N: int, T: int, D: int, H: int) -> None:
    p = ref.lstm_sequence_inputs(seed, N, T, D, H)
    h, cache = ref.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])

    lstm = torch.nn.LSTM(D, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(t(p["Wx"].T))
        lstm.weight_hh_l0.copy_(t(p["Wh"].T))
        lstm.bias_ih_l0.copy_(t(p["b"]))
        lstm.bias_hh_l0.zero_()
    x, h0 = t(p["x"], True), t(p["h0"], True)
    out, _ = lstm(x, (h0[None], torch.zeros(1, N, H, dtype=torch.float64)))
    close(h, out.detach().numpy())

    dh = np.random.default_rng(seed + 100).standard_normal((N, T, H))
    out.backward(t(dh))
    dx, dh0, dWx, dWh, db = ref.lstm_backward(dh, cache)
    close(dx, x.grad.numpy())
    close(dh0, h0.grad.numpy())
    close(dWx, lstm.weight_ih_l0.grad.numpy().T)
    close(dWh, lstm.weight_hh_l0.grad.numpy().T)
    close(db, lstm.bias_ih_l0.grad.numpy())


@pytest.mark.parametrize("N, T, D, H", SHAPES[:3])
def test_rnn_sequence_matches_chained_rnncell(N: int, T: int, D: int, H: int) -> None:
    p = ref.lstm_sequence_inputs(3, N, T, D, H)
    rng = np.random.default_rng(4)
    Wx, Wh = rng.standard_normal((D, H)) / np.sqrt(D), rng.standard_normal((H, H)) / np.sqrt(H)
    b = rng.standard_normal(H)
    h, cache = ref.rnn_forward(p["x"], p["h0"], Wx, Wh, b)

    rnn = torch.nn.RNN(D, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(t(Wx.T))
        rnn.weight_hh_l0.copy_(t(Wh.T))
        rnn.bias_ih_l0.copy_(t(b))
        rnn.bias_hh_l0.zero_()
    x, h0 = t(p["x"], True), t(p["h0"], True)
    out, _ = rnn(x, h0[None])
    close(h, out.detach().numpy())

    dh = rng.standard_normal((N, T, H))
    out.backward(t(dh))
    dx, dh0, dWx, dWh, db = ref.rnn_backward(dh, cache)
    close(dx, x.grad.numpy())
    close(dh0, h0.grad.numpy())
    close(dWx, rnn.weight_ih_l0.grad.numpy().T)
    close(dWh, rnn.weight_hh_l0.grad.numpy().T)
    close(db, rnn.bias_ih_l0.grad.numpy())


@pytest.mark.parametrize("seed", SEEDS)
def test_saturated_lstm_step_stays_finite_and_matches_lstmcell(seed: int) -> None:
    N, D, H = 3, 4, 5
    p = ref.lstm_step_inputs(seed, N, D, H)
    p["b"] = ref.saturating_bias(seed, H)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        h_next, c_next, cache = ref.lstm_step_forward(p["x"], p["h_prev"], p["c_prev"], p["Wx"], p["Wh"], p["b"])
        rng = np.random.default_rng(seed + 100)
        dh_next, dc_next = rng.standard_normal((N, H)), rng.standard_normal((N, H))
        grads = ref.lstm_step_backward(dh_next, dc_next, cache)

    cell = mapped_lstm_cell(p["Wx"], p["Wh"], p["b"])
    x, h_prev, c_prev = t(p["x"], True), t(p["h_prev"], True), t(p["c_prev"], True)
    h_out, c_out = cell(x, (h_prev, c_prev))
    close(h_next, h_out.detach().numpy())
    close(c_next, c_out.detach().numpy())
    torch.autograd.backward([h_out, c_out], [t(dh_next), t(dc_next)])
    dx, dh_prev, dc_prev, dWx, dWh, db = grads
    # Saturated gates have derivative exactly 0 in both, so compare absolutely.
    for mine, theirs in [
        (dx, x.grad.numpy()),
        (dh_prev, h_prev.grad.numpy()),
        (dc_prev, c_prev.grad.numpy()),
        (dWx, cell.weight_ih.grad.numpy().T),
        (dWh, cell.weight_hh.grad.numpy().T),
        (db, cell.bias_ih.grad.numpy()),
    ]:
        assert np.all(np.isfinite(mine))
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)


def test_saturated_lstm_sequence_stays_finite() -> None:
    N, T, D, H = 2, 4, 3, 3
    p = ref.lstm_sequence_inputs(5, N, T, D, H)
    p["b"] = ref.saturating_bias(5, H)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        h, cache = ref.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
        grads = ref.lstm_backward(np.random.default_rng(6).standard_normal((N, T, H)), cache)
    assert np.all(np.isfinite(h))
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_reorder_gates_maps_the_course_order_onto_pytorch_order() -> None:
    N, D, H = 2, 3, 4
    p = ref.lstm_step_inputs(7, N, D, H)
    a = p["x"] @ p["Wx"] + p["h_prev"] @ p["Wh"] + p["b"]
    # A cell written with the course order reads i, f, o, g from consecutive blocks.
    i, f, o, g = (
        ref.sigmoid(a[:, :H]),
        ref.sigmoid(a[:, H : 2 * H]),
        ref.sigmoid(a[:, 2 * H : 3 * H]),
        np.tanh(a[:, 3 * H :]),
    )
    c_course = f * p["c_prev"] + i * g
    h_course = o * np.tanh(c_course)

    swapped = {k: ref.reorder_gates(p[k]) for k in ("Wx", "Wh", "b")}
    h_ref, c_ref, _ = ref.lstm_step_forward(
        p["x"], p["h_prev"], p["c_prev"], swapped["Wx"], swapped["Wh"], swapped["b"]
    )
    close(h_ref, h_course, rtol=1e-14)
    close(c_ref, c_course, rtol=1e-14)
    # Swapping g and o is its own inverse; a round trip through any order is the identity.
    np.testing.assert_array_equal(ref.reorder_gates(swapped["Wx"]), p["Wx"])
    np.testing.assert_array_equal(ref.reorder_gates(ref.reorder_gates(p["b"], "ifgo", "gofi"), "gofi", "ifgo"), p["b"])
    with pytest.raises(ValueError, match="permutations"):
        ref.reorder_gates(p["b"], "ifgo", "iffo")


def test_gradient_through_time_matches_autograd() -> None:
    N, T, D, H = 2, 6, 3, 4
    p = ref.lstm_sequence_inputs(8, N, T, D, H)
    dh_last = np.random.default_rng(9).standard_normal((N, H))

    # LSTM: dL/dh_t for a loss <dh_last, h_{T-1}>, read off torch by retaining every h_t.
    cell = mapped_lstm_cell(p["Wx"], p["Wh"], p["b"])
    h_t, c_t = t(p["h0"]), torch.zeros(N, H, dtype=torch.float64)
    hs = []
    for step in range(T):
        h_t, c_t = cell(t(p["x"][:, step]), (h_t, c_t))
        h_t.retain_grad()
        hs.append(h_t)
    hs[-1].backward(t(dh_last))
    expected = [float(torch.linalg.norm(h.grad)) for h in hs]
    got = ref.lstm_gradient_through_time(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], dh_last)
    np.testing.assert_allclose(got, expected, rtol=1e-10)

    # Vanilla RNN with the same recipe.
    rng = np.random.default_rng(10)
    Wx, Wh, b = rng.standard_normal((D, H)), rng.standard_normal((H, H)) / np.sqrt(H), rng.standard_normal(H)
    h_t, Wh_t = t(p["h0"]), t(Wh, True)
    hs = []
    for step in range(T):
        h_t = torch.tanh(t(p["x"][:, step]) @ t(Wx) + h_t @ Wh_t + t(b))
        h_t.retain_grad()
        hs.append(h_t)
    hs[-1].backward(t(dh_last))
    expected = [float(torch.linalg.norm(h.grad)) for h in hs]
    got = ref.rnn_gradient_through_time(p["x"], p["h0"], Wx, Wh, b, dh_last)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_inputs_are_not_mutated() -> None:
    p = ref.lstm_sequence_inputs(11, 2, 3, 4, 5)
    before = {k: v.copy() for k, v in p.items()}
    h, cache = ref.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
    dh = np.random.default_rng(12).standard_normal(h.shape)
    dh_before = dh.copy()
    ref.lstm_backward(dh, cache)
    for k in p:
        np.testing.assert_array_equal(p[k], before[k])
    np.testing.assert_array_equal(dh, dh_before)
