"""The optim reference against torch.optim.SGD, Adam and AdamW in float64.

Several steps on parameters of several shapes, the learning rate changed between
steps, weight decay on and off, zero gradients, and the state after every step
compared with PyTorch's momentum_buffer / exp_avg / exp_avg_sq / step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from reference import optim as ref

SHAPES = {"W1": (3, 4), "b1": (4,), "W2": (4, 2, 2), "s": ()}
STEPS = 6
# The lr before each step: changed twice, never back to where it was.
LRS = [None, None, 0.5, None, 0.25, None]
TORCH = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}

CASES: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.7, "weight_decay": 0.3}),
    ("SGD", {"lr": 0.2, "weight_decay": 0.1}),
    ("Adam", {"lr": 1e-2}),
    ("Adam", {"lr": 3e-2, "betas": (0.8, 0.95), "eps": 1e-3, "weight_decay": 0.2}),
    ("AdamW", {"lr": 1e-2}),
    ("AdamW", {"lr": 3e-2, "betas": (0.5, 0.9), "eps": 1e-6, "weight_decay": 0.5}),
    ("AdamW", {"lr": 1e-2, "weight_decay": 0.0}),
]


def _params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in SHAPES.items()}


def _steps(seed: int, base_lr: float) -> list[ref.Step]:
    rng = np.random.default_rng(seed)
    steps = []
    for i, factor in enumerate(LRS):
        grads = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
        if i == 3:  # a step with zero gradients: momentum and decay still move the params
            grads = {k: np.zeros(s) for k, s in SHAPES.items()}
        steps.append(ref.Step(grads, None if factor is None else base_lr * factor))
    return steps


def _torch_run(name: str, params: dict[str, np.ndarray], hyper: dict[str, Any],
               steps: list[ref.Step]) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Any]]]:
    tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    opt = TORCH[name](list(tensors.values()), **hyper)
    keys = list(tensors)
    after, states = [], []
    for s in steps:
        if s.lr is not None:
            for group in opt.param_groups:
                group["lr"] = s.lr
        for k, t in tensors.items():
            t.grad = torch.tensor(s.grads[k], dtype=torch.float64)
        opt.step()
        after.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
        raw = opt.state_dict()["state"]
        states.append({keys[i]: {n: (v.item() if n == "step" else (None if v is None else v.numpy().copy()))
                                 for n, v in buffers.items()} for i, buffers in raw.items()})
    return after, states


@pytest.mark.parametrize("name, hyper", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_trajectory_and_state_match_torch(name: str, hyper: dict[str, Any]) -> None:
    params = _params(1)
    steps = _steps(2, hyper["lr"])
    before = {k: v.copy() for k, v in params.items()}
    grads_before = [{k: g.copy() for k, g in s.grads.items()} for s in steps]
    ours, our_states = ref.trajectory(name, params, hyper, steps)
    theirs, their_states = _torch_run(name, params, hyper, steps)
    for k in params:  # inputs untouched: trajectory works on copies, and step never writes into grads
        np.testing.assert_array_equal(params[k], before[k])
    for s, g in zip(steps, grads_before):
        for k in g:
            np.testing.assert_array_equal(s.grads[k], g[k])
    for i, (mine, torch_params) in enumerate(zip(ours, theirs)):
        for k in SHAPES:
            np.testing.assert_allclose(mine[k], torch_params[k], rtol=1e-12, atol=1e-14, err_msg=f"{k} step {i}")
    for i, (mine, torch_state) in enumerate(zip(our_states, their_states)):
        assert mine["step"] == i + 1
        for k in SHAPES:
            for buffer in ref.BUFFERS[name]:
                want = torch_state.get(k, {}).get(buffer)
                if want is None:  # SGD without momentum keeps no buffer
                    assert buffer not in mine["state"].get(k, {})
                    continue
                np.testing.assert_allclose(mine["state"][k][buffer], want, rtol=1e-12, atol=1e-14)
            if name != "SGD":
                assert torch_state[k]["step"] == i + 1


@pytest.mark.parametrize("name, hyper", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_load_state_dict_then_continuing_equals_not_stopping(name: str, hyper: dict[str, Any]) -> None:
    params = _params(3)
    steps = _steps(4, hyper["lr"])
    full, _ = ref.trajectory(name, params, hyper, steps)
    first, states = ref.trajectory(name, params, hyper, steps[:3])
    # A fresh optimizer over the params reached, at the lr in force, loaded with the state after step 3.
    lr = next((s.lr for s in reversed(steps[:3]) if s.lr is not None), hyper["lr"])
    resumed, _ = ref.trajectory(name, first[-1], {**hyper, "lr": lr}, steps[3:], state=states[-1])
    for mine, want in zip(resumed, full[3:]):
        for k in SHAPES:
            np.testing.assert_allclose(mine[k], want[k], rtol=1e-13, atol=1e-15)


def test_updates_are_in_place_on_the_same_arrays() -> None:
    params = _params(5)
    ids = {k: id(v) for k, v in params.items()}
    grads = {k: np.ones_like(v) for k, v in params.items()}
    for name, hyper in CASES:
        opt = ref.make(name, params, hyper)
        opt.step(grads)
        assert {k: id(v) for k, v in params.items()} == ids
        assert all(np.all(g == 1) for g in grads.values())


def test_state_dict_does_not_alias_the_optimizer() -> None:
    params = _params(6)
    opt = ref.make("Adam", params, {"lr": 0.1})
    opt.step({k: np.ones_like(v) for k, v in params.items()})
    state = opt.state_dict()
    saved = {k: state["state"][k]["exp_avg"].copy() for k in params}
    opt.step({k: np.ones_like(v) for k, v in params.items()})
    for k in params:
        np.testing.assert_array_equal(state["state"][k]["exp_avg"], saved[k])


@pytest.mark.parametrize("name, hyper", [("SGD", {"lr": 0.5, "momentum": 0.9}), ("Adam", {"lr": 0.05}),
                                         ("AdamW", {"lr": 0.05, "weight_decay": 1e-3})])
def test_training_problem_matches_torch_and_decreases(name: str, hyper: dict[str, Any]) -> None:
    X, y = ref.training_data(0)
    steps = 40
    final, losses = ref.train(name, hyper, X, y, steps)
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = TORCH[name]([w, b], **hyper)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Xt @ w + b, yt)
        loss.backward()
        opt.step()
    np.testing.assert_allclose(final["w"], w.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final["b"], b.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert losses[-1] < 0.8 * losses[0]
