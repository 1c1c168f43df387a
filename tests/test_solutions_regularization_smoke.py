"""In-process smoke test of the regularization sample solutions: correct ones agree with the reference,
each wrong one disagrees in the part of the contract its file name points to."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from reference import regularization as ref

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "regularization"
CORRECT = sorted(SOLUTIONS_DIR.glob("correct_*.py"))
WRONG = sorted(SOLUTIONS_DIR.glob("wrong_*.py"))
# The part of the contract a wrong file's planted bug lives in, from its name.
AREAS = {"l2": "l2_penalty", "dropout": "dropout", "bn": "batchnorm", "es": "EarlyStopping"}

DROPOUT_PS = [0.1, 0.3, 0.5, 0.8]
# (N, D, momentum, eps): N >= 2, D != N, a non-default momentum and eps.
BN_CASES = [(2, 3, 0.1, 1e-5), (5, 4, 0.1, 1e-5), (7, 2, 0.3, 1e-3)]
BN_STEPS = 3
# (values, patience, min_delta, mode); values on a grid of 0.25, min_delta off it.
ES_CASES = [
    ([3.0, 3.0, 3.5, 2.0], 2, 0.0, "min"),
    ([1.0, 0.75, 0.5, 0.5, 0.75, 1.0], 1, 0.0, "min"),
    ([1.0, 0.75, 0.5, 0.5, 0.75, 1.0], 2, 0.0, "min"),
    ([1.0, 0.75, 0.5, 0.5, 0.75, 1.0, 1.25], 3, 0.0, "min"),
    ([2.0, 1.75, 1.5, 1.5, 1.25, 0.0, 1.0, 0.75, 0.75], 2, 0.3, "min"),
    ([0.5, 0.75, 1.0, 1.0, 0.75, 1.5, 1.25, 1.25], 2, 0.0, "max"),
    ([0.0, 0.25, 0.5, 1.0, 1.0, 0.75, 1.25], 2, 0.4, "max"),
    ([5.0, 4.75, 4.5, 4.75, 4.5, 4.25, 4.5, 4.75], 3, 0.0, "min"),
]


def load(path: Path) -> ModuleType:
    """Import a solution file as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"regularization_solution_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def differs(have: object, want: np.ndarray, rtol: float) -> bool:
    """True when have is not a finite float64 array of want's shape within normwise rtol."""
    have = np.asarray(have)
    if have.shape != want.shape or have.dtype != np.float64 or not np.all(np.isfinite(have)):
        return True
    denom = np.linalg.norm(have) + np.linalg.norm(want)
    return bool(denom > 0 and np.linalg.norm(have - want) / denom > rtol)


def l2_problems(impl: ModuleType, rtol: float) -> list[str]:
    """Loss and every gradient of l2_penalty against the reference, on dicts with weights and other keys."""
    bad = []
    for seed, reg in [(0, 0.1), (1, 2.5)]:
        params = ref.l2_inputs(seed)
        loss, grads = impl.l2_penalty({k: v.copy() for k, v in params.items()}, reg)
        want_loss, want_grads = ref.l2_penalty(params, reg)
        if not math.isclose(float(loss), want_loss, rel_tol=rtol):
            bad.append(f"l2_penalty loss {loss} != {want_loss}")
        for k, want in want_grads.items():
            if k not in grads or differs(grads[k], want, rtol):
                bad.append(f"l2_penalty grads[{k!r}]")
    return bad


def dropout_problems(impl: ModuleType) -> list[str]:
    """Mask statistics and independence, scaling, seeding, backward mask and eval identity, for several p."""
    bad = []
    shape = (60, 50)
    dout = np.random.default_rng(3).standard_normal(shape)
    for i, p in enumerate(DROPOUT_PS):
        x = ref.dropout_inputs(i, shape)
        x_before = x.copy()
        out, cache = impl.dropout_forward(x, p, True, 100 + i)
        if not np.array_equal(x, x_before):
            bad.append(f"dropout p={p}: x modified")
        kept = ref.dropout_kept(x, out)
        sd = math.sqrt(p * (1 - p) / kept.size)
        if abs(kept.mean() - (1 - p)) > 5 * sd:
            bad.append(f"dropout p={p}: kept fraction {kept.mean():.3f}")
        agree = p * p + (1 - p) * (1 - p)  # chance that two independent units are both kept or both dropped
        for axis, name in [(0, "rows"), (1, "columns")]:
            same = np.diff(kept, axis=axis) == 0
            if abs(same.mean() - agree) > 5 * math.sqrt(agree * (1 - agree) / same.size):
                bad.append(f"dropout p={p}: the masks of neighbouring {name} agree on {same.mean():.3f} of units")
        if kept.any() and differs(out[kept] / x[kept], np.full(kept.sum(), 1 / (1 - p)), 1e-12):
            bad.append(f"dropout p={p}: kept units not scaled by 1/(1-p)")
        again, _ = impl.dropout_forward(x, p, True, 100 + i)
        if not np.array_equal(again, out):
            bad.append(f"dropout p={p}: same seed, different output")
        other, _ = impl.dropout_forward(x, p, True, 200 + i)
        if np.array_equal(ref.dropout_kept(x, other), kept):
            bad.append(f"dropout p={p}: another seed gives the same mask")
        dx = impl.dropout_backward(dout, cache)
        if differs(dx, dout * kept / (1 - p), 1e-12):
            bad.append(f"dropout p={p}: backward does not use the forward mask")
        for train, q in [(False, p), (True, 0.0)]:
            out, cache = impl.dropout_forward(x, q, train, 100 + i)
            if differs(out, x, 0.0) or differs(impl.dropout_backward(dout, cache), dout, 0.0):
                bad.append(f"dropout p={q} train={train}: not the identity")
    return bad


def batchnorm_problems(impl: ModuleType, rtol: float) -> list[str]:
    """Train steps (outputs, running statistics), eval, backward and defaults against the reference."""
    bad = []
    for seed, (N, D, momentum, eps) in enumerate(BN_CASES):
        p = ref.batchnorm_inputs(seed, N, D)
        batches = ref.batchnorm_batches(seed + 10, BN_STEPS, N, D)
        theirs = {
            "mode": "train",
            "momentum": momentum,
            "eps": eps,
            "running_mean": np.zeros(D),
            "running_var": np.ones(D),
        }
        ours = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in theirs.items()}
        for step, x in enumerate(batches):
            out, _ = impl.batchnorm_forward(x.copy(), p["gamma"], p["beta"], theirs)
            want, _ = ref.batchnorm_forward(x, p["gamma"], p["beta"], ours)
            if differs(out, want, rtol):
                bad.append(f"batchnorm train out, case {seed} step {step}")
            for key in ("running_mean", "running_var"):
                if differs(theirs[key], ours[key], rtol):
                    bad.append(f"batchnorm {key}, case {seed} step {step}")
        theirs["mode"] = ours["mode"] = "eval"
        out, _ = impl.batchnorm_forward(p["x"], p["gamma"], p["beta"], theirs)
        want, _ = ref.batchnorm_forward(p["x"], p["gamma"], p["beta"], ours)
        if differs(out, want, rtol):
            bad.append(f"batchnorm eval out, case {seed}")

        out, cache = impl.batchnorm_forward(p["x"], p["gamma"], p["beta"], {"mode": "train"})
        _, ref_cache = ref.batchnorm_forward(p["x"], p["gamma"], p["beta"], {"mode": "train"})
        dout = np.random.default_rng(seed + 20).standard_normal((N, D))
        for name, have, want in zip(
            ("dx", "dgamma", "dbeta"), impl.batchnorm_backward(dout, cache), ref.batchnorm_backward(dout, ref_cache)
        ):
            if differs(have, want, rtol):
                bad.append(f"batchnorm backward {name}, case {seed}")
    return bad


def early_stopping_problems(impl: ModuleType) -> list[str]:
    """step's answer, best_value and best_epoch after every epoch up to the reference's first stop."""
    bad = []
    for case, (values, patience, min_delta, mode) in enumerate(ES_CASES):
        # Exact plateaus are unambiguous at min_delta 0; a gain near a positive min_delta is not.
        assert min_delta == 0 or ref.improvement_margin(values, min_delta, mode) > 0.01
        stopper = impl.EarlyStopping(patience, min_delta=min_delta, mode=mode)
        for epoch, want in enumerate(ref.early_stopping_trace(values, patience, min_delta, mode)):
            stop = stopper.step(values[epoch])
            if (bool(stop), stopper.best_value, stopper.best_epoch) != (want.stop, want.best_value, want.best_epoch):
                bad.append(f"EarlyStopping case {case} epoch {epoch}")
                break
            if want.stop:
                break
    return bad


def problems(impl: ModuleType, rtol: float) -> list[str]:
    """Everything in which impl disagrees with the contract on the smoke cases."""
    return (
        l2_problems(impl, rtol)
        + dropout_problems(impl)
        + batchnorm_problems(impl, rtol)
        + early_stopping_problems(impl)
    )


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_solution_matches_reference(path: Path) -> None:
    impl = load(path)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        assert problems(impl, rtol=1e-10) == []


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_differs_where_its_name_says(path: Path) -> None:
    impl = load(path)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        bad = problems(impl, rtol=1e-6)
    area = AREAS[path.stem.split("_")[1]]
    assert bad, f"{path.name} matches the reference everywhere: its planted bug is not real"
    assert all(b.startswith(area) for b in bad), f"{path.name} also fails outside {area}: {bad}"


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_names_its_mistake(path: Path) -> None:
    lines = (load(path).__doc__ or "").strip().splitlines()
    assert lines[0].startswith("Known-wrong: ") and len(lines[0]) > len("Known-wrong: ") + 10
    assert any(line.startswith("Expect: ") for line in lines[1:])


def test_there_are_enough_samples() -> None:
    assert len(CORRECT) >= 2
    assert len(WRONG) >= 16
