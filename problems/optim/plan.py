"""Test plan for `optim`: SGD with momentum, Adam and AdamW in numpy, driven step by step.

GRADING.md's state layer, as it applies to optimizers: a candidate's optimizer
is constructed in the sandbox over a params dict that stays there (the grader
keeps handles to the dict and to each of its arrays, as a training loop keeps
references to its parameters), then driven through steps: gradients sent, `lr`
changed between steps as a schedule would, the params read back after every
step and compared in float64 with the reference (itself verified against
torch.optim in tests/test_reference_optim.py). Then the state: `state_dict()`
after several steps, and `load_state_dict` followed by more steps against
never stopping. Conformance is charged once, in its own tests: the caller's
arrays hold the new values (an update in place), the gradients are never
modified, even steps later (a gradient kept as a momentum buffer and then
updated in place). Training: the grader computes the gradients of a badly
conditioned logistic regression and drives each optimizer through a schedule.

Known mistakes are named in the verdict: the course momentum convention
(v = mu v - lr g; p += v), which agrees with PyTorch's while lr is constant and
is told apart by an lr changed between steps and by the momentum buffer;
dampening; weight decay after the momentum; bias correction missing or off by
one; eps inside the square root or before the bias correction; Adam's L2 decay
and AdamW's decoupled decay swapped; a schedule ignored; a load_state_dict that
restores nothing, or only part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from hypothesis import strategies as st

from grader.engine.checks import strategies as gst
from grader.engine.checks.compare import compare, kind_of
from grader.engine.checks.variants import Variant, check_outputs
from grader.engine.plan import CheckFailed, Context, Plan
from grader.engine.report import Figure
from grader.engine.verdict import prefixed
from grader.isolation.base import Handle
from reference import optim as ref

plan = Plan()

NAMES = ("SGD", "Adam", "AdamW")
DEFAULTS: dict[str, dict[str, Any]] = {
    "SGD": {"momentum": 0.0, "weight_decay": 0.0},
    "Adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "AdamW": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
}
KEYS = ("W1", "b1", "W2", "gamma", "Wx")
# Hyperparameters of generated cases. Never momentum 0 alone (hides the momentum rules), never only the
# default betas and eps (eps 1e-8 hides where eps is added), never weight decay 0 alone.
SGD_LRS = (0.1, 0.05, 0.3, 0.01)
MOMENTA = (0.9, 0.0, 0.5, 0.75, 0.99, 1.0)  # 1.0: a plain running sum of gradients, legal in torch
ADAM_LRS = (1e-2, 0.1, 1e-3, 0.05)
BETAS = ((0.9, 0.999), (0.8, 0.99), (0.5, 0.9), (0.95, 0.8))
EPSILONS = (1e-8, 1e-3, 0.1, 1e-6)
DECAYS = (0.0, 0.1, 1e-2, 0.5)
ADAMW_DECAYS = (1e-2, 0.1, 0.5, 0.0)
LR_FACTORS = (0.5, 0.1, 2.0, 0.3)  # a schedule's new lr, as a multiple of the constructor's


# -- cases ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """An optimizer, its constructor's keyword arguments, the params it starts from and the steps it takes."""

    name: str
    hyper: dict[str, Any]
    params: dict[str, np.ndarray]
    steps: tuple[ref.Step, ...]

    @property
    def full(self) -> dict[str, Any]:
        """The hyperparameters in force: the defaults with the constructor's arguments over them."""
        return {**DEFAULTS[self.name], **self.hyper}

    def lr_in_force(self, after: int) -> float:
        """The lr after the first `after` steps (the constructor's, or the last one a schedule set)."""
        return next((s.lr for s in reversed(self.steps[:after]) if s.lr is not None), self.full["lr"])


def _hyper(draw: st.DrawFn, name: str) -> dict[str, Any]:
    if name == "SGD":
        return {"lr": draw(st.sampled_from(SGD_LRS)), "momentum": draw(st.sampled_from(MOMENTA)),
                "weight_decay": draw(st.sampled_from(DECAYS))}
    return {"lr": draw(st.sampled_from(ADAM_LRS)), "betas": draw(st.sampled_from(BETAS)),
            "eps": draw(st.sampled_from(EPSILONS)),
            "weight_decay": draw(st.sampled_from(ADAMW_DECAYS if name == "AdamW" else DECAYS))}


@st.composite
def cases(draw: st.DrawFn, name: str, min_steps: int = 3, max_steps: int = 6) -> Case:
    """Keys of several shapes, 3 to 6 steps, lr changed at least once, sometimes a step of zero gradients."""
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
    shapes = {k: tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))) for k in keys}
    params = {k: draw(gst.arrays(s)) for k, s in shapes.items()}
    hyper = _hyper(draw, name)
    n = draw(st.integers(min_steps, max_steps))
    change_at = draw(st.integers(1, n - 1))
    zero_at = draw(st.one_of(st.none(), st.integers(1, n - 1)))
    steps = []
    for i in range(n):
        factor = draw(st.sampled_from(LR_FACTORS)) if i == change_at else draw(
            st.one_of(st.none(), st.sampled_from(LR_FACTORS))) if i > 0 else None
        grads = {k: np.zeros(s) if i == zero_at else draw(gst.arrays(s)) for k, s in shapes.items()}
        steps.append(ref.Step(grads, None if factor is None else hyper["lr"] * factor))
    return Case(name, hyper, params, tuple(steps))


def fixed_case(name: str, hyper: dict[str, Any], seed: int, steps: int = 5,
               lrs: dict[int, float] | None = None, zero_at: int | None = 2) -> Case:
    """Seeded params of three shapes and `steps` steps, the lr set before the steps `lrs` names."""
    rng = np.random.default_rng(seed)
    shapes = {"W1": (3, 4), "b1": (4,), "W2": (2, 3, 2)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    lrs = lrs or {}
    return Case(name, hyper, params, tuple(
        ref.Step({k: np.zeros(s) if i == zero_at else rng.standard_normal(s) for k, s in shapes.items()}, lrs.get(i))
        for i in range(steps)))


def describe(case: Case) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in case.hyper.items())
    schedule = "; ".join(f"lr={s.lr:g} before step {i + 1}" for i, s in enumerate(case.steps) if s.lr is not None)
    zeros = [i + 1 for i, s in enumerate(case.steps) if all(not np.any(g) for g in s.grads.values())]
    shapes = ", ".join(f"{k} {v.shape}" for k, v in case.params.items())
    return (f"{case.name}(params, {args}); params {shapes}; {len(case.steps)} steps"
            + (f"; {schedule}" if schedule else "") + (f"; all-zero grads at step {zeros}" if zeros else ""))


# -- known mistakes, simulated -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mistake:
    """A known misreading of the contract, for `simulate`. The default is the contract itself."""

    classic: bool = False               # SGD: v = mu * v - lr * g; p += v (the course convention)
    dampening: bool = False             # SGD: v = mu * v + (1 - mu) * g from v = 0
    decay_after_momentum: bool = False  # SGD: p -= lr * (v + wd * p)
    momentum_ignored: bool = False      # SGD: no momentum at all
    lr_fixed: bool = False              # the constructor's lr at every step: the schedule ignored
    no_bias_correction: bool = False
    t_offset: int = 0                   # bias correction with t + offset
    eps_inside: bool = False            # sqrt(v_hat + eps)
    eps_uncorrected: bool = False       # lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + eps)
    decay: str | None = None            # None: the optimizer's own; "none", "l2", "decoupled", "no_lr", "after"
    restore: str = "all"                # load_state_dict restores "all", "nothing", "step" only, "buffers" only


def simulate(case: Case, m: Mistake = Mistake(), params: dict[str, np.ndarray] | None = None,
             steps: Sequence[ref.Step] | None = None, lr: float | None = None,
             state: dict[str, Any] | None = None) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Any]]]:
    """(params after each step, state after each step) under the mistake `m` (trusted code, closed forms).

    `params`, `steps`, `lr` and `state` resume a run: a fresh optimizer over `params` constructed with `lr`,
    loaded with `state`.
    """
    full = case.full
    p = ref.copy_params(case.params if params is None else params)
    lr_now = full["lr"] if lr is None else lr
    t = 0
    buffers: dict[str, dict[str, np.ndarray]] = {}
    if state is not None:
        if m.restore in ("all", "step"):
            t = int(state["step"])
        if m.restore in ("all", "buffers"):
            buffers = {k: {b: np.array(v) for b, v in bufs.items()} for k, bufs in state["state"].items()}
    after, states = [], []
    wd = full["weight_decay"]
    for s in case.steps if steps is None else steps:
        if s.lr is not None and not m.lr_fixed:
            lr_now = s.lr
        t += 1
        for k, x in p.items():
            g = s.grads[k]
            if case.name == "SGD":
                mu = 0.0 if m.momentum_ignored else full["momentum"]
                decay = m.decay or "l2"
                if decay == "l2" and not m.decay_after_momentum:
                    g = g + wd * x
                update = g
                if mu != 0:
                    buf = buffers.setdefault(k, {})
                    if m.classic:
                        v = mu * buf.get("momentum_buffer", np.zeros_like(x)) - lr_now * g
                        buf["momentum_buffer"] = v
                        p[k] = x + v
                        continue
                    if m.dampening:
                        v = mu * buf.get("momentum_buffer", np.zeros_like(x)) + (1 - mu) * g
                    else:
                        v = g.copy() if "momentum_buffer" not in buf else mu * buf["momentum_buffer"] + g
                    buf["momentum_buffer"] = v
                    update = v
                if m.decay_after_momentum and decay == "l2":
                    update = update + wd * x
                p[k] = x - lr_now * update
                continue
            beta1, beta2 = full["betas"]
            eps = full["eps"]
            decay = m.decay or ("l2" if case.name == "Adam" else "decoupled")
            if decay == "l2":
                g = g + wd * x
            elif decay == "decoupled":
                x = x * (1 - lr_now * wd)
            elif decay == "no_lr":
                x = x * (1 - wd)
            buf = buffers.setdefault(k, {})
            mean = beta1 * buf.get("exp_avg", np.zeros_like(x)) + (1 - beta1) * g
            sq = beta2 * buf.get("exp_avg_sq", np.zeros_like(x)) + (1 - beta2) * g * g
            buf["exp_avg"], buf["exp_avg_sq"] = mean, sq
            tt = t + m.t_offset
            bc1 = 1.0 if m.no_bias_correction else 1 - beta1**tt
            bc2 = 1.0 if m.no_bias_correction else 1 - beta2**tt
            if m.eps_inside:
                change = lr_now * (mean / bc1) / np.sqrt(sq / bc2 + eps)
            elif m.eps_uncorrected:
                change = lr_now * np.sqrt(bc2) / bc1 * mean / (np.sqrt(sq) + eps)
            else:
                change = lr_now * (mean / bc1) / (np.sqrt(sq / bc2) + eps)
            x = x - change
            if decay == "after":
                x = x * (1 - lr_now * wd)
            p[k] = x
        after.append(ref.copy_params(p))
        states.append({"step": t, "state": {k: {b: v.copy() for b, v in bufs.items()} for k, bufs in buffers.items()}})
    return after, states


CLASSIC = ("the momentum follows the course convention v = momentum * v - lr * g; p += v. The contract is "
           "torch.optim.SGD's: v = momentum * v + g; p -= lr * v, with lr applied at each step; the two agree "
           "while lr is constant and part ways when a schedule changes it")
UPDATE_MISTAKES: dict[str, list[tuple[str, Mistake]]] = {
    "SGD": [
        ("momentum is ignored: v = momentum * v + g (v = g at the first step); p -= lr * v",
         Mistake(momentum_ignored=True)),
        (CLASSIC, Mistake(classic=True)),
        ("the momentum is dampened: v = momentum * v + (1 - momentum) * g; torch.optim.SGD (dampening 0) uses "
         "v = momentum * v + g, with v = g at the first step", Mistake(dampening=True)),
        ("weight decay is added after the momentum (p -= lr * (v + weight_decay * p)); it is added to the gradient "
         "before it: g = g + weight_decay * p, then the momentum", Mistake(decay_after_momentum=True)),
        ("weight_decay is ignored: g = g + weight_decay * p before the momentum", Mistake(decay="none")),
    ],
    "Adam": [
        ("Adam's weight decay is decoupled (p *= 1 - lr * weight_decay, as AdamW does); Adam's is L2: "
         "g = g + weight_decay * p enters the moments", Mistake(decay="decoupled")),
        ("weight_decay is ignored: Adam adds weight_decay * p to the gradient before the moments",
         Mistake(decay="none")),
    ],
    "AdamW": [
        ("AdamW's weight decay is coupled (g = g + weight_decay * p enters the moments, as Adam's L2 decay); "
         "AdamW's is decoupled: p *= 1 - lr * weight_decay, then the Adam update without decay",
         Mistake(decay="l2")),
        ("the decoupled decay is not scaled by lr: p *= 1 - weight_decay; AdamW decays with "
         "p *= 1 - lr * weight_decay", Mistake(decay="no_lr")),
        ("the decoupled decay is applied after the Adam update; AdamW decays the params first "
         "(p *= 1 - lr * weight_decay), then applies the update", Mistake(decay="after")),
        ("weight_decay is ignored (AdamW's default is 1e-2): p *= 1 - lr * weight_decay before the update",
         Mistake(decay="none")),
    ],
}
ADAM_MISTAKES = [
    ("the moments are not bias-corrected: m_hat = m / (1 - beta1**t) and v_hat = v / (1 - beta2**t)",
     Mistake(no_bias_correction=True)),
    ("the bias correction uses t + 1 at step t: t counts the steps taken including this one (1 at the first)",
     Mistake(t_offset=1)),
    # Infinite from the first step of a fresh run (1 - beta**0 = 0); named where a run resumes at t > 0.
    ("the bias correction uses t - 1 at step t (steps counted from 0): t counts the steps taken including this "
     "one, 1 at the first step", Mistake(t_offset=-1)),
    ("eps is inside the square root: sqrt(v_hat + eps); it is added after it: sqrt(v_hat) + eps",
     Mistake(eps_inside=True)),
    ("eps is added to sqrt(v) before the bias correction (the Adam paper's 'efficient' form); the contract, as "
     "torch.optim.Adam, adds it after: m_hat / (sqrt(v_hat) + eps)", Mistake(eps_uncorrected=True)),
]
UPDATE_MISTAKES["Adam"] += ADAM_MISTAKES
UPDATE_MISTAKES["AdamW"] += ADAM_MISTAKES
SCHEDULE = ("the lr set between steps is ignored: every step must read the current value of the lr attribute "
            "(a schedule sets opt.lr = ...), not the constructor's", Mistake(lr_fixed=True))


# -- driving a candidate optimizer ---------------------------------------------------------------------------


def _keep(ctx: Context, value: Any) -> Handle:
    """`value` placed in the sandbox, where it stays: the grader's handle to it."""
    handle = ctx.helper("common:getitem", [value], 0, keep="all")
    assert isinstance(handle, Handle)
    return handle


def _read(ctx: Context, handle: Any) -> Any:
    """The current value of an object in the sandbox (a dict of handles reads every one of them)."""
    return ctx.helper("common:getitem", [handle], 0)


@dataclass
class Driven:
    """A candidate optimizer in the sandbox and the grader's handles: its params dict and that dict's arrays."""

    opt: Handle
    table: Handle
    arrays: dict[str, Handle]
    shapes: dict[str, tuple[int, ...]]


def _construct(ctx: Context, name: str, params: dict[str, np.ndarray], hyper: dict[str, Any]) -> Driven:
    table = _keep(ctx, ref.copy_params(params))
    arrays = {k: ctx.helper("common:getitem", table, k, keep="all") for k in params}
    opt = ctx.new(name, table, **hyper)
    return Driven(opt, table, arrays, {k: v.shape for k, v in params.items()})


def _set_lr(ctx: Context, d: Driven, lr: float) -> None:
    """opt.lr = lr, as a schedule does; read back and verified before anything is graded against it."""
    ctx.method(d.opt, "__setattr__", "lr", lr)
    seen = ctx.attr(d.opt, "lr")
    if not (isinstance(seen, (int, float, np.floating, np.integer)) and float(seen) == lr):
        raise CheckFailed(f"after setting opt.lr = {lr:g}, opt.lr reads {seen!r}: lr must be a plain attribute "
                          "that a schedule can set between steps")


def _step(ctx: Context, d: Driven, step: ref.Step) -> None:
    if step.lr is not None:
        _set_lr(ctx, d, step.lr)
    ctx.method(d.opt, "step", step.grads)


def _params_now(ctx: Context, d: Driven, where: str) -> dict[str, Any]:
    """The params dict the optimizer was given, as it is now (its entries, whatever objects they are)."""
    now = _read(ctx, d.table)
    if not isinstance(now, dict) or sorted(now) != sorted(d.shapes):
        got = sorted(now) if isinstance(now, dict) else kind_of(now)
        raise CheckFailed(f"{where}, the params dict holds {got}; step() must keep its keys "
                          f"{sorted(d.shapes)} and update their arrays")
    return now


def _outputs(trajectory: Sequence[dict[str, np.ndarray]], first: int = 1) -> dict[str, np.ndarray]:
    """A trajectory as named outputs, step-major: the first difference named is the earliest."""
    return {f"params['{k}'] after step {i + first}": np.asarray(v) for i, ps in enumerate(trajectory)
            for k, v in ps.items()}


def _judge(case: Case, observed: list[dict[str, Any]], expected: list[dict[str, np.ndarray]],
           variants: list[Variant], first: int = 1) -> None:
    """The observed params after each step against the expected trajectory, known mistakes named."""
    got = {f"params['{k}'] after step {i + first}": v for i, ps in enumerate(observed) for k, v in ps.items()}
    for i, ps in enumerate(observed):
        bad = [k for k, v in ps.items() if isinstance(v, np.ndarray) and v.dtype.kind in "fc"
               and not np.all(np.isfinite(v))]
        if bad and all(np.all(np.isfinite(v)) for v in expected[i].values()):
            hint = ""
            if case.name != "SGD" and i + first == 1:
                hint = ("; a bias correction 1 - beta**t with t = 0 at the first step divides by zero: t counts "
                        "the steps taken including this one, 1 at the first step")
            raise CheckFailed(f"params[{bad[0]!r}] has non-finite values (nan or inf) after step {i + first}{hint}")
    check_outputs(got, _outputs(expected, first), variants)


def _variants(case: Case, mistakes: Sequence[tuple[str, Mistake]], first_step: int = 1,
              **resume: Any) -> list[Variant]:
    def outputs(m: Mistake) -> Callable[[], dict[str, np.ndarray]]:
        def run() -> dict[str, np.ndarray]:
            with np.errstate(all="ignore"):
                return _outputs(simulate(case, m, **resume)[0], first_step)
        return run

    return [Variant(message, outputs(m)) for message, m in mistakes]


UNCHANGED = ("step() did not change the params dict it was given: it must update the arrays of that very dict "
             "(in place), not of a copy")


def _unchanged(case: Case, params: dict[str, np.ndarray], steps: int, first: int = 1) -> Variant:
    return Variant(UNCHANGED, _outputs([params] * steps, first))


def _run(ctx: Context, case: Case) -> list[dict[str, Any]]:
    d = _construct(ctx, case.name, case.params, case.hyper)
    observed = []
    for i, step in enumerate(case.steps):
        _step(ctx, d, step)
        observed.append(_params_now(ctx, d, f"after step {i + 1}"))
    return observed


def check_trajectory(ctx: Context, case: Case) -> None:
    observed = _run(ctx, case)
    expected, _ = ref.trajectory(case.name, case.params, case.full, case.steps)
    mistakes = [*UPDATE_MISTAKES[case.name], SCHEDULE]
    _judge(case, observed, expected,
           [_unchanged(case, case.params, len(case.steps)), *_variants(case, mistakes)])


# Fixed cases first: the constructor's defaults, then every feature of the optimizer at once.
FIXED: dict[str, list[tuple[str, Case]]] = {
    "SGD": [
        ("SGD(params, lr=0.1) (defaults: momentum 0, weight_decay 0)", fixed_case("SGD", {"lr": 0.1}, 1)),
        ("SGD with momentum 0.9, lr 0.1 then 0.02 from step 3", fixed_case("SGD", {"lr": 0.1, "momentum": 0.9}, 2,
                                                                          lrs={2: 0.02})),
        ("SGD with momentum 1 (v = v + g, a running sum), lr 0.05",
         fixed_case("SGD", {"lr": 0.05, "momentum": 1.0}, 8)),
        ("SGD with momentum 0.8 and weight_decay 0.1, lr 0.05 then 0.2 from step 4",
         fixed_case("SGD", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1}, 3, lrs={3: 0.2})),
    ],
    "Adam": [
        ("Adam(params) (defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0)", fixed_case("Adam", {}, 4)),
        ("Adam with eps 0.1 and weight_decay 0.1, lr 0.05 then 0.01 from step 3",
         fixed_case("Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 0.1, "weight_decay": 0.1}, 5, lrs={2: 0.01})),
    ],
    "AdamW": [
        ("AdamW(params) (defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2)",
         fixed_case("AdamW", {}, 6)),
        ("AdamW with eps 0.1 and weight_decay 0.5, lr 0.05 then 0.01 from step 3",
         fixed_case("AdamW", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 0.1, "weight_decay": 0.5}, 7,
                    lrs={2: 0.01})),
    ],
}


def _trajectory_test(ctx: Context, name: str) -> None:
    for title, case in FIXED[name]:
        with prefixed(title):
            check_trajectory(ctx, case)
    ctx.check_property(cases(name), lambda case: check_trajectory(ctx, case), describe=describe)


@plan.test("sgd_trajectory")
def sgd_trajectory(ctx: Context) -> None:
    _trajectory_test(ctx, "SGD")


@plan.test("adam_trajectory")
def adam_trajectory(ctx: Context) -> None:
    _trajectory_test(ctx, "Adam")


@plan.test("adamw_trajectory")
def adamw_trajectory(ctx: Context) -> None:
    _trajectory_test(ctx, "AdamW")


# -- state_dict ----------------------------------------------------------------------------------------------

STATE_MISTAKES: dict[str, list[tuple[str, Mistake]]] = {
    "SGD": [
        ("the momentum_buffer holds the course convention's velocity (v = momentum * v - lr * g); PyTorch's is "
         "v = momentum * v + g, without lr", Mistake(classic=True)),
        ("the momentum_buffer is dampened: v = momentum * v + (1 - momentum) * g; PyTorch's is v = momentum * v + g "
         "with v = g at the first step", Mistake(dampening=True)),
        ("the momentum_buffer leaves out the weight decay: g = g + weight_decay * p enters the momentum",
         Mistake(decay_after_momentum=True)),
    ],
    "Adam": [
        ("the moments leave out the L2 weight decay: Adam's g = g + weight_decay * p enters exp_avg and exp_avg_sq",
         Mistake(decay="decoupled")),
    ],
    "AdamW": [
        ("the moments include weight_decay * p: AdamW's decay is decoupled and never enters exp_avg and "
         "exp_avg_sq", Mistake(decay="l2")),
    ],
}


def _state_outputs(state: dict[str, Any], name: str) -> dict[str, np.ndarray]:
    return {f"state['{k}']['{b}']": np.asarray(state["state"][k][b]) for k in sorted(state["state"])
            for b in ref.BUFFERS[name]}


def _expect_state(value: Any, case: Case, steps: int, what: str) -> dict[str, Any]:
    """T0 of a state dict: plain data in the documented layout, with the step count graded."""
    if isinstance(value, Handle):
        raise CheckFailed(f"{what} returned {kind_of(value)}; it must return plain data: a dict "
                          "{'step': int, 'state': {key: {buffer name: array}}}")
    if not isinstance(value, dict) or "step" not in value or "state" not in value:
        got = sorted(value) if isinstance(value, dict) else kind_of(value)
        raise CheckFailed(f"{what} must return a dict with the keys 'step' and 'state'; got {got}")
    count = value["step"]
    if isinstance(count, np.integer):
        count = int(count)
    if isinstance(count, float) and count.is_integer():
        count = int(count)
    if not isinstance(count, int) or isinstance(count, bool):
        raise CheckFailed(f"{what}['step'] must be an int (the number of step() calls); got {kind_of(count)}")
    if count != steps:
        hint = " (counted from 0: it must be the number of step() calls so far)" if count == steps - 1 else \
            " (one too many: it must be the number of step() calls so far)" if count == steps + 1 else ""
        raise CheckFailed(f"{what}['step'] is {count} after {steps} step() calls{hint}")
    state = value["state"]
    needed = case.name != "SGD" or case.full["momentum"] != 0
    if needed:
        if not isinstance(state, dict):
            raise CheckFailed(f"{what}['state'] must be a dict keyed by the params' keys; got {kind_of(state)}")
        for k in case.params:
            bufs = state.get(k)
            missing = [b for b in ref.BUFFERS[case.name] if not isinstance(bufs, dict) or b not in bufs]
            if missing:
                raise CheckFailed(f"{what}['state'][{k!r}] has no {missing}: the layout is "
                                  f"{{key: {{{', '.join(repr(b) for b in ref.BUFFERS[case.name])}: array}}}}")
    return value


def check_state(ctx: Context, case: Case) -> None:
    d = _construct(ctx, case.name, case.params, case.hyper)
    for step in case.steps:
        _step(ctx, d, step)
    n = len(case.steps)
    what = f"state_dict() after {n} steps"
    state = _expect_state(ctx.method(d.opt, "state_dict"), case, n, what)
    if case.name == "SGD" and case.full["momentum"] == 0:
        return
    _, states = ref.trajectory(case.name, case.params, case.full, case.steps)
    expected = _state_outputs(states[-1], case.name)
    got = _state_outputs_loose(state, case)

    def mistaken(m: Mistake) -> Callable[[], dict[str, np.ndarray]]:
        return lambda: _state_outputs(simulate(case, m)[1][-1], case.name)

    variants = [Variant(msg, mistaken(m)) for msg, m in STATE_MISTAKES[case.name]]
    if case.name != "SGD":
        variants.append(Variant("exp_avg and exp_avg_sq are swapped", {
            **{f"state['{k}']['exp_avg']": expected[f"state['{k}']['exp_avg_sq']"] for k in case.params},
            **{f"state['{k}']['exp_avg_sq']": expected[f"state['{k}']['exp_avg']"] for k in case.params}}))
    with prefixed(what):
        check_outputs(got, expected, variants)


def _state_outputs_loose(state: dict[str, Any], case: Case) -> dict[str, Any]:
    return {f"state['{k}']['{b}']": state["state"][k][b] for k in sorted(case.params)
            for b in ref.BUFFERS[case.name]}


@plan.test("state_dict")
def state_dict(ctx: Context) -> None:
    for name in NAMES:
        for title, case in FIXED[name][1:]:
            with prefixed(title):
                check_state(ctx, case)
    ctx.check_property(st.one_of(*(cases(n, 2, 5) for n in NAMES)), lambda case: check_state(ctx, case),
                       max_examples=15, describe=describe)


# -- load_state_dict -------------------------------------------------------------------------------------------

RESTORE = {
    "nothing": "load_state_dict restored nothing: the continuation is a fresh optimizer's. It must restore the "
               "step count and every buffer",
    "step": "load_state_dict restored the step count but not the {buffers}: the continuation starts them again",
    "buffers": "load_state_dict restored the {buffers} but not the step count: the bias correction starts again "
               "at t = 1",
}


def _restore_mistakes(name: str) -> list[tuple[str, Mistake]]:
    """What a partial load_state_dict does; SGD's updates never read the step count, so only its buffer counts."""
    buffers = " and ".join(ref.BUFFERS[name])
    if name == "SGD":
        return [(RESTORE["step"].format(buffers=buffers), Mistake(restore="step"))]
    return [(m.format(buffers=buffers), Mistake(restore=r)) for r, m in RESTORE.items()]


def check_resume(ctx: Context, case: Case, split: int) -> None:
    """A fresh optimizer loaded with the state after `split` steps continues as the original: first with the
    documented layout (the reference's state), then with the candidate's own state_dict()."""
    expected, states = ref.trajectory(case.name, case.params, case.full, case.steps)
    start, state, rest = expected[split - 1], states[split - 1], case.steps[split:]
    lr = case.lr_in_force(split)
    hyper = {**case.hyper, "lr": lr}
    # A mistake in the update itself shows here too (on a state in PyTorch's layout): named as well.
    mistakes = [*_restore_mistakes(case.name), *UPDATE_MISTAKES[case.name], SCHEDULE]
    variants = [_unchanged(case, start, len(rest), split + 1),
                *_variants(case, mistakes, split + 1, params=start, steps=rest, lr=lr, state=state)]

    with prefixed(f"a fresh {case.name} over the params after step {split}, lr {lr:g}, loaded with the documented "
                   f"state {{'step': {split}, 'state': ...}}"):
        d = _construct(ctx, case.name, start, hyper)
        ctx.method(d.opt, "load_state_dict", state)
        observed = []
        for i, step in enumerate(rest):
            _step(ctx, d, step)
            observed.append(_params_now(ctx, d, f"after step {split + i + 1}"))
        _judge(case, observed, expected[split:], variants, split + 1)

    with prefixed(f"a fresh {case.name} loaded with your own state_dict() after step {split}"):
        first = _construct(ctx, case.name, case.params, case.hyper)
        for step in case.steps[:split]:
            _step(ctx, first, step)
        own = ctx.method(first.opt, "state_dict", keep="all")
        now = _params_now(ctx, first, f"after step {split}")
        d = _construct(ctx, case.name, {k: np.asarray(v, dtype=np.float64) for k, v in now.items()}, hyper)
        ctx.method(d.opt, "load_state_dict", own)
        observed = []
        for i, step in enumerate(rest):
            _step(ctx, d, step)
            observed.append(_params_now(ctx, d, f"after step {split + i + 1}"))
        _judge(case, observed, expected[split:], variants, split + 1)


@st.composite
def resume_cases(draw: st.DrawFn) -> tuple[Case, int]:
    case = draw(st.one_of(*(cases(n, 3, 6) for n in NAMES)))
    return case, draw(st.integers(1, len(case.steps) - 1))


@plan.test("load_state_dict")
def load_state_dict(ctx: Context) -> None:
    for name in NAMES:
        title, case = FIXED[name][-1]
        with prefixed(title):
            check_resume(ctx, case, 3)
    ctx.check_property(resume_cases(), lambda c: check_resume(ctx, *c), max_examples=10,
                       describe=lambda c: f"{describe(c[0])}; stopped after step {c[1]}")


# -- conformance: in place, grads untouched ----------------------------------------------------------------------

# SGD without weight decay too: there the gradient itself is what a momentum buffer would alias.
CONFORMANCE = [fixed_case("SGD", {"lr": 0.1, "momentum": 0.9}, 10, steps=3, zero_at=None),
               fixed_case("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}, 11, steps=3, zero_at=None),
               fixed_case("Adam", {"lr": 0.05, "weight_decay": 0.1}, 12, steps=3, zero_at=None),
               fixed_case("AdamW", {"lr": 0.05, "weight_decay": 0.1}, 13, steps=3, zero_at=None)]


def _moved(now: dict[str, Any], before: dict[str, np.ndarray]) -> bool:
    """True when every entry is an array of its shape and at least one differs from where it started (a value
    turned to nan has moved: whether it should have is the trajectory tests' verdict, not this one's)."""
    arrays = [now[k] if isinstance(now[k], np.ndarray) and now[k].shape == before[k].shape else None for k in before]
    if any(a is None for a in arrays):
        return False
    return any(not np.array_equal(a, before[k], equal_nan=True) for a, k in zip(arrays, before))


@plan.test("in_place")
def in_place(ctx: Context) -> None:
    for case in CONFORMANCE:
        d = _construct(ctx, case.name, case.params, case.hyper)
        for i, step in enumerate(case.steps):
            _step(ctx, d, step)
            where = f"{describe(case)}: after step {i + 1}"
            entries = _params_now(ctx, d, where)
            originals = _read(ctx, d.arrays)
            if not _moved(entries, case.params) and not _moved(originals, case.params):
                raise CheckFailed(f"{where}, neither the params dict nor its arrays changed: {UNCHANGED}")
            for k in case.params:
                entry, original = entries[k], originals[k]
                if not (isinstance(entry, np.ndarray) and entry.shape == original.shape
                        and np.array_equal(entry, original, equal_nan=True)):
                    raise CheckFailed(
                        f"{where}, params[{k!r}] is a new array: the array the caller passed in does not hold the "
                        "new values. step() must update the given arrays in place (p -= ..., p[...] = ..., "
                        "np.subtract(p, ..., out=p)), not rebind params[key] to a new array "
                        "(params[key] = params[key] - ...): the caller keeps references to them, as PyTorch's "
                        "parameters are updated in place")


@plan.test("grads_untouched")
def grads_untouched(ctx: Context) -> None:
    for case in CONFORMANCE:
        d = _construct(ctx, case.name, case.params, case.hyper)
        sent: list[Handle] = []
        for step in case.steps:
            if step.lr is not None:
                _set_lr(ctx, d, step.lr)
            handle = _keep(ctx, {k: g.copy() for k, g in step.grads.items()})
            sent.append(handle)
            ctx.method(d.opt, "step", handle)
        if not _moved(_params_now(ctx, d, "after the last step"), case.params):
            raise CheckFailed(f"{describe(case)}: step() did not change the params: {UNCHANGED}")
        seen = _read(ctx, sent)
        for i, (step, now) in enumerate(zip(case.steps, seen)):
            keys = sorted(now) if isinstance(now, dict) else None
            if keys != sorted(step.grads):
                raise CheckFailed(f"{describe(case)}: the grads dict of step {i + 1} now has the keys {keys}; "
                                  "step() must not add, remove or replace entries of the grads it is given")
            for k, g in step.grads.items():
                value = now[k]
                if not (isinstance(value, np.ndarray) and value.shape == g.shape and np.array_equal(value, g)):
                    later = " (after the later steps: a gradient kept as a momentum buffer or moment without a " \
                            "copy, then updated in place?)" if i < len(case.steps) - 1 else ""
                    raise CheckFailed(f"{describe(case)}: grads[{k!r}] of step {i + 1} was modified{later}. The "
                                      "gradients belong to the caller: compute into new arrays "
                                      "(g = g + weight_decay * p, not g += ...), and copy a gradient before "
                                      "keeping it as a buffer")


# -- training ---------------------------------------------------------------------------------------------------

TRAIN_SEED = 20261203
TRAIN_STEPS = 150


@dataclass(frozen=True)
class Training:
    name: str
    hyper: dict[str, Any]
    pass_mark: float
    schedule: dict[int, float]  # lr set before the 0-based step


# Pass marks over the reference's final losses on this data: 0.5283 (SGD), 0.4148 (Adam), 0.4165 (AdamW);
# the loss at zero weights is 0.6931. SGD without momentum ends near 0.57.
TRAININGS = (
    Training("SGD", {"lr": 0.01, "momentum": 0.9}, 0.53, {100: 0.003}),
    Training("Adam", {"lr": 0.05}, 0.42, {}),
    Training("AdamW", {"lr": 0.05}, 0.42, {}),
)
# The losses after every step must follow the reference's: the same arithmetic up to rounding, which kept the
# three correct sample solutions within 4e-16 of the reference over the 150 steps of each run.
TRAIN_RTOL = 1e-6


def _train_simulated(t: Training, X: np.ndarray, y: np.ndarray, m: Mistake) -> list[float]:
    """The losses a mistaken optimizer gives on the training problem (the grader computes the gradients)."""
    case = Case(t.name, t.hyper, ref.initial_training_params(), ())
    params = ref.initial_training_params()
    lr = case.full["lr"]
    state: dict[str, Any] | None = None
    losses = []
    with np.errstate(all="ignore"):  # a mistake that diverges gives nan losses, which never match
        for k in range(TRAIN_STEPS):
            loss, grads = ref.logistic_loss(params, X, y)
            losses.append(loss)
            step = ref.Step(grads, t.schedule.get(k))
            if step.lr is not None and not m.lr_fixed:
                lr = step.lr
            after, states = simulate(case, m, params=params, steps=[replace(step, lr=None)], lr=lr, state=state)
            params, state = after[0], states[0]
        losses.append(ref.logistic_loss(params, X, y)[0])
    return losses


@plan.test("training")
def training(ctx: Context) -> None:
    X, y = ref.training_data(TRAIN_SEED)
    results = {}
    for t in TRAININGS:
        d = _construct(ctx, t.name, ref.initial_training_params(), t.hyper)
        losses = []
        for k in range(TRAIN_STEPS + 1):
            now = _params_now(ctx, d, f"{t.name}: after step {k}")
            arrays = {key: np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) else None
                      for key, v in now.items()}
            if any(a is None or a.shape != d.shapes[key] or not np.all(np.isfinite(a)) for key, a in arrays.items()):
                raise CheckFailed(f"{t.name}: after step {k} the params are not finite float arrays of their shapes")
            loss, grads = ref.logistic_loss({key: a for key, a in arrays.items() if a is not None}, X, y)
            losses.append(loss)
            if k == TRAIN_STEPS:
                break
            _step(ctx, d, ref.Step(grads, t.schedule.get(k)))
        _, expected = ref.train(t.name, t.hyper, X, y, TRAIN_STEPS, lr_at=_schedule(t))
        results[t.name] = (losses, expected)
    ctx.figure(Figure(kind="line", title="Training loss of each optimizer (logistic regression, 150 steps)",
                      x_label="step", y_label="mean cross-entropy",
                      series={f"{name} {who}": [[float(i), v] for i, v in enumerate(curve)]
                              for name, (got, want) in results.items()
                              for who, curve in (("yours", got), ("reference", want))}))
    ctx.details["final_loss"] = {name: round(got[-1], 6) for name, (got, _) in results.items()}
    for t in TRAININGS:
        losses, expected = results[t.name]
        got, want = np.array(losses), np.array(expected)
        if not compare(got, want, TRAIN_RTOL, 0.0).ok:
            first = int(np.argmax(np.abs(got - want) > TRAIN_RTOL * np.abs(want)))
            mistake = next((msg for msg, m in [*UPDATE_MISTAKES[t.name], SCHEDULE]
                            if compare(got, np.array(_train_simulated(t, X, y, m)), TRAIN_RTOL, 0.0).ok), None)
            reason = f": {mistake}" if mistake else ""
            raise CheckFailed(f"{t.name}: the loss after step {first} is {got[first]:.8g}; the reference's is "
                              f"{want[first]:.8g} (final loss {got[-1]:.4f}, pass mark {t.pass_mark}){reason}")
        if got[-1] >= t.pass_mark:
            raise CheckFailed(f"{t.name}: the final loss {got[-1]:.4f} is not under the pass mark {t.pass_mark}")
    ctx.note("final losses: " + ", ".join(f"{name} {got[-1]:.4f}" for name, (got, _) in results.items()))


def _schedule(t: Training) -> Callable[[int], float] | None:
    if not t.schedule:
        return None
    changes = sorted(t.schedule.items())

    def lr_at(k: int) -> float:
        lr = float(t.hyper["lr"])
        for start, value in changes:
            if k >= start:
                lr = value
        return lr

    return lr_at
