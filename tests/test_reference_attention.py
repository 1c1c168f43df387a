"""The attention reference against PyTorch in float64.

Scaled dot-product attention against torch.nn.functional.scaled_dot_product_attention
(bool attn_mask, is_causal) and its autograd gradients; the multi-head layer against
torch.nn.MultiheadAttention(batch_first=True) with the weights mapped (the contract's
x @ W + b is the transpose of its Linear weights, and its bool masks mean True =
masked, the opposite of the contract's), and against an autograd re-implementation
for masks MultiheadAttention cannot take (one per example).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import attention as ref


def close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-12, atol: float = 1e-13) -> None:
    """Assert equal shapes, finite values and a normwise relative error below rtol, or every element within atol.

    The atol is for gradients that are zero in exact arithmetic (the key bias's: adding a constant to every
    score of a row leaves its softmax unchanged), where both sides are rounding noise near 1e-16.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    denom = np.linalg.norm(actual) + np.linalg.norm(expected)
    err = np.linalg.norm(actual - expected) / denom if denom > 0 else 0.0
    assert err < rtol or np.max(np.abs(actual - expected)) < atol, f"relative error {err:.3e}"


def t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def torch_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, dout: np.ndarray, mask: np.ndarray | None,
                    causal: bool) -> tuple[np.ndarray, ...]:
    """(out, dq, dk, dv) from torch's scaled_dot_product_attention and autograd."""
    tq, tk, tv = t(q, True), t(k, True), t(v, True)
    out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=None if mask is None else torch.tensor(mask),
                                         is_causal=causal)
    out.backward(t(dout))
    return out.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


def inputs(seed: int, lead: tuple[int, ...], tq: int, tk: int, d: int, dv: int,
           scale: float = 1.0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((*lead, tq, d)), rng.standard_normal((*lead, tk, d)),
            rng.standard_normal((*lead, tk, dv)), rng.standard_normal((*lead, tq, dv)))


CASES = [((2,), 3, 3, 4, 4), ((2,), 3, 5, 4, 2), ((2, 3), 4, 4, 2, 5), ((1, 2), 1, 6, 3, 3), ((3, 2), 5, 2, 8, 1),
         ((), 4, 3, 2, 3)]


@pytest.mark.parametrize("lead, tq, tk, d, dv", CASES)
def test_attention_matches_torch_without_mask(lead: tuple[int, ...], tq: int, tk: int, d: int, dv: int) -> None:
    q, k, v, dout = inputs(0, lead, tq, tk, d, dv)
    before = [a.copy() for a in (q, k, v)]
    out, cache = ref.attention_forward(q, k, v)
    grads = ref.attention_backward(dout, cache)
    want = torch_attention(q, k, v, dout, None, False)
    for have, expected in zip((out, *grads), want):
        assert have.dtype == np.float64
        close(have, expected)
    for a, b in zip((q, k, v), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("lead, tq, tk, d, dv", CASES)
@pytest.mark.parametrize("kind", ["full", "padding", "per-query"])
def test_attention_matches_torch_with_a_bool_mask(kind: str, lead: tuple[int, ...], tq: int, tk: int, d: int,
                                                  dv: int) -> None:
    rng = np.random.default_rng(1)
    q, k, v, dout = inputs(2, lead, tq, tk, d, dv)
    if kind == "full":
        mask = ref.random_mask(rng, (*lead, tq, tk))
    elif kind == "padding":  # one row of keys per example, broadcast over the queries (and heads)
        lengths = rng.integers(1, tk + 1, size=lead[:1] or (1,))
        mask = ref.padding_mask(lengths, tk).reshape((*lead[:1], *(1,) * (len(lead) - 1), 1, tk)) if lead else \
            ref.padding_mask(lengths, tk)
    else:  # (Tq, Tk), broadcast over every leading dimension
        mask = ref.random_mask(rng, (tq, tk))
    out, cache = ref.attention_forward(q, k, v, mask=mask)
    grads = ref.attention_backward(dout, cache)
    for have, expected in zip((out, *grads), torch_attention(q, k, v, dout, mask, False)):
        close(have, expected)


@pytest.mark.parametrize("lead, n", [((2,), 4), ((2, 3), 5), ((1, 1), 1), ((3,), 2)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_attention_causal_matches_torch_is_causal(lead: tuple[int, ...], n: int, with_mask: bool) -> None:
    q, k, v, dout = inputs(3, lead, n, n, 4, 3)
    mask = None
    if with_mask:
        # Keys the causal rule allows stay possible: the diagonal is always kept.
        mask = ref.random_mask(np.random.default_rng(4), (*lead, n, n)) | np.eye(n, dtype=bool)
    out, cache = ref.attention_forward(q, k, v, mask=mask, causal=True)
    grads = ref.attention_backward(dout, cache)
    combined = np.tril(np.ones((n, n), dtype=bool)) & (True if mask is None else mask)
    expected = torch_attention(q, k, v, dout, np.broadcast_to(combined, (*lead, n, n)).copy(), False)
    if mask is None:
        expected_causal = torch_attention(q, k, v, dout, None, True)
        for a, b in zip(expected, expected_causal):
            close(a, b)
    for have, want in zip((out, *grads), expected):
        close(have, want)


def test_masked_keys_have_no_influence_and_no_gradient() -> None:
    q, k, v, dout = inputs(5, (2, 2), 3, 5, 4, 3)
    mask = ref.padding_mask([3, 2], 5).reshape(2, 1, 1, 5)
    out, cache = ref.attention_forward(q, k, v, mask=mask)
    _, dk, dv = ref.attention_backward(dout, cache)
    k2, v2 = k.copy(), v.copy()
    k2[0, :, 3:] = 1e3
    v2[1, :, 2:] = -7.0
    np.testing.assert_array_equal(ref.attention_forward(q, k2, v2, mask=mask)[0], out)
    assert np.all(dk[0, :, 3:] == 0) and np.all(dv[0, :, 3:] == 0)
    assert np.all(dk[1, :, 2:] == 0) and np.all(dv[1, :, 2:] == 0)
    assert np.all(dv[0, :, :3] != 0)


@pytest.mark.parametrize("magnitude", [1e2, 1e3, 1e4])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_is_stable_for_large_scores(magnitude: float, masked: bool) -> None:
    q, k, v, dout = inputs(6, (2, 2), 4, 4, 4, 3, scale=magnitude / 2)
    mask = ref.random_mask(np.random.default_rng(7), (4, 4)) if masked else None
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        out, cache = ref.attention_forward(q, k, v, mask=mask)
        grads = ref.attention_backward(dout, cache)
    for have, want in zip((out, *grads), torch_attention(q, k, v, dout, mask, False)):
        close(have, want, rtol=1e-10)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(lead=st.lists(st.integers(1, 3), min_size=1, max_size=2), tq=st.integers(1, 5), tk=st.integers(1, 5),
       d=st.integers(1, 5), dv=st.integers(1, 5), seed=st.integers(0, 2**31), masked=st.booleans())
def test_attention_matches_torch_on_generated_shapes(lead: list[int], tq: int, tk: int, d: int, dv: int, seed: int,
                                                     masked: bool) -> None:
    q, k, v, dout = inputs(seed, tuple(lead), tq, tk, d, dv)
    mask = ref.random_mask(np.random.default_rng(seed), (*lead, tq, tk)) if masked else None
    out, cache = ref.attention_forward(q, k, v, mask=mask)
    grads = ref.attention_backward(dout, cache)
    for have, want in zip((out, *grads), torch_attention(q, k, v, dout, mask, False)):
        close(have, want)


# ---------------------------------------------------------------------------
# Multi-head self-attention


def torch_mha(x: np.ndarray, params: dict[str, np.ndarray], num_heads: int, dout: np.ndarray,
              attn_mask: np.ndarray | None = None, key_padding: np.ndarray | None = None,
              causal: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(out, dx, grads) from torch.nn.MultiheadAttention with the contract's weights; masks in the contract's sense."""
    n, tt, d = x.shape
    layer = torch.nn.MultiheadAttention(d, num_heads, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        layer.in_proj_weight.copy_(t(np.concatenate([params["Wq"].T, params["Wk"].T, params["Wv"].T])))
        layer.in_proj_bias.copy_(t(np.concatenate([params["bq"], params["bk"], params["bv"]])))
        layer.out_proj.weight.copy_(t(params["Wo"].T))
        layer.out_proj.bias.copy_(t(params["bo"]))
    blocked = None if attn_mask is None else torch.tensor(~attn_mask)  # torch: True = may NOT attend
    if causal:
        upper = torch.triu(torch.ones(tt, tt, dtype=torch.bool), diagonal=1)
        blocked = upper if blocked is None else blocked | upper
    tx = t(x, True)
    out, _ = layer(tx, tx, tx, attn_mask=blocked, need_weights=False,
                   key_padding_mask=None if key_padding is None else torch.tensor(~key_padding))
    out.backward(t(dout))
    w_in, b_in = layer.in_proj_weight.grad.numpy(), layer.in_proj_bias.grad.numpy()
    grads = {"Wq": w_in[:d].T, "Wk": w_in[d:2 * d].T, "Wv": w_in[2 * d:].T, "bq": b_in[:d], "bk": b_in[d:2 * d],
             "bv": b_in[2 * d:], "Wo": layer.out_proj.weight.grad.numpy().T, "bo": layer.out_proj.bias.grad.numpy()}
    return out.detach().numpy(), tx.grad.numpy(), grads


def autograd_mha(x: np.ndarray, params: dict[str, np.ndarray], num_heads: int, dout: np.ndarray,
                 mask: np.ndarray | None, causal: bool) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The same layer written with torch ops (x @ W + b, sdpa per head), for masks of any broadcastable shape."""
    n, tt, d = x.shape
    tx = t(x, True)
    tp = {k: t(v, True) for k, v in params.items()}

    def heads(a: torch.Tensor) -> torch.Tensor:
        return a.reshape(n, tt, num_heads, d // num_heads).transpose(1, 2)

    q, k, v = (heads(tx @ tp["W" + s] + tp["b" + s]) for s in "qkv")
    allowed = ref.allowed_mask(mask, causal, tt, tt)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=None if allowed is None else torch.tensor(allowed))
    out = o.transpose(1, 2).reshape(n, tt, d) @ tp["Wo"] + tp["bo"]
    out.backward(t(dout))
    return out.detach().numpy(), tx.grad.numpy(), {k: v.grad.numpy() for k, v in tp.items()}


MHA_CASES = [(2, 3, 4, 2), (2, 5, 6, 3), (3, 4, 8, 1), (1, 2, 6, 6), (2, 1, 4, 4)]


def mha_inputs(seed: int, n: int, tt: int, d: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, tt, d)), ref.mha_params(seed + 1, d), rng.standard_normal((n, tt, d))


def check_mha(got: tuple[np.ndarray, dict[str, np.ndarray]], out: np.ndarray,
              want: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]) -> None:
    dx, grads = got
    close(out, want[0])
    close(dx, want[1])
    assert list(grads) == list(ref.PARAM_KEYS)
    for key in ref.PARAM_KEYS:
        assert grads[key].dtype == np.float64
        close(grads[key], want[2][key])
    assert np.max(np.abs(grads["bk"])) < 1e-12  # zero in exact arithmetic: softmax ignores a per-row shift


@pytest.mark.parametrize("n, tt, d, h", MHA_CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_mha_matches_torch_multihead_attention(n: int, tt: int, d: int, h: int, causal: bool) -> None:
    x, params, dout = mha_inputs(8, n, tt, d)
    before = {k: v.copy() for k, v in params.items()}
    out, cache = ref.mha_forward(x, params, h, causal=causal)
    check_mha(ref.mha_backward(dout, cache), out, torch_mha(x, params, h, dout, causal=causal))
    for key, value in before.items():
        np.testing.assert_array_equal(params[key], value)


@pytest.mark.parametrize("n, tt, d, h", MHA_CASES)
def test_mha_masks_match_torch_attn_mask_and_key_padding(n: int, tt: int, d: int, h: int) -> None:
    rng = np.random.default_rng(9)
    x, params, dout = mha_inputs(10, n, tt, d)
    square = ref.random_mask(rng, (tt, tt))
    out, cache = ref.mha_forward(x, params, h, mask=square)
    check_mha(ref.mha_backward(dout, cache), out, torch_mha(x, params, h, dout, attn_mask=square))
    keys = ref.padding_mask(rng.integers(1, tt + 1, size=n), tt)
    out, cache = ref.mha_forward(x, params, h, mask=keys[:, None, None, :])
    check_mha(ref.mha_backward(dout, cache), out, torch_mha(x, params, h, dout, key_padding=keys))


@pytest.mark.parametrize("n, tt, d, h", MHA_CASES)
def test_mha_with_a_mask_per_example_and_head_matches_autograd(n: int, tt: int, d: int, h: int) -> None:
    rng = np.random.default_rng(11)
    x, params, dout = mha_inputs(12, n, tt, d)
    for mask, causal in [(ref.random_mask(rng, (n, h, tt, tt)), False),
                         (ref.random_mask(rng, (n, 1, tt, tt)) | np.eye(tt, dtype=bool), True)]:
        out, cache = ref.mha_forward(x, params, h, mask=mask, causal=causal)
        check_mha(ref.mha_backward(dout, cache), out, autograd_mha(x, params, h, dout, mask, causal))


def test_mha_is_stable_for_large_scores() -> None:
    x, params, dout = mha_inputs(13, 2, 4, 4)
    params = {k: (30.0 * v if k in ("Wq", "Wk") else v) for k, v in params.items()}
    x = 10.0 * x
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        out, cache = ref.mha_forward(x, params, 2, causal=True)
        got = ref.mha_backward(dout, cache)
    scores = np.abs(ref.split_heads(x @ params["Wq"], 2) @ np.swapaxes(ref.split_heads(x @ params["Wk"], 2), -1, -2))
    assert scores.max() > 1e4
    want = torch_mha(x, params, 2, dout, causal=True)
    close(out, want[0], rtol=1e-10)
    close(got[0], want[1], rtol=1e-9)
