"""In-process smoke test of the cnn sample solutions: correct ones match the reference, wrong ones do not.

This imports the solution files directly (no sandbox) so a planted bug is
proven real before the sandboxed grading tests rely on it.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from reference import cnn as ref

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "cnn"
CORRECT = sorted(SOLUTIONS_DIR.glob("correct_*.py"))
WRONG = sorted(SOLUTIONS_DIR.glob("wrong_*.py"))

# (seed, N, C, H, W, F, KH, KW, stride, pad): pad 0 and >= 1, strides 1 to 3,
# (H + 2*pad - KH) not a multiple of the stride in the last two.
CONV_CASES = [
    (0, 2, 2, 5, 5, 3, 3, 3, 1, 0),
    (1, 2, 3, 6, 6, 2, 2, 2, 2, 1),
    (2, 3, 2, 8, 7, 3, 3, 2, 2, 0),
    (3, 2, 1, 9, 8, 2, 3, 3, 3, 2),
]
# (seed, N, C, H, W, kernel, stride): non-overlapping, overlapping, sizes not divisible by the stride.
POOL_CASES = [(0, 2, 2, 4, 6, 2, 2), (1, 2, 2, 5, 5, 2, 1), (2, 2, 3, 7, 6, 3, 2)]


def load(path: Path) -> ModuleType:
    """Import a solution file as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"cnn_solution_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layer_outputs(impl: ModuleType) -> dict[str, np.ndarray]:
    """Forward outputs and gradients of the four layer functions on every case; a crash is an output too."""
    got: dict[str, np.ndarray] = {}
    for seed, N, C, H, W, Fn, KH, KW, stride, pad in CONV_CASES:
        p = ref.conv_inputs(seed, N, C, H, W, Fn, KH, KW)
        dout = np.random.default_rng(seed + 100).standard_normal(
            (N, Fn, ref.output_size(H, KH, stride, pad), ref.output_size(W, KW, stride, pad)))
        name = f"conv{seed}"
        try:
            got[f"{name}.out"], cache = impl.conv2d_forward(p["x"], p["w"], p["b"], stride=stride, pad=pad)
            got[f"{name}.dx"], got[f"{name}.dw"], got[f"{name}.db"] = impl.conv2d_backward(dout, cache)
        except Exception as exc:  # a crash on a valid input is a difference from the reference
            got[f"{name}.raised"] = np.array([type(exc).__name__])
    for seed, N, C, H, W, kernel, stride in POOL_CASES:
        x = ref.unique_image(seed, (N, C, H, W))
        dout = np.random.default_rng(seed + 200).standard_normal(
            (N, C, ref.output_size(H, kernel, stride), ref.output_size(W, kernel, stride)))
        name = f"pool{seed}"
        try:
            got[f"{name}.out"], cache = impl.maxpool2d_forward(x, kernel=kernel, stride=stride)
            got[f"{name}.dx"] = impl.maxpool2d_backward(dout, cache)
        except Exception as exc:
            got[f"{name}.raised"] = np.array([type(exc).__name__])
    return got


def mismatches(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], rtol: float) -> list[str]:
    """Names of outputs that are missing, of another shape or dtype, not finite, or off by more than rtol normwise."""
    bad = sorted(set(got) - set(expected))
    for name, want in expected.items():
        have = got.get(name)
        if not isinstance(have, np.ndarray) or have.shape != want.shape or have.dtype != np.float64 \
                or not np.all(np.isfinite(have)):
            bad.append(name)
            continue
        denom = np.linalg.norm(have) + np.linalg.norm(want)
        if denom > 0 and np.linalg.norm(have - want) / denom > rtol:
            bad.append(name)
    return bad


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    return layer_outputs(ref)


@pytest.fixture(scope="module")
def digits() -> ref.DigitsSplit:
    return ref.digits_split(0)


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_solution_matches_reference(path: Path, expected: dict[str, np.ndarray]) -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        got = layer_outputs(load(path))
    assert mismatches(got, expected, rtol=1e-12) == []


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_solution_trains_past_the_pass_mark(path: Path, digits: ref.DigitsSplit) -> None:
    params = load(path).train_cnn(digits.X_train, digits.y_train, 0)
    assert ref.accuracy(ref.check_params(params), digits.X_test, digits.y_test) >= 0.9


def test_correct_solutions_split_ties_validly() -> None:
    # The samples pick the first maximum, the last, or share equally: all valid, all different.
    x = np.random.default_rng(3).integers(0, 2, size=(2, 2, 4, 6)).astype(np.float64)
    dout = np.random.default_rng(4).standard_normal((2, 2, 2, 3))
    tied = ref.maxpool2d_tied_positions(x, 2, 2)
    splits = []
    for path in CORRECT:
        impl = load(path)
        out, cache = impl.maxpool2d_forward(x, 2, 2)
        assert np.array_equal(out, ref.maxpool2d_forward(x, 2, 2)[0])
        dx = impl.maxpool2d_backward(dout, cache)
        windows = dx.reshape(2, 2, 2, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5)
        assert np.all(windows[~tied] == 0.0)
        np.testing.assert_allclose(windows.sum(axis=(-2, -1)), dout, rtol=1e-12)
        splits.append(dx)
    assert any(not np.allclose(a, b) for a in splits for b in splits)


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_differs_from_reference(path: Path, expected: dict[str, np.ndarray],
                                               digits: ref.DigitsSplit) -> None:
    impl = load(path)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        bad = mismatches(layer_outputs(impl), expected, rtol=1e-6)
    if not bad:  # the layers are right: the planted bug must be in training
        params = impl.train_cnn(digits.X_train, digits.y_train, 0)
        if ref.accuracy(ref.check_params(params), digits.X_test, digits.y_test) < 0.9:
            bad = ["train_cnn"]
    assert bad, f"{path.name} matches the reference everywhere: its planted bug is not real"


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_names_its_mistake(path: Path) -> None:
    lines = (load(path).__doc__ or "").strip().splitlines()
    assert lines[0].startswith("Known-wrong: ") and len(lines[0]) > len("Known-wrong: ") + 10
    assert any(line.startswith("Expect: ") for line in lines[1:])


def test_there_are_enough_samples() -> None:
    assert len(CORRECT) >= 2
    assert len(WRONG) >= 9
