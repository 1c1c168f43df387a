"""Equivalence probe of the `optim` problem: every optimizer driven over fixed seeded trajectories.

What the grader can observe of an optimizer is recorded: after every step, the
params dict's entries and the caller's original arrays (an update rebinding
params[key] shows as the two parting), the gradients of every step as they are
after the whole run (a gradient kept as a buffer without a copy and then
updated in place shows later, not at its own step), `state_dict()` after every
step, and the continuations of a fresh optimizer loaded with the optimizer's
own state and with a hand-built state in the documented layout. The runs change
lr between steps, include a step of zero gradients, and cover weight decay on
and off, momentum on and off, non-default betas and eps, and every default.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from grader.mutation.probes import _call, _rng, _snapshot

SHAPES: dict[str, tuple[int, ...]] = {"W": (3, 2), "b": (2,), "V": (2, 2, 2)}
STEPS = 5
SPLIT = 3
# (class name, constructor keywords): the defaults and every option on.
RUNS: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.7, "weight_decay": 0.3}),
    ("SGD", {"lr": 0.2, "weight_decay": 0.1}),
    ("Adam", {}),
    ("Adam", {"lr": 0.05, "betas": (0.8, 0.95), "eps": 0.1, "weight_decay": 0.2}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.05, "betas": (0.7, 0.9), "eps": 1e-3, "weight_decay": 0.4}),
    ("AdamW", {"lr": 0.03, "weight_decay": 0.0}),
]


def _params(r: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: r.standard_normal(s) for k, s in SHAPES.items()}


def _schedule(r: np.random.Generator, lr: float) -> list[tuple[float | None, dict[str, np.ndarray]]]:
    """STEPS steps: lr halved before step 2 and tripled before step 4, zero gradients at step 3."""
    lrs = {1: 0.5 * lr, 3: 1.5 * lr}
    return [(lrs.get(i), {k: np.zeros(s) if i == 2 else r.standard_normal(s) for k, s in SHAPES.items()})
            for i in range(STEPS)]


def _drive(out: list[Any], opt: Any, params: dict[str, np.ndarray],
           steps: list[tuple[float | None, dict[str, np.ndarray]]]) -> None:
    """Step through `steps`, recording the dict's entries, the original arrays and the state after each step,
    and every step's gradients as they are at the end."""
    originals = dict(params)
    sent = []
    for lr, grads in steps:
        if lr is not None:
            try:
                opt.lr = lr
            except Exception as exc:  # a mutant's property may refuse it
                out.append(("raised", type(exc).__name__))
        mine = {k: g.copy() for k, g in grads.items()}
        sent.append(mine)
        _call(out, opt.step, mine)
        out.append(_snapshot(params))
        out.append(_snapshot(originals))
        _call(out, opt.state_dict)
    out.append(_snapshot(sent))


def _documented_state(name: str, r: np.random.Generator) -> dict[str, Any]:
    """A state in the contract's layout, as the grader builds one: step SPLIT and buffers of every key."""
    if name == "SGD":
        return {"step": SPLIT, "state": {k: {"momentum_buffer": r.standard_normal(s)} for k, s in SHAPES.items()}}
    return {"step": SPLIT, "state": {k: {"exp_avg": 0.3 * r.standard_normal(s), "exp_avg_sq": r.random(s) + 0.1}
                                     for k, s in SHAPES.items()}}


def probe_optim(m: ModuleType) -> list[Any]:
    out: list[Any] = []
    r = _rng(6)
    for name, hyper in RUNS:
        cls = getattr(m, name)
        lr = float(hyper.get("lr", 1e-3))
        start = _params(r)
        steps = _schedule(r, lr)

        params = {k: v.copy() for k, v in start.items()}
        opt = _call(out, cls, params, **hyper)
        if opt is None:
            continue
        _drive(out, opt, params, steps)

        # Resumed after SPLIT steps from the optimizer's own state_dict(), at the lr in force then.
        first_params = {k: v.copy() for k, v in start.items()}
        first = cls(first_params, **hyper)
        _drive([], first, first_params, steps[:SPLIT])
        own = _call(out, first.state_dict)
        resumed_lr = steps[1][0] if steps[1][0] is not None else lr
        for state in (own, _documented_state(name, r)):
            params = {k: v.copy() for k, v in first_params.items()}
            fresh = cls(params, **{**hyper, "lr": resumed_lr})
            _call(out, fresh.load_state_dict, state)
            _drive(out, fresh, params, steps[SPLIT:])
    return out
