"""Attention from scratch: scaled dot-product attention and multi-head self-attention, in numpy only.

Every array is float64 (masks are bool). Each `*_forward` returns its output and
a `cache` that only your own `*_backward` ever reads; each `*_backward` returns
the gradients of the loss with respect to the forward's inputs, in the order
given. Do not modify the arrays you are given.
"""

from typing import Any

import numpy as np


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
                      causal: bool = False) -> tuple[np.ndarray, Any]:
    """Scaled dot-product attention: softmax(q @ k^T / sqrt(d)) @ v, the softmax over the keys.

    q: (..., Tq, d), k: (..., Tk, d), v: (..., Tk, dv), with the same leading dimensions
    (for example (N, T, d) or (N, H, T, d)).
    mask: None, or a bool array broadcastable to (..., Tq, Tk): True where a query may attend
    to a key (PyTorch's bool attn_mask); a False pair gets exactly zero weight.
    causal: when True, query i attends only to keys j <= i (as well as the mask allows);
    only used with Tq == Tk.
    Every query keeps at least one key it may attend to. Scores of magnitude 1e4 must not overflow.
    Returns (out, cache) with out: (..., Tq, dv).
    """
    raise NotImplementedError("attention_forward: return (out, cache)")


def attention_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of attention_forward.

    dout: (..., Tq, dv). Returns (dq, dk, dv) shaped like q, k and v.
    """
    raise NotImplementedError("attention_backward: return (dq, dk, dv)")


def mha_forward(x: np.ndarray, params: dict[str, np.ndarray], num_heads: int, mask: np.ndarray | None = None,
                causal: bool = False) -> tuple[np.ndarray, Any]:
    """Multi-head self-attention.

    x: (N, T, D). params: "Wq", "Wk", "Wv", "Wo" of shape (D, D) and "bq", "bk", "bv", "bo" of
    shape (D,), each projection computed as a @ W + b (W is (D_in, D_out): the transpose of
    torch.nn.Linear's weight). num_heads H divides D; head h uses features h*D/H to (h+1)*D/H.
      q = x @ Wq + bq, k = x @ Wk + bk, v = x @ Wv + bv, each split into heads (N, H, T, D/H);
      attention per head (as attention_forward, mask and causal included);
      heads merged back to (N, T, D); out = merged @ Wo + bo.
    mask: None, or a bool array broadcastable to (N, H, T, T), True where a query may attend to a key.
    Returns (out, cache) with out: (N, T, D).
    """
    raise NotImplementedError("mha_forward: return (out, cache)")


def mha_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Backward pass of mha_forward.

    dout: (N, T, D). Returns (dx, grads): dx shaped like x, grads a dict with a key for every
    param ("Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo"), each shaped like its param.
    """
    raise NotImplementedError("mha_backward: return (dx, grads)")
