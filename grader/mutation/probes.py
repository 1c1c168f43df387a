"""Equivalence probes: each problem's contract functions called on fixed seeded inputs.

A probe takes a module (the reference, or a mutant loaded from source) and
returns everything observable: every return value, and every argument as it is
after the call (an input the function must not touch, running statistics it
must update). Two modules are *equivalent* when their probes return the same
tree of values: same structure, same shapes, and every number equal within
rtol = atol = 1e-12 (NaN equal to NaN); an exception is a value too (its type).
The inputs follow GRADING.md's "inputs that expose bugs": N >= 2, 3-dim affine
inputs, stride 2, pad 0 and 1, overlapping pools, logits of 1e4, pre-activations
of 1e3, non-zero biases, several dropout p, both batch-norm modes.
A probe is a sample, not a proof: a mutant equivalent here and different
elsewhere is counted as equivalent; grading would score it full marks too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

Probe = Callable[[ModuleType], list[Any]]
RTOL = ATOL = 1e-12


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _call(out: list[Any], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call and record the result and the arguments afterwards; an exception is recorded by its type."""
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # a mutant that raises differs from a reference that returns
        out.append(("raised", type(exc).__name__))
        return None
    out.append(_snapshot(result))
    out.append(_snapshot((args, kwargs)))
    return result


def _snapshot(value: Any) -> Any:
    """A comparable copy: arrays and tensors as numpy arrays, caches (opaque) left out."""
    if type(value).__module__.startswith("torch"):
        try:
            return np.array(value.detach().cpu().numpy(), dtype=np.float64)
        except AttributeError:
            return type(value).__name__
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (tuple, list)):
        return [_snapshot(v) for v in value]
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (int, float, bool, str, type(None), np.generic)):
        return value
    return type(value).__name__


def _outputs(result: Any) -> Any:
    """A (out..., cache) return without its cache (opaque: two correct solutions may keep different ones)."""
    return result[:-1] if isinstance(result, tuple) else result


def same(a: Any, b: Any) -> bool:
    """Equal trees: the definition of an equivalent mutant (see the module docstring)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        if a_arr.shape != b_arr.shape:
            return False
        if a_arr.dtype.kind in "fc" or b_arr.dtype.kind in "fc":
            try:
                return bool(np.allclose(a_arr, b_arr, rtol=RTOL, atol=ATOL, equal_nan=True))
            except TypeError:
                return False
        return bool(np.array_equal(a_arr, b_arr))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, int, np.number)):
        return bool(np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))
    return type(a) is type(b) and bool(a == b)


def _layer(out: list[Any], forward: Callable[..., Any], backward: Callable[..., Any], args: tuple[Any, ...],
           dout: Any, **kwargs: Any) -> None:
    """forward, its outputs without the cache, then backward with the forward's own cache."""
    rec: list[Any] = []
    result = _call(rec, forward, *args, **kwargs)
    out.append([_outputs(r) if isinstance(r, list) else r for r in rec[:1]] + rec[1:])
    if isinstance(result, tuple):
        _call(out, backward, dout, result[-1])


def _train_small(out: list[Any], fn: Callable[..., Any], *args: Any) -> None:
    _call(out, fn, *args)


# -- mlp -------------------------------------------------------------------------------------------

def probe_mlp(m: ModuleType) -> list[Any]:
    out: list[Any] = []
    r = _rng(1)
    for shape in [(3, 4), (2, 3, 2)]:
        x = r.standard_normal(shape)
        d = int(np.prod(shape[1:]))
        _layer(out, m.affine_forward, m.affine_backward, (x, r.standard_normal((d, 5)), r.standard_normal(5)),
               r.standard_normal((shape[0], 5)))
    x = r.standard_normal((3, 4))
    _layer(out, m.relu_forward, m.relu_backward, (x,), r.standard_normal((3, 4)))
    for scale in (1.0, 1e4):
        logits = scale * r.standard_normal((4, 5)) + (scale * 3 if scale > 1 else 0)
        _call(out, m.softmax_cross_entropy, logits, np.array([0, 2, 4, 1]))
    for reg in (0.0, 0.3):
        net = m.TwoLayerNet(6, 5, 3, weight_scale=0.5, reg=reg, seed=2)
        out.append(_snapshot(net.params))
        for k in list(net.params):
            net.params[k] = net.params[k] + 0.1 * r.standard_normal(net.params[k].shape)
        X, y = r.standard_normal((4, 6)), np.array([0, 2, 1, 2])
        _call(out, net.loss, X)
        _call(out, net.loss, X, y)
        _call(out, net.loss, X, y)
    params = {"W": r.standard_normal((3, 2)), "b": r.standard_normal(2)}
    grads = {"W": r.standard_normal((3, 2)), "b": r.standard_normal(2)}
    _call(out, m.sgd_step, params, grads, 0.1)
    _call(out, m.sgd_step, params, grads, 0.1)
    X = r.standard_normal((150, 5))  # more than two batches of the reference's 64, the last one short
    _train_small(out, m.train_mlp, X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0), 8, 3, 0)
    return out


# -- cnn -------------------------------------------------------------------------------------------

def probe_cnn(m: ModuleType) -> list[Any]:
    out: list[Any] = []
    r = _rng(2)
    for (n, c, h, w_), (f, kh, kw), stride, pad in [((2, 2, 5, 6), (3, 3, 2), 1, 0), ((2, 1, 7, 6), (2, 3, 3), 2, 1),
                                                     ((1, 2, 6, 5), (2, 2, 3), 2, 0), ((2, 1, 4, 4), (1, 3, 3), 1, 2)]:
        x, w, b = r.standard_normal((n, c, h, w_)), r.standard_normal((f, c, kh, kw)), r.standard_normal(f)
        h_out, w_out = 1 + (h + 2 * pad - kh) // stride, 1 + (w_ + 2 * pad - kw) // stride
        _layer(out, m.conv2d_forward, m.conv2d_backward, (x, w, b), r.standard_normal((n, f, h_out, w_out)),
               stride=stride, pad=pad)
    for (h, w_), kernel, stride in [((4, 6), 2, 2), ((5, 5), 3, 2), ((6, 7), 2, 1)]:
        x = r.permutation(2 * 3 * h * w_).reshape(2, 3, h, w_) / 7.0
        h_out, w_out = 1 + (h - kernel) // stride, 1 + (w_ - kernel) // stride
        _layer(out, m.maxpool2d_forward, m.maxpool2d_backward, (x,), r.standard_normal((2, 3, h_out, w_out)),
               kernel=kernel, stride=stride)
    X = r.standard_normal((40, 1, 8, 8))
    _train_small(out, m.train_cnn, X, (X[:, 0, 0, 0] > 0).astype(np.int64), 0)
    return out


# -- rnn -------------------------------------------------------------------------------------------

def probe_rnn(m: ModuleType) -> list[Any]:
    out: list[Any] = []
    r = _rng(3)
    n, d, h, t = 3, 4, 5, 3
    for scale in (1.0, 1e3):
        x, hp = r.standard_normal((n, d)), r.standard_normal((n, h))
        wx, wh, b = r.standard_normal((d, h)), r.standard_normal((h, h)), scale * r.standard_normal(h)
        _layer(out, m.rnn_step_forward, m.rnn_step_backward, (x, hp, wx, wh, b), r.standard_normal((n, h)))
        cp = r.standard_normal((n, h))
        wx4, wh4, b4 = r.standard_normal((d, 4 * h)), r.standard_normal((h, 4 * h)), scale * r.standard_normal(4 * h)
        rec: list[Any] = []
        res = _call(rec, m.lstm_step_forward, x, hp, cp, wx4, wh4, b4)
        out.append([_outputs(rec[0]) if isinstance(rec[0], list) else rec[0]] + rec[1:])
        if isinstance(res, tuple):
            _call(out, m.lstm_step_backward, r.standard_normal((n, h)), r.standard_normal((n, h)), res[-1])
        xs = r.standard_normal((n, t, d))
        _layer(out, m.lstm_forward, m.lstm_backward, (xs, hp, wx4 / 2, wh4 / 2, b4), r.standard_normal((n, t, h)))
    return out


# -- regularization --------------------------------------------------------------------------------

def probe_regularization(m: ModuleType) -> list[Any]:
    out: list[Any] = []
    r = _rng(4)
    params = {"W1": r.standard_normal((3, 4)), "b1": r.standard_normal(4), "W2": r.standard_normal((4, 2)),
              "gamma": r.standard_normal(2)}
    _call(out, m.l2_penalty, params, 0.7)
    x = r.standard_normal((5, 6))
    for p in (0.0, 0.25, 0.5, 0.8, 1.0):
        for train in (True, False):
            _layer(out, m.dropout_forward, m.dropout_backward, (x, p, train, 7), r.standard_normal((5, 6)))
    gamma, beta = r.standard_normal(4), r.standard_normal(4)
    for bn_param in ({"mode": "train"}, {"mode": "train", "eps": 1e-3, "momentum": 0.3,
                                         "running_mean": r.standard_normal(4), "running_var": r.random(4) + 0.5}):
        for n in (5, 2):  # N = 2: the smallest batch train mode accepts
            x = 3 * r.standard_normal((n, 4)) + 1
            _layer(out, m.batchnorm_forward, m.batchnorm_backward, (x, gamma, beta, bn_param),
                   r.standard_normal((n, 4)))
        eval_param = copy.deepcopy(bn_param)
        eval_param["mode"] = "eval"
        _call(out, m.batchnorm_forward, r.standard_normal((3, 4)), gamma, beta, eval_param)
    for mode, delta, values in [("min", 0.0, [5, 4, 4, 4.5, 3.9, 4, 4, 4, 4]),
                                ("min", 0.2, [5, 4.9, 4.7, 4.6, 4.65, 4.5, 4.4, 4.4]),
                                ("max", 0.0, [1, 2, 2, 1.5, 2.5, 2.5, 2.4, 2.1, 2.0]),
                                ("max", 0.5, [1, 1.4, 1.6, 2.2, 2.5, 2.6, 2.7])]:
        for patience in (1, 2, 3):
            stopper = m.EarlyStopping(patience, min_delta=delta, mode=mode)
            for v in values:
                _call(out, stopper.step, float(v))
                out.append((getattr(stopper, "best_value", None), getattr(stopper, "best_epoch", None)))
    return out


# -- gan -------------------------------------------------------------------------------------------

def probe_gan(m: ModuleType) -> list[Any]:
    import torch

    from sandbox.builtins.gan import OPTIMIZERS, build_discriminator, build_generator, make_optimizers, ring_sampler

    out: list[Any] = []
    torch.set_default_dtype(torch.float64)
    r = _rng(5)
    for scale in (1.0, 100.0):
        real = torch.tensor(scale * r.standard_normal((6, 1)))
        fake = torch.tensor(scale * r.standard_normal((6, 1)))
        _call(out, m.discriminator_loss, real, fake)
        _call(out, m.generator_loss, fake)
    for kind in sorted(OPTIMIZERS):
        G, D = build_generator(3, 1), build_discriminator(2)
        opt_G, opt_D = make_optimizers(G, D, kind)
        _watch_generator_grads(out, G, opt_D)
        for _ in range(2):
            real = torch.tensor(r.standard_normal((8, 2)))
            z = torch.tensor(r.standard_normal((8, 3)))
            _call(out, m.train_step, G, D, opt_G, opt_D, real, z)
        out.append([_snapshot(p) for p in [*G.parameters(), *D.parameters()]])
    torch.manual_seed(0)
    G, D = build_generator(3, 1), build_discriminator(2)
    _call(out, m.train_gan, G, D, ring_sampler(0), 3, 5)
    out.append([_snapshot(p) for p in [*G.parameters(), *D.parameters()]])
    return out


def _watch_generator_grads(out: list[Any], G: Any, opt_D: Any) -> None:
    """Record G's gradients when D steps: a D update that reaches G (no detach) leaves no trace in the
    parameters, since G's update zeroes them first, but shows here."""
    step = opt_D.step

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        out.append(["G grads at D's step", [None if p.grad is None else _snapshot(p.grad) for p in G.parameters()]])
        return step(*args, **kwargs)

    opt_D.step = recording_step


# The newer problems keep their probes in modules of their own, which import the helpers above.
from grader.mutation.probes_attention import probe_attention  # noqa: E402
from grader.mutation.probes_optim import probe_optim  # noqa: E402

PROBES: dict[str, Probe] = {"mlp": probe_mlp, "cnn": probe_cnn, "rnn": probe_rnn,
                            "regularization": probe_regularization, "gan": probe_gan,
                            "attention": probe_attention, "optim": probe_optim}
