"""Test plan for `attention`: scaled dot-product attention and multi-head self-attention in numpy.

GRADING.md's layers, as they apply: conformance (exact shapes, float64, finite
values, inputs untouched) before values; forward and backward against the
reference (itself verified against torch's scaled_dot_product_attention,
MultiheadAttention and autograd in tests/test_reference_attention.py) on fixed
and generated cases of 3 and 4 dims, Tq != Tk, d != dv and one to four heads;
finite differences of the candidate's own forward; masks (padding, per query,
causal, both) with a masked key required to have no influence and no
gradient; stability at scores of 1e4. Known mistakes (the scale, the softmax
axis, the mask's sense, the causal diagonal, the head split and merge, the
softmax Jacobian's row-sum term, the projections' convention) are named in the
verdict.

The key bias's gradient is zero in exact arithmetic (a shift of every score
of a row leaves its softmax unchanged), so finite differences of it are pure
rounding: the gradient checks leave bk out, and the backward test compares
it with the reference's rounding-level zeros under the usual absolute
tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from grader.engine.checks import strategies as gst
from grader.engine.checks.compare import NotFinite, expect_tuple
from grader.engine.checks.gradcheck import BatchObjective, self_consistency, settings_for
from grader.engine.checks.layers import Contract, Layer, batch_size, check_values, expect_values, run_fixed
from grader.engine.checks.variants import Variant
from grader.engine.plan import CheckFailed, Context, Plan, describe_example
from reference import attention as ref

plan = Plan()
Arrays = dict[str, np.ndarray]

ATTENTION = Layer(
    Contract("attention_forward", args=("q", "k", "v"), returns=("out", "cache"), handle="cache",
             reference=ref.attention_forward, options=("mask", "causal")),
    Contract("attention_backward", args=("dout", "cache"), returns=("dq", "dk", "dv"),
             reference=ref.attention_backward),
    upstream={"out": "dout"}, grads={"q": "dq", "k": "dk", "v": "dv"})
MHA_FORWARD = Contract("mha_forward", args=("x", "params", "num_heads"), returns=("out", "cache"), handle="cache",
                       reference=ref.mha_forward, options=("mask", "causal"))
MHA_BACKWARD = Contract("mha_backward", args=("dout", "cache"), returns=("dx", "grads"))
GRAD_NAMES = {key: f"grads['{key}']" for key in ref.PARAM_KEYS}


# -- cases ---------------------------------------------------------------------------------------


@st.composite
def bool_mask(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    """A bool mask of `shape` (..., Tq, Tk) with at least one True in every row."""
    mask = draw(hnp.arrays(np.bool_, shape))
    first = draw(hnp.arrays(np.int64, shape[:-1], elements=st.integers(0, shape[-1] - 1)))
    mask = mask.copy()
    np.put_along_axis(mask, first[..., None], True, axis=-1)
    return mask


@st.composite
def masks(draw: st.DrawFn, lead: tuple[int, ...], tq: int, tk: int) -> np.ndarray:
    """A padding mask (one row of keys per example), a mask per query for every example, or one (Tq, Tk)."""
    kind = draw(st.sampled_from(["padding", "full", "shared"]))
    if kind == "padding":
        lengths = draw(st.lists(st.integers(1, tk), min_size=lead[0], max_size=lead[0]))
        return ref.padding_mask(lengths, tk).reshape((lead[0], *(1,) * (len(lead) - 1), 1, tk))
    return draw(bool_mask((*lead, tq, tk) if kind == "full" else (tq, tk)))


@st.composite
def attention_cases(draw: st.DrawFn, masked: bool = False, causal: bool = False) -> dict[str, Any]:
    """q, k, v of 3 or 4 dims (N >= 2), a Gaussian-like upstream gradient, and a mask or causal flag."""
    lead = (draw(st.integers(2, 3)),) + tuple(draw(st.lists(st.integers(1, 3), max_size=1)))
    tq = draw(st.integers(2, 5) if causal else st.integers(1, 5))
    tk = tq if causal else draw(st.integers(1, 5))
    d, dv = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    case = {"q": draw(gst.arrays((*lead, tq, d))), "k": draw(gst.arrays((*lead, tk, d))),
            "v": draw(gst.arrays((*lead, tk, dv))), "mask": None, "causal": causal,
            "dout": draw(gst.arrays((*lead, tq, dv)))}
    if masked:
        case["mask"] = draw(masks(lead, tq, tk))
        if causal:  # the diagonal stays allowed, so no query is left without a key
            case["mask"] = case["mask"] | np.eye(tq, dtype=bool)
    return case


def fixed_attention(rng: np.random.Generator, lead: tuple[int, ...], tq: int, tk: int, d: int, dv: int,
                    mask: np.ndarray | None = None, causal: bool = False, scale: float = 1.0) -> dict[str, Any]:
    return {"q": scale * rng.standard_normal((*lead, tq, d)), "k": rng.standard_normal((*lead, tk, d)),
            "v": rng.standard_normal((*lead, tk, dv)), "mask": mask, "causal": causal,
            "dout": rng.standard_normal((*lead, tq, dv))}


@st.composite
def mha_cases(draw: st.DrawFn, masked: bool = False, causal: bool = False) -> dict[str, Any]:
    """x (N >= 2, T, D = H * D/H), seeded params with non-zero biases, an upstream gradient, masks."""
    n, heads, head_dim = draw(st.integers(2, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    t = draw(st.integers(2, 5) if causal else st.integers(1, 5))
    d = heads * head_dim
    case = {"x": draw(gst.arrays((n, t, d))), "params": ref.mha_params(draw(st.integers(0, 2**31 - 1)), d),
            "num_heads": heads, "mask": None, "causal": causal, "dout": draw(gst.arrays((n, t, d)))}
    if masked:
        kind = draw(st.sampled_from(["padding", "shared", "per head"]))
        if kind == "padding":
            lengths = draw(st.lists(st.integers(1, t), min_size=n, max_size=n))
            case["mask"] = ref.padding_mask(lengths, t)[:, None, None, :]
        else:
            case["mask"] = draw(bool_mask((t, t) if kind == "shared" else (n, heads, t, t)))
        if causal:
            case["mask"] = case["mask"] | np.eye(t, dtype=bool)
    return case


def describe_mha(case: dict[str, Any]) -> str:
    """A generated layer case: shapes and flags, the params by shape (they are seeded), small arrays in full."""
    shown = {k: v for k, v in case.items() if k != "params"}
    return (f"params: {', '.join(f'{k} {v.shape}' for k, v in case['params'].items())} (seeded Gaussian); "
            + describe_example(shown))


def fixed_mha(rng: np.random.Generator, n: int, t: int, d: int, heads: int, mask: np.ndarray | None = None,
              causal: bool = False, weight_scale: float = 0.5) -> dict[str, Any]:
    return {"x": rng.standard_normal((n, t, d)), "params": ref.mha_params(int(rng.integers(2**31)), d, weight_scale),
            "num_heads": heads, "mask": mask, "causal": causal, "dout": rng.standard_normal((n, t, d))}


# -- mistaken attention: what known mistakes return, computed on the host ------------------------------


def _softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = scores - np.max(scores, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return np.asarray(e / np.sum(e, axis=axis, keepdims=True))


def _mistaken(case: dict[str, Any], *, scale: float | None = None, axis: int = -1,
              allowed: np.ndarray | None | str = "contract", after_softmax: bool = False) -> np.ndarray:
    """The forward of attention with one mistake: another scale, the softmax's axis, another mask, or the mask
    applied after the softmax (zeroing without renormalizing). Non-finite where the mistake leaves a row empty."""
    q, k, v = case["q"], case["k"], case["v"]
    with np.errstate(all="ignore"):
        scores = (q @ np.swapaxes(k, -1, -2)) * (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
        keep = ref.allowed_mask(case["mask"], case["causal"], q.shape[-2], k.shape[-2]) if isinstance(
            allowed, str) else allowed
        if keep is not None and not after_softmax:
            scores = np.where(keep, scores, -np.inf)
        weights = _softmax(scores, axis)
        if keep is not None and after_softmax:
            weights = weights * keep
        return np.asarray(weights @ v)


def _causal_variants(case: dict[str, Any], name: str, run: Callable[[dict[str, Any]], np.ndarray]) -> list[Variant]:
    """Known misreadings of causal=True: the diagonal left out, the triangle transposed, the flag ignored."""
    if not case["causal"]:
        return []
    t = (case["q"] if "q" in case else case["x"]).shape[-2]
    mask = case["mask"] if case["mask"] is not None else True
    return [
        Variant("causal=True lets query i attend to keys j >= i (the upper triangle): it must attend to keys "
                "j <= i, its past and itself (torch.tril)",
                lambda: {name: run({**case, "causal": False, "mask": np.triu(np.ones((t, t), bool)) & mask})}),
        Variant("causal=True leaves out the diagonal: query i must attend to keys j <= i, itself included",
                lambda: {name: run({**case, "causal": False, "mask": np.tril(np.ones((t, t), bool), -1) & mask})}),
        Variant("causal=True is ignored: query i must attend only to keys j <= i",
                lambda: {name: run({**case, "causal": False})}),
    ]


def _attention_variants(case: dict[str, Any]) -> list[Variant]:
    d = case["q"].shape[-1]
    variants = [
        Variant("the scores are not scaled: they must be q @ k^T / sqrt(d)",
                lambda: {"out": _mistaken(case, scale=1.0)}),
        Variant("the scores are divided by d; they must be divided by sqrt(d)",
                lambda: {"out": _mistaken(case, scale=1.0 / d)}),
        Variant("the softmax is taken over the queries (axis -2); it must be over the keys (the last axis), so "
                "each query's weights sum to 1", lambda: {"out": _mistaken(case, axis=-2)}),
    ]
    if case["mask"] is not None or case["causal"]:
        variants.append(Variant(
            "the mask is applied after the softmax (masked weights zeroed without renormalizing): the weights of "
            "the keys a query may attend to must sum to 1; mask the scores (to -inf) before the softmax",
            lambda: {"out": _mistaken(case, after_softmax=True)}))
    if case["mask"] is not None:
        inverted = ~np.asarray(case["mask"], dtype=bool)
        if case["causal"]:
            inverted = inverted & np.tril(np.ones((case["q"].shape[-2],) * 2, bool))
        variants += [
            Variant("the mask's sense is inverted: True means the query MAY attend to the key (PyTorch's bool "
                    "attn_mask), False that it gets zero weight", lambda: {"out": _mistaken(case, allowed=inverted)}),
            Variant("the mask is ignored", lambda: {"out": _mistaken(case, allowed=None if not case["causal"] else
                                                                     np.tril(np.ones((case["q"].shape[-2],) * 2,
                                                                                     bool)))}),
        ]
    return variants + _causal_variants(case, "out", lambda c: _mistaken(c))


def _attention_out(ctx: Context, case: dict[str, Any], own: bool) -> dict[str, Any]:
    """The candidate's forward returns, with a diagnosis when out is not finite."""
    got = ATTENTION.forward.call(ctx, case, own=own)
    out = got["out"]
    if isinstance(out, np.ndarray) and out.dtype.kind == "f" and not np.all(np.isfinite(out)):
        rows = ~np.all(np.isfinite(out), axis=-1)
        hint = ""
        if case["causal"] and rows[..., 0].all() and not rows[..., 1:].any():
            hint = ("only query 0's output is not finite: with causal=True query 0 may attend to key 0 only; "
                    "is the diagonal left out of the causal mask (j < i instead of j <= i)?")
        elif case["mask"] is not None:
            hint = ("with a mask, the softmax divides 0 by 0 where no allowed key is left: is the mask's sense "
                    "inverted (True means the query may attend to the key), or the softmax taken over another axis "
                    "than the keys?")
        else:
            hint = "exponentials overflow? subtract each row's maximum score before exponentiating"
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise NotFinite(f"attention_forward: out has {bad} non-finite value(s) (nan or inf): {hint}")
    return got


def _check_attention_forward(ctx: Context, case: dict[str, Any], own: bool = True) -> None:
    got = _attention_out(ctx, case, own)
    expected = ATTENTION.forward.expected(case)
    check_values(*ATTENTION.forward.arrays(got, expected), _attention_variants(case), own=own)


# -- scaled dot-product attention: forward -------------------------------------------------------------


@plan.test("attn_forward")
def attn_forward(ctx: Context) -> None:
    rng = ctx.rng("fixed")
    run_fixed([fixed_attention(rng, (2,), 3, 4, 5, 2), fixed_attention(rng, (2, 3), 4, 3, 2, 3)],
              lambda case: _check_attention_forward(ctx, case))
    ctx.check_property(attention_cases(), lambda case: _check_attention_forward(ctx, case))


def _check_no_influence(ctx: Context, case: dict[str, Any]) -> None:
    """Keys a padding mask hides from every query: changing their k and v must leave out exactly as it was."""
    mask = np.asarray(case["mask"], dtype=bool)
    hidden = ~np.broadcast_to(mask, (*case["q"].shape[:-1], case["k"].shape[-2])).any(axis=-2)  # (..., Tk)
    if not hidden.any():
        return
    before = expect_values(ATTENTION.forward.call(ctx, case)["out"], "out", case["dout"].shape)
    k, v = case["k"].copy(), case["v"].copy()
    k[hidden] = 50.0 * np.sign(k[hidden] + 0.5)
    v[hidden] = 1e3
    after = expect_values(ATTENTION.forward.call(ctx, {**case, "k": k, "v": v})["out"], "out", case["dout"].shape)
    if not np.array_equal(before, after):
        raise CheckFailed("changing k and v at keys the mask hides from every query changed out: a masked key must "
                          "get exactly zero weight (mask the scores to -inf before the softmax, or to a value whose "
                          "exponential underflows to 0)")


@plan.test("attn_mask")
def attn_mask(ctx: Context) -> None:
    rng = ctx.rng("fixed")
    padding = fixed_attention(rng, (3,), 4, 5, 3, 2, mask=ref.padding_mask([5, 2, 3], 5)[:, None, :])
    per_head = fixed_attention(rng, (2, 2), 3, 4, 2, 3, mask=ref.random_mask(rng, (2, 2, 3, 4)))
    shared = fixed_attention(rng, (2, 3), 4, 4, 3, 2, mask=ref.random_mask(rng, (4, 4)))

    def check(case: dict[str, Any]) -> None:
        _check_attention_forward(ctx, case, own=False)
        _check_no_influence(ctx, case)

    run_fixed([padding, per_head, shared], check)
    ctx.check_property(attention_cases(masked=True), check)


@plan.test("attn_causal")
def attn_causal(ctx: Context) -> None:
    rng = ctx.rng("fixed")
    cases = [fixed_attention(rng, (2,), 4, 4, 3, 2, causal=True),
             fixed_attention(rng, (2, 2), 5, 5, 2, 3, causal=True,
                             mask=ref.padding_mask([4, 3], 5)[:, None, None, :] | np.eye(5, dtype=bool))]

    def check(case: dict[str, Any]) -> None:
        _check_attention_forward(ctx, case, own=False)

    run_fixed(cases, check)
    ctx.check_property(st.one_of(attention_cases(causal=True), attention_cases(masked=True, causal=True)), check)


# -- backward ---------------------------------------------------------------------------------------------


def _backward_variants(case: dict[str, Any], expected: dict[str, Any]) -> list[Variant]:
    """What known mistaken backward passes return, from the reference forward's own weights."""
    _, cache = ref.attention_forward(case["q"], case["k"], case["v"], case["mask"], case["causal"])
    q, k, v, weights, scale = cache
    dout = case["dout"]

    def no_row_sum() -> dict[str, np.ndarray]:
        dscores = weights * (dout @ np.swapaxes(v, -1, -2))
        return {"dq": (dscores @ k) * scale, "dk": (np.swapaxes(dscores, -1, -2) @ q) * scale}

    def unmasked() -> dict[str, np.ndarray]:
        _, plain = ref.attention_forward(q, k, v)
        dq, dk, dv = ref.attention_backward(dout, (q, k, v, plain[3], scale))
        return {"dq": dq, "dk": dk, "dv": dv}

    def rescaled(factor: float) -> Callable[[], dict[str, np.ndarray]]:
        """The exact gradients of a forward whose scores are q @ k^T * factor * scale."""
        def grads() -> dict[str, np.ndarray]:
            c = {**case, "q": q * factor}
            dq, dk, dv = ATTENTION.vjp(c).values()
            return {"dq": dq * factor, "dk": dk, "dv": dv}
        return grads

    d = q.shape[-1]
    variants = [
        Variant("the gradients are those of a forward pass whose scores are not scaled (see attn_forward): the "
                "scores are q @ k^T / sqrt(d)", rescaled(np.sqrt(d))),
        Variant("the gradients are those of a forward pass whose scores are divided by d (see attn_forward): the "
                "scores are q @ k^T / sqrt(d)", rescaled(1.0 / np.sqrt(d))),
        Variant("dscores leaves out the softmax Jacobian's row-sum term: dscores = weights * (dweights - "
                "sum(dweights * weights, over the keys))", no_row_sum),
        Variant("dk is missing the 1/sqrt(d) scale of the scores", {"dk": expected["dk"] / scale}),
        Variant("dq is missing the 1/sqrt(d) scale of the scores", {"dq": expected["dq"] / scale}),
        Variant("dq and dk are both missing the 1/sqrt(d) scale of the scores",
                {"dq": expected["dq"] / scale, "dk": expected["dk"] / scale}),
    ]
    if case["mask"] is not None or case["causal"]:
        variants.append(Variant("the backward uses the softmax weights before masking: masked pairs must carry no "
                                "gradient (keep the masked weights, zeros included, in the cache)", unmasked))
    return variants


def _check_backward(ctx: Context, case: dict[str, Any], own: bool = True) -> None:
    _, got = ATTENTION.call_backward(ctx, case, own=own)
    expected = ATTENTION.vjp(case)
    check_values(*ATTENTION.backward.arrays(got, expected, ("dv", "dq", "dk")),
                 _backward_variants(case, expected), own=own)


@plan.test("attn_backward")
def attn_backward(ctx: Context) -> None:
    rng = ctx.rng("fixed")
    run_fixed([fixed_attention(rng, (2,), 3, 4, 5, 2), fixed_attention(rng, (2, 3), 4, 3, 2, 3)],
              lambda case: _check_backward(ctx, case))
    ctx.check_property(attention_cases(), lambda case: _check_backward(ctx, case))


def _check_masked_keys_get_no_gradient(ctx: Context, case: dict[str, Any]) -> None:
    _, got = ATTENTION.call_backward(ctx, case, own=False)
    mask = np.asarray(case["mask"], dtype=bool)
    hidden = ~np.broadcast_to(mask, (*case["q"].shape[:-1], case["k"].shape[-2])).any(axis=-2)
    for name in ("dk", "dv"):
        value = expect_values(got[name], name, case[name[1:]].shape)
        if np.any(value[hidden] != 0):
            raise CheckFailed(f"{name} is not zero at keys the mask hides from every query: a masked key takes no "
                              "part in the forward pass, so it must get exactly zero gradient")


@plan.test("attn_masked_backward")
def attn_masked_backward(ctx: Context) -> None:
    rng = ctx.rng("fixed")
    padding = fixed_attention(rng, (3,), 4, 5, 3, 2, mask=ref.padding_mask([5, 2, 3], 5)[:, None, :])
    padded_heads = fixed_attention(rng, (2, 2), 3, 4, 2, 3, mask=ref.padding_mask([2, 3], 4)[:, None, None, :])
    run_fixed([padding, padded_heads], lambda case: _check_masked_keys_get_no_gradient(ctx, case))
    run_fixed([padding, padded_heads, fixed_attention(rng, (2, 2), 4, 4, 3, 2, causal=True)],
              lambda case: _check_backward(ctx, case, own=False))
    ctx.check_property(st.one_of(attention_cases(masked=True), attention_cases(causal=True),
                                 attention_cases(masked=True, causal=True)),
                       lambda case: _check_backward(ctx, case, own=False))


@plan.test("attn_gradcheck")
def attn_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    errors = {}
    padding = ref.padding_mask([4, 3], 4)[:, None, :] | np.eye(4, dtype=bool)
    for label, case in [("plain", fixed_attention(rng, (2, 2), 3, 4, 2, 3)),
                        ("masked", fixed_attention(rng, (2,), 4, 4, 3, 2, causal=True, mask=padding))]:
        inputs = {key: case[key] for key in ("q", "k", "v", "mask", "causal")}
        found = ATTENTION.gradient_check(ctx, inputs, {"dout": case["dout"]}, rng)
        errors.update({f"{label} {key}": value for key, value in found.items()})
    ctx.details["errors"] = errors


@plan.test("attn_stability")
def attn_stability(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    for magnitude in (1e2, 1e3, 1e4):
        for mask in (None, ref.random_mask(rng, (4, 5))):
            case = fixed_attention(rng, (2, 2), 4, 5, 4, 3, mask=mask)
            scores = case["q"] @ np.swapaxes(case["k"], -1, -2) / 2.0
            case["q"] = case["q"] * (magnitude / np.max(np.abs(scores)))  # the largest score is exactly `magnitude`
            where = f"scores of magnitude {magnitude:g}" + (" with a mask" if mask is not None else "")
            try:
                got = _attention_out(ctx, case, own=False)
                expected = ATTENTION.forward.expected(case)
                check_values(*ATTENTION.forward.arrays(got, expected), own=False)
                _check_backward(ctx, case, own=False)
            except CheckFailed as exc:
                hint = "" if "overflow" in exc.message else (
                    " (exponentials overflow? subtract each row's maximum before exponentiating)"
                    if isinstance(exc, NotFinite) else "")
                raise exc.amended(f"at {where}: {exc.message}{hint}",
                                  counterexample=f"q.shape={case['q'].shape}, k.shape={case['k'].shape}, "
                                                 f"largest |score| {magnitude:g}") from None


# -- multi-head self-attention ----------------------------------------------------------------------------------


def _split(a: np.ndarray, heads: int) -> np.ndarray:
    return ref.split_heads(a, heads)


def _split_reshape(a: np.ndarray, heads: int) -> np.ndarray:
    n, t, d = a.shape
    return a.reshape(n, heads, t, d // heads)


def _merge(a: np.ndarray) -> np.ndarray:
    return ref.merge_heads(a)


def _merge_reshape(a: np.ndarray) -> np.ndarray:
    n, h, t, dh = a.shape
    return a.reshape(n, t, h * dh)


SPLITS = {"right": (_split, _merge), "reshape": (_split_reshape, _merge_reshape)}


def mistaken_mha(case: dict[str, Any], *, split: str = "right", merge: str = "right", scale: str = "head",
                 transposed: bool = False, dx_paths: str = "qkv") -> dict[str, np.ndarray]:
    """Outputs and gradients of multi-head attention with one mistake, by the reference's attention.

    split/merge "reshape": heads taken by a reshape without the transpose; scale: the scores divided by the
    square root of the head size ("head", the contract's), of the model size ("model"), by the head size itself
    ("size") or not at all ("none"); transposed: x @ W.T + b (torch.nn.Linear's convention); dx_paths: the
    projections whose gradient reaches dx ("q" alone, "v" alone: a sum replaced by an assignment).
    """
    x, heads, dout = case["x"], case["num_heads"], case["dout"]
    p = {k: (v.T if transposed and k.startswith("W") else v) for k, v in case["params"].items()}
    split_fn, unsplit_fn = SPLITS[split][0], SPLITS[split][1]
    merge_fn, unmerge_fn = SPLITS[merge][1], SPLITS[merge][0]
    head_dim = x.shape[-1] // heads
    factor = {"head": 1.0, "model": np.sqrt(1.0 / heads), "size": 1.0 / np.sqrt(head_dim),
              "none": np.sqrt(head_dim)}[scale]
    q = split_fn(x @ p["Wq"] + p["bq"], heads) * factor
    k = split_fn(x @ p["Wk"] + p["bk"], heads)
    v = split_fn(x @ p["Wv"] + p["bv"], heads)
    with np.errstate(all="ignore"):
        heads_out, cache = ref.attention_forward(q, k, v, case["mask"], case["causal"])
        merged = merge_fn(heads_out)
        out = merged @ p["Wo"] + p["bo"]
        grads = {"Wo": np.einsum("ntd,nte->de", merged, dout), "bo": dout.sum(axis=(0, 1))}
        dq, dk, dv = ref.attention_backward(unmerge_fn(dout @ p["Wo"].T, heads), cache)
        dq = dq * factor
        dx = np.zeros_like(x)
        for name, g in (("q", dq), ("k", dk), ("v", dv)):
            dproj = unsplit_fn(g)
            grads["W" + name] = np.einsum("ntd,nte->de", x, dproj)
            grads["b" + name] = dproj.sum(axis=(0, 1))
            if name in dx_paths:
                dx = dx + dproj @ p["W" + name].T
    if transposed:
        grads = {k: (g.T if k.startswith("W") else g) for k, g in grads.items()}
    return {"out": out, "dx": dx, **{GRAD_NAMES[k]: grads[k] for k in ref.PARAM_KEYS}}


def _forward_mistakes() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("the heads are split by a plain reshape (N, T, D) -> (N, H, T, D/H): split with reshape(N, T, H, D/H) "
         "then transpose to (N, H, T, D/H), so that head h holds features h*D/H to (h+1)*D/H of every position",
         {"split": "reshape", "merge": "reshape"}),
        ("the heads are split by a plain reshape (N, T, D) -> (N, H, T, D/H) without the transpose",
         {"split": "reshape"}),
        ("the heads are merged by a plain reshape (N, H, T, D/H) -> (N, T, D): transpose to (N, T, H, D/H) first",
         {"merge": "reshape"}),
        ("the scores of each head are divided by sqrt(D); they must be divided by sqrt(D/H), the head size",
         {"scale": "model"}),
        ("the scores of each head are not scaled: they must be divided by sqrt(D/H), the head size",
         {"scale": "none"}),
        ("the scores of each head are divided by D/H; they must be divided by sqrt(D/H), the head size",
         {"scale": "size"}),
        ("the projections compute x @ W.T + b (torch.nn.Linear's convention); the contract's is x @ W + b",
         {"transposed": True}),
    ]


def _mha_variants(case: dict[str, Any], names: tuple[str, ...], backward: bool = False) -> list[Variant]:
    def variant(message: str, kw: dict[str, Any]) -> Variant:
        return Variant(message, lambda: {k: v for k, v in mistaken_mha(case, **kw).items() if k in names})

    found = []
    if backward:
        found += [
            variant("dx is only the gradient through the query projection: x feeds q, k and v, so dx sums the "
                    "three paths", {"dx_paths": "q"}),
            variant("dx is only the gradient through the value projection (the last one assigned, not added): x "
                    "feeds q, k and v, so dx sums the three paths", {"dx_paths": "v"}),
        ]
        found += [variant(f"the gradients are those of a forward pass with a mistake: {m}", kw)
                  for m, kw in _forward_mistakes()]
    else:
        found += [variant(m, kw) for m, kw in _forward_mistakes()]
        found += _causal_variants(case, "out", lambda c: mistaken_mha(c)["out"])
        if case["mask"] is not None:
            inverted = ~np.asarray(case["mask"], dtype=bool)
            found.append(Variant("the mask's sense is inverted: True means the query MAY attend to the key "
                                 "(PyTorch's bool attn_mask), False that it gets zero weight",
                                 lambda: {"out": mistaken_mha({**case, "mask": inverted})["out"]}))
            found.append(Variant("the mask is ignored",
                                 lambda: {"out": mistaken_mha({**case, "mask": None})["out"]}))
    return found


def _check_mha_forward(ctx: Context, case: dict[str, Any], own: bool = True) -> None:
    if own:
        args = (case["x"], case["params"], case["num_heads"])
        result, after = ctx.call_returning_args("mha_forward", *args, keep=MHA_FORWARD.keep, mask=case["mask"],
                                                causal=case["causal"])
        x_after, params_after = after[0], after[1]
        if not (isinstance(x_after, np.ndarray) and np.array_equal(x_after, case["x"])):
            raise CheckFailed("mha_forward modified its input `x` in place; inputs must be left unchanged")
        if not isinstance(params_after, dict) or sorted(params_after) != sorted(case["params"]) or not all(
                isinstance(params_after[k], np.ndarray) and np.array_equal(params_after[k], v)
                for k, v in case["params"].items()):
            raise CheckFailed("mha_forward modified the params dict it was given; it must leave params unchanged")
        got = MHA_FORWARD._named(result)
    else:
        got = MHA_FORWARD.call(ctx, case)
    expected = MHA_FORWARD.expected(case)
    check_values(*MHA_FORWARD.arrays(got, expected), _mha_variants(case, ("out",)), own=own)


@plan.test("mha_forward")
def mha_forward(ctx: Context) -> None:
    rng = ctx.rng("fixed")
    run_fixed([fixed_mha(rng, 2, 3, 6, 2), fixed_mha(rng, 3, 4, 6, 3)], lambda case: _check_mha_forward(ctx, case),
              describe_mha)
    ctx.check_property(mha_cases(), lambda case: _check_mha_forward(ctx, case), describe=describe_mha)


@plan.test("mha_mask")
def mha_mask(ctx: Context) -> None:
    rng = ctx.rng("fixed")
    cases = [fixed_mha(rng, 2, 4, 6, 2, mask=ref.padding_mask([4, 2], 4)[:, None, None, :]),
             fixed_mha(rng, 2, 4, 6, 3, causal=True),
             fixed_mha(rng, 3, 3, 4, 2, mask=ref.random_mask(rng, (3, 2, 3, 3)))]
    run_fixed(cases, lambda case: _check_mha_forward(ctx, case, own=False), describe_mha)
    ctx.check_property(st.one_of(mha_cases(masked=True), mha_cases(causal=True), mha_cases(masked=True, causal=True)),
                       lambda case: _check_mha_forward(ctx, case, own=False), describe=describe_mha)


def _mha_backward_returns(ctx: Context, case: dict[str, Any], own: bool = True) -> dict[str, Any]:
    """The candidate's dx and grads, by name (grads['Wq'], ...), after its own forward on the case."""
    out = MHA_FORWARD.call(ctx, case)
    result = ctx.call("mha_backward", case["dout"], out["cache"])
    dx, grads = expect_tuple(result, 2, "mha_backward", "dx, grads")
    if not isinstance(grads, dict):
        raise CheckFailed(f"grads must be a dict keyed like params; got {type(grads).__name__}")
    missing = [k for k in ref.PARAM_KEYS if k not in grads]
    if missing:
        raise CheckFailed(f"grads has no key {missing}: it needs a key for every param "
                          f"({', '.join(ref.PARAM_KEYS)})")
    return {"out": out["out"], "dx": dx, **{GRAD_NAMES[k]: grads[k] for k in ref.PARAM_KEYS}}


def _check_mha_backward(ctx: Context, case: dict[str, Any]) -> None:
    got = _mha_backward_returns(ctx, case)
    expected_dx, expected_grads = ref.mha_backward(case["dout"], ref.mha_forward(
        case["x"], case["params"], case["num_heads"], case["mask"], case["causal"])[1])
    expected = {"dx": expected_dx, **{GRAD_NAMES[k]: expected_grads[k] for k in ref.PARAM_KEYS}}
    names = tuple(expected)
    check_values({k: got[k] for k in names}, expected, _mha_variants(case, names, backward=True))


@plan.test("mha_backward")
def mha_backward(ctx: Context) -> None:
    rng = ctx.rng("fixed")
    cases = [fixed_mha(rng, 2, 3, 6, 2), fixed_mha(rng, 2, 4, 6, 3, causal=True),
             fixed_mha(rng, 3, 4, 4, 2, mask=ref.padding_mask([4, 2, 3], 4)[:, None, None, :])]
    run_fixed(cases, lambda case: _check_mha_backward(ctx, case), describe_mha)
    ctx.check_property(st.one_of(mha_cases(), mha_cases(masked=True, causal=True)),
                       lambda case: _check_mha_backward(ctx, case), describe=describe_mha)


# Every param but bk, whose gradient is zero in exact arithmetic (see the module docstring).
CHECKED_PARAMS = tuple(k for k in ref.PARAM_KEYS if k != "bk")


@plan.test("mha_gradcheck")
def mha_gradcheck(ctx: Context) -> None:
    rng = ctx.rng("inputs")
    case = fixed_mha(rng, 2, 3, 4, 2, mask=ref.padding_mask([3, 2], 3)[:, None, None, :], weight_scale=0.7)
    got = _mha_backward_returns(ctx, case)
    shapes = {"x": case["x"].shape, **{k: v.shape for k, v in case["params"].items()}}
    grads = {"x": expect_values(got["dx"], "dx", shapes["x"]),
             **{k: expect_values(got[GRAD_NAMES[k]], GRAD_NAMES[k], shapes[k]) for k in CHECKED_PARAMS}}
    step, tolerance = settings_for([got["out"]])
    inputs = {"x": case["x"], **{k: case["params"][k] for k in CHECKED_PARAMS}}

    def rebuild(v: dict[str, np.ndarray]) -> dict[str, Any]:
        params = {k: v.get(k, case["params"][k]) for k in ref.PARAM_KEYS}
        return {**case, "x": v["x"], "params": params}

    def objective_of(outputs: dict[str, Any]) -> float:
        return float(np.sum(expect_values(outputs["out"], "out", case["dout"].shape) * case["dout"]))

    def single(c: Any) -> dict[str, Any]:
        return MHA_FORWARD.call(ctx, c)

    def candidate(v: dict[str, np.ndarray]) -> float:
        return objective_of(single(rebuild(v)))

    def many(vs: list[dict[str, np.ndarray]]) -> list[float]:
        return [objective_of(o) for o in MHA_FORWARD.call_each(ctx, [rebuild(v) for v in vs], single,
                                                              batch_size(case, {"out": got["out"]}))]

    def reference(v: dict[str, np.ndarray]) -> float:
        c = rebuild(v)
        out, _ = ref.mha_forward(c["x"], c["params"], c["num_heads"], c["mask"], c["causal"])
        return float(np.sum(out * case["dout"]))

    ctx.details["errors"] = self_consistency(BatchObjective(candidate, many), inputs, grads, rng, "mha_backward",
                                              reference=reference, step=step, tolerance=tolerance)
