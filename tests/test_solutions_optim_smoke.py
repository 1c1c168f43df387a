"""In-process smoke test of the optim sample solutions: correct ones agree with the reference, each wrong one
disagrees, and only in the parts of the contract its `Expect:` line names."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from reference import optim as ref
from tests.conftest import load_solution

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "optim"
CORRECT = sorted(SOLUTIONS_DIR.glob("correct_*.py"))
WRONG = sorted(SOLUTIONS_DIR.glob("wrong_*.py"))
TRAJECTORY_TEST = {"SGD": "sgd_trajectory", "Adam": "adam_trajectory", "AdamW": "adamw_trajectory"}

SHAPES = {"W1": (3, 4), "b1": (4,), "W2": (2, 3, 2)}
# (optimizer, constructor keywords): defaults, momentum, weight decay on and off, non-default betas and eps.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1}),
    ("Adam", {}),
    ("Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 0.1, "weight_decay": 0.1}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 0.1, "weight_decay": 0.5}),
]
STEPS = 5
SPLIT = 3


def load(path: Path) -> ModuleType:
    """Import a solution file as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"optim_solution_{path.stem}", path)
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


def case_inputs(seed: int, lr: float) -> tuple[dict[str, np.ndarray], list[ref.Step]]:
    """Params and STEPS steps: zero gradients at step 3, the lr halved before step 2 and scaled by 3 before step 4."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    lrs = {1: lr * 0.5, 3: lr * 1.5}
    steps = [ref.Step({k: np.zeros(s) if i == 2 else rng.standard_normal(s) for k, s in SHAPES.items()}, lrs.get(i))
             for i in range(STEPS)]
    return params, steps


def drive(opt: Any, params: dict[str, np.ndarray], steps: list[ref.Step]) -> list[dict[str, np.ndarray]]:
    after = []
    for s in steps:
        if s.lr is not None:
            opt.lr = s.lr
        opt.step({k: g.copy() for k, g in s.grads.items()})
        after.append({k: np.array(v) for k, v in params.items()})
    return after


def problems(impl: ModuleType, rtol: float) -> list[str]:
    """Everything in which impl disagrees with the contract, each item starting with the test id it belongs to."""
    bad = []
    for i, (name, hyper) in enumerate(CASES):
        full = {**{"lr": 1e-3}, **hyper}
        params, steps = case_inputs(i, full["lr"])
        expected, states = ref.trajectory(name, params, full, steps)
        mine = {k: v.copy() for k, v in params.items()}
        arrays = dict(mine)
        kept = [{k: g.copy() for k, g in s.grads.items()} for s in steps]
        opt = getattr(impl, name)(mine, **hyper)
        for j, s in enumerate(steps):
            if s.lr is not None:
                opt.lr = s.lr
            opt.step(kept[j])
            for k in SHAPES:
                if differs(mine[k], expected[j][k], rtol):
                    bad.append(f"{TRAJECTORY_TEST[name]}: case {i} {k} after step {j + 1}")
                if mine[k] is not arrays[k] and not np.array_equal(arrays[k], mine[k]):
                    bad.append(f"in_place: case {i} {k} rebound at step {j + 1}")
        for s, g in zip(steps, kept):
            if any(not np.array_equal(g[k], s.grads[k]) for k in SHAPES):
                bad.append(f"grads_untouched: case {i}")
                break
        state = opt.state_dict()
        want = states[-1]
        if not isinstance(state, dict) or state.get("step") != STEPS:
            bad.append(f"state_dict: case {i} step {state.get('step') if isinstance(state, dict) else state}")
        elif name != "SGD" or full.get("momentum", 0):
            for k in SHAPES:
                for b in ref.BUFFERS[name]:
                    if differs(state["state"].get(k, {}).get(b), want["state"][k][b], rtol):
                        bad.append(f"state_dict: case {i} {k} {b}")
        # Resume from the documented state after SPLIT steps; and from the solution's own.
        lr = next((s.lr for s in reversed(steps[:SPLIT]) if s.lr is not None), full["lr"])
        for source in ("documented", "own"):
            if source == "documented":
                start, loaded = ref.copy_params(expected[SPLIT - 1]), states[SPLIT - 1]
            else:
                start = ref.copy_params(params)
                first = getattr(impl, name)(start, **hyper)
                drive(first, start, steps[:SPLIT])
                loaded = first.state_dict()
            fresh = getattr(impl, name)(start, **{**hyper, "lr": lr})
            try:
                fresh.load_state_dict(loaded)
            except Exception as exc:  # a state_dict without "step" cannot be loaded by the reference's rule
                bad.append(f"load_state_dict: case {i} {source}: {type(exc).__name__}")
                continue
            for j, ps in enumerate(drive(fresh, start, steps[SPLIT:])):
                if any(differs(ps[k], expected[SPLIT + j][k], rtol) for k in SHAPES):
                    bad.append(f"load_state_dict: case {i} {source} step {SPLIT + j + 1}")
                    break
    return bad


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_solution_matches_reference(path: Path) -> None:
    impl = load(path)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        assert problems(impl, rtol=1e-12) == []


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_differs_where_its_expect_line_says(path: Path) -> None:
    impl = load(path)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        bad = problems(impl, rtol=1e-9)
    expect = set(load_solution(path).expect)
    assert bad, f"{path.name} matches the reference everywhere: its planted bug is not real"
    outside = [b for b in bad if b.split(":")[0] not in expect]
    assert not outside, f"{path.name} also fails outside its Expect line {sorted(expect)}: {outside}"


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_names_its_mistake(path: Path) -> None:
    lines = (load(path).__doc__ or "").strip().splitlines()
    assert lines[0].startswith("Known-wrong: ") and len(lines[0]) > len("Known-wrong: ") + 10
    assert any(line.startswith("Expect: ") for line in lines[1:])


def test_there_are_enough_samples() -> None:
    assert len(CORRECT) >= 3
    assert len(WRONG) >= 13
