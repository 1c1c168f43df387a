"""In-process smoke test of the rnn sample solutions: correct ones match the reference, wrong ones do not."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from reference import rnn as ref

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "rnn"
CORRECT = sorted(SOLUTIONS_DIR.glob("correct_*.py"))
WRONG = sorted(SOLUTIONS_DIR.glob("wrong_*.py"))
# (seed, N, T, D, H, saturated): N, T >= 2, D != H, and one case with pre-activations of 1e3.
CASES = [(0, 2, 3, 4, 5, False), (1, 3, 6, 2, 3, False), (2, 2, 4, 3, 2, True)]


def load(path: Path) -> ModuleType:
    """Import a solution file as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"rnn_solution_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def outputs(impl: ModuleType, seed: int, N: int, T: int, D: int, H: int, saturated: bool) -> dict[str, np.ndarray]:
    """Every forward output and gradient of the six contract functions on one generated case."""
    rng = np.random.default_rng(seed + 1000)
    got: dict[str, np.ndarray] = {}

    p = ref.rnn_step_inputs(seed, N, D, H)
    if saturated:
        p["b"] = ref.saturating_bias(seed, H, gates=1)
    h_next, cache = impl.rnn_step_forward(p["x"], p["h_prev"], p["Wx"], p["Wh"], p["b"])
    got["rnn_step.h_next"] = h_next
    grads = impl.rnn_step_backward(rng.standard_normal((N, H)), cache)
    got.update({f"rnn_step.{k}": v for k, v in zip(("dx", "dh_prev", "dWx", "dWh", "db"), grads)})

    p = ref.lstm_step_inputs(seed, N, D, H)
    if saturated:
        p["b"] = ref.saturating_bias(seed, H)
    h_next, c_next, cache = impl.lstm_step_forward(p["x"], p["h_prev"], p["c_prev"], p["Wx"], p["Wh"], p["b"])
    got["lstm_step.h_next"], got["lstm_step.c_next"] = h_next, c_next
    grads = impl.lstm_step_backward(rng.standard_normal((N, H)), rng.standard_normal((N, H)), cache)
    got.update({f"lstm_step.{k}": v for k, v in zip(("dx", "dh_prev", "dc_prev", "dWx", "dWh", "db"), grads)})

    p = ref.lstm_sequence_inputs(seed, N, T, D, H)
    if saturated:
        p["b"] = ref.saturating_bias(seed, H)
    h, cache = impl.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
    got["lstm.h"] = h
    grads = impl.lstm_backward(rng.standard_normal((N, T, H)), cache)
    got.update({f"lstm.{k}": v for k, v in zip(("dx", "dh0", "dWx", "dWh", "db"), grads)})
    return got


def mismatches(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], rtol: float) -> list[str]:
    """Names of the outputs whose shape differs, that are not finite, or whose normwise error exceeds rtol."""
    bad = []
    for name, want in expected.items():
        have = np.asarray(got[name])
        if have.shape != want.shape or not np.all(np.isfinite(have)):
            bad.append(name)
            continue
        denom = np.linalg.norm(have) + np.linalg.norm(want)
        if denom > 0 and np.linalg.norm(have - want) / denom > rtol:
            bad.append(name)
    return bad


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}{'-saturated' if c[5] else ''}")
@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_solution_matches_reference(path: Path, case: tuple) -> None:
    impl = load(path)
    # A plain 1 / (1 + exp(-a)) overflows harmlessly to the right limit: only the outputs must be finite.
    with np.errstate(over="ignore", under="ignore"):
        got = outputs(impl, *case)
    expected = outputs(ref, *case)
    assert all(v.dtype == np.float64 for v in got.values())
    assert mismatches(got, expected, rtol=1e-12) == []


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_differs_from_reference(path: Path) -> None:
    impl = load(path)
    bad: list[str] = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for case in CASES:
            bad += mismatches(outputs(impl, *case), outputs(ref, *case), rtol=1e-6)
    assert bad, f"{path.name} matches the reference everywhere: its planted bug is not real"


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_names_its_mistake(path: Path) -> None:
    lines = (load(path).__doc__ or "").strip().splitlines()
    assert lines[0].startswith("Known-wrong: ") and len(lines[0]) > len("Known-wrong: ") + 10
    assert any(line.startswith("Expect: ") for line in lines[1:])


def test_there_are_enough_samples() -> None:
    assert len(CORRECT) >= 2
    assert len(WRONG) >= 7
