"""In-process smoke test of the attention sample solutions: correct ones agree with the reference,
each wrong one disagrees in the part of the contract its file name points to."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from reference import attention as ref

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "attention"
CORRECT = sorted(SOLUTIONS_DIR.glob("correct_*.py"))
WRONG = sorted(SOLUTIONS_DIR.glob("wrong_*.py"))

# (leading dims, Tq, Tk, d, dv, mask kind, causal, largest |score| or None): 3 and 4 dims, Tq != Tk, d != dv.
ATTENTION_CASES = [
    ((2,), 3, 4, 5, 2, None, False, None),
    ((2, 3), 4, 3, 2, 3, None, False, None),
    ((3,), 4, 5, 3, 2, "padding", False, None),
    ((2, 2), 3, 4, 2, 3, "full", False, None),
    ((2, 3), 4, 4, 3, 2, "shared", False, None),
    ((2,), 4, 4, 3, 2, None, True, None),
    ((2, 2), 5, 5, 2, 3, "padding", True, None),
    ((2, 2), 4, 5, 4, 3, None, False, 1e4),
    ((2, 2), 4, 5, 4, 3, "shared", False, 1e4),
]
# (N, T, D, H, mask kind, causal)
MHA_CASES = [(2, 3, 6, 2, None, False), (3, 4, 6, 3, None, False), (2, 4, 8, 4, "padding", False),
             (2, 4, 6, 3, None, True), (3, 3, 4, 2, "per head", True)]


def load(path: Path) -> ModuleType:
    """Import a solution file as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"attention_solution_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def differs(have: object, want: np.ndarray, rtol: float) -> bool:
    """True when have is not a finite float64 array of want's shape within normwise rtol (or 1e-12 elementwise)."""
    have = np.asarray(have)
    if have.shape != want.shape or have.dtype != np.float64 or not np.all(np.isfinite(have)):
        return True
    if np.max(np.abs(have - want), initial=0.0) < 1e-12:
        return False
    denom = np.linalg.norm(have) + np.linalg.norm(want)
    return bool(denom > 0 and np.linalg.norm(have - want) / denom > rtol)


def attention_case(seed: int, lead: tuple[int, ...], tq: int, tk: int, d: int, dv: int, kind: str | None,
                   causal: bool, largest: float | None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((*lead, tq, d)), rng.standard_normal((*lead, tk, d))
    if largest is not None:
        q *= largest / np.max(np.abs(q @ np.swapaxes(k, -1, -2) / np.sqrt(d)))
    mask = None
    if kind == "padding":
        mask = ref.padding_mask(rng.integers(1, tk + 1, size=lead[0]), tk).reshape(
            (lead[0], *(1,) * (len(lead) - 1), 1, tk))
    elif kind == "full":
        mask = ref.random_mask(rng, (*lead, tq, tk))
    elif kind == "shared":
        mask = ref.random_mask(rng, (tq, tk))
    if mask is not None and causal:
        mask = mask | np.eye(tq, dtype=bool)
    return {"q": q, "k": k, "v": rng.standard_normal((*lead, tk, dv)), "mask": mask, "causal": causal,
            "dout": rng.standard_normal((*lead, tq, dv))}


def attention_problems(impl: ModuleType, rtol: float) -> list[str]:
    """out, dq, dk, dv against the reference; inputs untouched; masked keys without influence or gradient."""
    bad = []
    for seed, spec in enumerate(ATTENTION_CASES):
        c = attention_case(seed, *spec)
        label = f"attention case {seed} ({spec[5] or 'no'} mask, causal={spec[6]}, scores {spec[7] or 'small'})"
        before = {n: c[n].copy() for n in ("q", "k", "v")}
        try:
            out, cache = impl.attention_forward(c["q"], c["k"], c["v"], mask=c["mask"], causal=c["causal"])
            grads = impl.attention_backward(c["dout"], cache)
        except Exception as exc:  # a wrong solution may raise on a case: that is a difference too
            bad.append(f"{label}: raised {type(exc).__name__}")
            continue
        want_out, want_cache = ref.attention_forward(c["q"], c["k"], c["v"], c["mask"], c["causal"])
        for name, have, want in zip(("out", "dq", "dk", "dv"), (out, *grads),
                                    (want_out, *ref.attention_backward(c["dout"], want_cache))):
            if differs(have, want, rtol):
                bad.append(f"{label}: {name}")
        if any(not np.array_equal(c[n], before[n]) for n in before):
            bad.append(f"{label}: an input was modified")
        if c["mask"] is not None and spec[5] == "padding":
            hidden = ~np.broadcast_to(c["mask"], want_out.shape[:-1] + (c["k"].shape[-2],)).any(axis=-2)
            if np.any(np.asarray(grads[1])[hidden] != 0) or np.any(np.asarray(grads[2])[hidden] != 0):
                bad.append(f"{label}: masked keys get gradient")
    return bad


def mha_case(seed: int, n: int, t: int, d: int, heads: int, kind: str | None, causal: bool) -> dict[str, Any]:
    rng = np.random.default_rng(100 + seed)
    mask = None
    if kind == "padding":
        mask = ref.padding_mask(rng.integers(1, t + 1, size=n), t)[:, None, None, :]
    elif kind == "per head":
        mask = ref.random_mask(rng, (n, heads, t, t)) | np.eye(t, dtype=bool)
    return {"x": rng.standard_normal((n, t, d)), "params": ref.mha_params(seed, d), "num_heads": heads,
            "mask": mask, "causal": causal, "dout": rng.standard_normal((n, t, d))}


def mha_problems(impl: ModuleType, rtol: float) -> list[str]:
    """out, dx and every param's gradient against the reference; x and params untouched."""
    bad = []
    for seed, spec in enumerate(MHA_CASES):
        c = mha_case(seed, *spec)
        label = f"mha case {seed} (H={spec[3]}, {spec[4] or 'no'} mask, causal={spec[5]})"
        x_before, params_before = c["x"].copy(), {k: v.copy() for k, v in c["params"].items()}
        try:
            out, cache = impl.mha_forward(c["x"], c["params"], c["num_heads"], mask=c["mask"], causal=c["causal"])
            dx, grads = impl.mha_backward(c["dout"], cache)
        except Exception as exc:
            bad.append(f"{label}: raised {type(exc).__name__}")
            continue
        want_out, want_cache = ref.mha_forward(c["x"], c["params"], c["num_heads"], c["mask"], c["causal"])
        want_dx, want_grads = ref.mha_backward(c["dout"], want_cache)
        if differs(out, want_out, rtol):
            bad.append(f"{label}: out")
        if differs(dx, want_dx, rtol):
            bad.append(f"{label}: dx")
        for key in ref.PARAM_KEYS:
            if key not in grads or differs(grads[key], want_grads[key], rtol):
                bad.append(f"{label}: grads[{key!r}]")
        if not np.array_equal(c["x"], x_before) or any(
                not np.array_equal(c["params"][k], v) for k, v in params_before.items()):
            bad.append(f"{label}: an input was modified")
    return bad


def problems(impl: ModuleType, rtol: float) -> list[str]:
    return attention_problems(impl, rtol) + mha_problems(impl, rtol)


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_solution_matches_reference(path: Path) -> None:
    impl = load(path)
    with np.errstate(over="raise", invalid="raise", divide="ignore", under="ignore"):  # log(0), exp(-inf) are fine
        assert problems(impl, rtol=1e-10) == []


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_differs_where_its_name_says(path: Path) -> None:
    impl = load(path)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        bad = problems(impl, rtol=1e-6)
    assert bad, f"{path.name} matches the reference everywhere: its planted bug is not real"
    if path.stem.startswith("wrong_mha_"):  # a layer mistake leaves scaled dot-product attention right
        assert all(b.startswith("mha") for b in bad), f"{path.name} also fails outside mha: {bad}"
    else:
        assert any(b.startswith("attention") for b in bad), f"{path.name} fails only in mha: {bad}"


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_names_its_mistake(path: Path) -> None:
    lines = (load(path).__doc__ or "").strip().splitlines()
    assert lines[0].startswith("Known-wrong: ") and len(lines[0]) > len("Known-wrong: ") + 10
    assert any(line.startswith("Expect: ") for line in lines[1:])


def test_there_are_enough_samples() -> None:
    assert len(CORRECT) >= 3
    assert len(WRONG) >= 12
