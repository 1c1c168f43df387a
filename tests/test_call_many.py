"""call_many: a list of calls in one sandbox exchange, and the gradient checks that use it.

On the real local sandbox and on the in-process fake: the same values as one call each, an error confined to
its case, a value that cannot be sent confined to its case, the reply caps bounding a whole batch, and one
time limit for the whole batch. Then the gradient checks: their batched finite differences are bit for bit
those of one call per perturbed input (the code they replaced is kept here to compare with).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import grader.engine.checks.layers as layers
from grader.engine.checks.gradcheck import BatchObjective, Objective, numeric_gradient
from grader.engine.checks.gradcheck import directional_derivatives as batched_directional
from grader.engine.plan import Context
from grader.isolation import get_backend
from grader.isolation.base import CallTimeout, Handle, ProtocolViolation, SandboxLimits, SandboxSpec, Session
from grader.isolation.inprocess import InProcessBackend
from problems.cnn import plan as cnn_plan
from problems.mlp import plan as mlp_plan
from problems.rnn import plan as rnn_plan
from reference import cnn as ref_cnn
from tests.conftest import ROOT

SOLUTION = '''
import time
import numpy as np

def scaled(x, scale=1.0):
    if x[0] < 0:
        raise ValueError(f"negative first element {x[0]}")
    return x * scale, float(x.sum())

def unencodable(k):
    return 2 ** 70 if k == 2 else k

def big(n):
    return np.zeros(n)

def busy(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return seconds

def sleepy(seconds):
    time.sleep(seconds)
    return seconds

_out = np.zeros(3)

def into_buffer(x):
    _out[:] = x * 2.0  # one output buffer reused by every call, as some hand-optimized forwards do
    return _out

_calls = [0]

def flaky(x):
    _calls[0] += 1
    if _calls[0] == 2:
        raise RuntimeError("only the second call fails")
    return x
'''


def _start(backend: str, limits: SandboxLimits = SandboxLimits()) -> Session:
    spec = SandboxSpec(limits=limits)
    session = InProcessBackend().start(spec) if backend == "inprocess" else get_backend(backend).start(spec)
    reply = session.load({"solution.py": SOLUTION}, "solution.py", timeout_s=20)
    assert reply.ok, reply.error
    return session


@pytest.fixture(params=["local", "inprocess"])
def session(request: pytest.FixtureRequest) -> Iterator[Session]:
    s = _start(request.param)
    try:
        yield s
    finally:
        s.close()


def test_a_reused_output_buffer_sends_each_case_its_own_values(session: Session) -> None:
    """The frame goes out after the last case: without a copy per case, every case showed the last values."""
    cases = [((np.full(3, float(k)),), {}) for k in range(4)]
    batch = session.call_many({"fn": "into_buffer"}, cases, timeout_s=20)
    assert [r.value.tolist() for r in batch] == [[2.0 * k] * 3 for k in range(4)]


def test_results_equal_one_call_each(session: Session) -> None:
    rng = np.random.default_rng(0)
    cases = [((np.abs(rng.standard_normal(4)),), {"scale": float(k)}) for k in range(7)]
    batch = session.call_many({"fn": "scaled"}, cases, timeout_s=20)
    singles = [session.call({"fn": "scaled"}, args, kwargs, timeout_s=20) for args, kwargs in cases]
    assert len(batch) == len(cases)
    for got, want in zip(batch, singles):
        assert got.ok and want.ok
        assert type(got.value) is tuple and got.value[1] == want.value[1]
        assert got.value[0].tobytes() == want.value[0].tobytes() and got.value[0].dtype == want.value[0].dtype
    kept = session.call_many({"fn": "scaled"}, cases[:3], keep=[0], timeout_s=20)
    handles = [r.value[0] for r in kept]
    assert all(type(h) is Handle for h in handles) and len({h.id for h in handles}) == 3
    assert session.call_many({"fn": "scaled"}, [], timeout_s=20) == []


def test_an_error_stays_in_its_case(session: Session) -> None:
    cases = [((np.array([float(v), 1.0]),), {}) for v in (1, 2, -3, 4)]
    replies = session.call_many({"fn": "scaled"}, cases, timeout_s=20)
    assert [r.ok for r in replies] == [True, True, False, True]
    error = replies[2].error
    assert error is not None and error.type == "ValueError" and "negative first element -3.0" in error.message
    assert error.line is not None and error.file == "solution.py"
    assert replies[3].value[1] == 5.0
    stopped = session.call_many({"fn": "scaled"}, cases, stop_on_error=True, timeout_s=20)
    assert [r.ok for r in stopped] == [True, True, False]  # the cases after the first error never ran
    missing = session.call_many({"fn": "nowhere"}, cases, timeout_s=20)
    assert len(missing) == 4 and all(not r.ok and r.error and r.error.missing == "nowhere" for r in missing)
    assert len(session.call_many({"fn": "nowhere"}, cases, stop_on_error=True, timeout_s=20)) == 1
    assert not session.dead


def test_a_value_that_cannot_be_sent_stays_in_its_case(session: Session) -> None:
    replies = session.call_many({"fn": "unencodable"}, [((k,), {}) for k in range(4)], timeout_s=20)
    assert [r.ok for r in replies] == [True, True, False, True]
    assert [r.value for r in replies if r.ok] == [0, 1, 3]
    single = session.call({"fn": "unencodable"}, (2,), timeout_s=20)
    assert not single.ok and single.error is not None and replies[2].error is not None
    assert replies[2].error.type == single.error.type and replies[2].error.message == single.error.message
    assert not session.dead


# The fake's runner thread ends on a broken pipe once the host killed the session, as after a single call.
ENDED_BY_HOST = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@ENDED_BY_HOST
@pytest.mark.parametrize("backend", ["local", "inprocess"])
def test_the_reply_caps_bound_the_whole_batch(backend: str) -> None:
    cap = SandboxLimits(max_reply_mb=0.1)  # 104857 bytes
    session = _start(backend, cap)
    try:
        ok = session.call_many({"fn": "big"}, [((1000,), {})] * 10, timeout_s=20)  # 80 kB in all
        assert all(r.ok for r in ok)
        with pytest.raises(ProtocolViolation, match="exceeds"):
            session.call({"fn": "big"}, (20_000,), timeout_s=20)  # one 160 kB reply
    finally:
        session.close()
    session = _start(backend, cap)
    try:
        assert session.call({"fn": "big"}, (2000,), timeout_s=20).ok  # 16 kB: one fits
        with pytest.raises(ProtocolViolation, match="exceeds"):
            session.call_many({"fn": "big"}, [((2000,), {})] * 10, timeout_s=20)  # ten do not
        assert session.dead
    finally:
        session.close()


def test_the_time_limit_covers_the_whole_batch_local() -> None:
    session = _start("local")
    try:
        assert session.call({"fn": "busy"}, (0.4,), timeout_s=1.5).ok  # each alone is within the limit
        started = time.monotonic()
        with pytest.raises(CallTimeout):
            session.call_many({"fn": "busy"}, [((0.4,), {})] * 6, timeout_s=1.5)
        assert time.monotonic() - started < 10
        assert session.dead
    finally:
        session.close()


@ENDED_BY_HOST
def test_the_time_limit_covers_the_whole_batch_inprocess() -> None:
    # The fake has no CPU clock (its limit is wall time) and cannot stop a hang: the calls only sleep.
    session = _start("inprocess")
    try:
        assert session.call({"fn": "sleepy"}, (0.2,), timeout_s=0.6).ok
        with pytest.raises(CallTimeout):
            session.call_many({"fn": "sleepy"}, [((0.2,), {})] * 6, timeout_s=0.6)
        assert session.dead
    finally:
        session.close()


# -- gradient checks: batched finite differences are the same numbers ---------------------------------------

def old_numeric_gradient(objective: Objective, inputs: dict[str, np.ndarray], wrt: str, h: float) -> np.ndarray:
    """numeric_gradient as it was, one objective call per perturbed input."""
    x = inputs[wrt]
    grad = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += h
        minus[idx] -= h
        grad[idx] = (objective({**inputs, wrt: plus}) - objective({**inputs, wrt: minus})) / (2 * h)
    return grad


def old_directional(objective: Objective, inputs: dict[str, np.ndarray], wrt: str, probes: list[np.ndarray],
                    h: float) -> np.ndarray:
    x = inputs[wrt]
    return np.array([(objective({**inputs, wrt: x + h * u}) - objective({**inputs, wrt: x - h * u})) / (2 * h)
                     for u in probes], dtype=np.float64)


def _context(session: Session) -> Context:
    return Context(test_id="unit", seed=1, deadline=time.monotonic() + 120, _session_factory=lambda: session)


def _captured(run: Callable[[Context], Any], session: Session,
              monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The arguments a layer's gradient check hands to self_consistency."""
    seen: dict[str, Any] = {}

    def capture(objective: Objective, inputs: dict[str, np.ndarray], grads: Any, rng: Any, what: str,
                **kwargs: Any) -> dict[str, float]:
        seen.update(objective=objective, inputs=inputs, step=kwargs["step"])
        return {}

    monkeypatch.setattr(layers, "self_consistency", capture)
    run(_context(session))
    return seen


def _cnn_conv(ctx: Context) -> None:
    rng = np.random.default_rng(3)
    case = {**ref_cnn.conv_inputs(7, 2, 2, 5, 4, 3, 2, 2), "stride": 2, "pad": 1}
    dout = rng.standard_normal(cnn_plan.CONV.forward.expected(case)["out"].shape)
    cnn_plan.CONV.gradient_check(ctx, case, {"dout": dout}, rng)


def _cnn_pool(ctx: Context) -> None:
    rng = np.random.default_rng(4)
    case = {"x": rng.standard_normal((2, 1, 4, 5)), "kernel": 2, "stride": 1}
    dout = rng.standard_normal(cnn_plan.POOL.forward.expected(case)["out"].shape)
    cnn_plan.POOL.gradient_check(ctx, case, {"dout": dout}, rng)


def _mlp_affine(ctx: Context) -> None:
    rng = np.random.default_rng(5)
    inputs = {"x": rng.standard_normal((3, 2, 2)), "w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    mlp_plan.AFFINE.gradient_check(ctx, inputs, {"dout": rng.standard_normal((3, 3))}, rng)


def _mlp_softmax(ctx: Context) -> None:
    rng = np.random.default_rng(6)
    case = {"logits": rng.standard_normal((4, 5)), "y": np.array([0, 3, 1, 4])}
    mlp_plan.SOFTMAX.gradient_check(ctx, case, rng, grads={"logits": "dlogits"})


def _rnn_lstm_step(ctx: Context) -> None:
    rng = np.random.default_rng(7)
    N, D, H = 2, 3, 2
    inputs = {"x": rng.standard_normal((N, D)), "h_prev": rng.standard_normal((N, H)),
              "c_prev": rng.standard_normal((N, H)), "Wx": rng.standard_normal((D, 4 * H)),
              "Wh": rng.standard_normal((H, 4 * H)), "b": rng.standard_normal(4 * H)}
    upstream = {"dh_next": rng.standard_normal((N, H)), "dc_next": rng.standard_normal((N, H))}
    rnn_plan.LSTM_STEP.gradient_check(ctx, inputs, upstream, rng)


@pytest.mark.parametrize(("problem", "run"), [("cnn", _cnn_conv), ("cnn", _cnn_pool), ("mlp", _mlp_affine),
                                              ("mlp", _mlp_softmax), ("rnn", _rnn_lstm_step)])
def test_batched_finite_differences_are_bit_identical(problem: str, run: Callable[[Context], Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    session = InProcessBackend().start(SandboxSpec())
    try:
        assert session.load({"solution.py": (ROOT / "reference" / f"{problem}.py").read_text()}, "solution.py",
                            timeout_s=20).ok
        seen = _captured(run, session, monkeypatch)
        objective, inputs, step = seen["objective"], seen["inputs"], seen["step"]
        assert isinstance(objective, BatchObjective)  # every layer's gradient check batches its forward calls
        exchanges: list[int] = []
        original = Context.raw_call_many

        def counted(self: Context, *args: Any, **kwargs: Any) -> Any:
            exchanges.append(len(args[1]))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Context, "raw_call_many", counted)
        rng = np.random.default_rng(11)
        for name, x in inputs.items():
            one_by_one = old_numeric_gradient(objective.one, inputs, name, step)
            exchanges.clear()
            batched = numeric_gradient(objective, inputs, name, step)
            assert batched.dtype == one_by_one.dtype and batched.tobytes() == one_by_one.tobytes(), name
            assert sum(exchanges) == 2 * x.size and len(exchanges) < 2 * x.size
            probes = [u / np.linalg.norm(u) for u in rng.standard_normal((4, *x.shape))]
            assert (batched_directional(objective, inputs, name, probes, step).tobytes()
                    == old_directional(objective.one, inputs, name, probes, step).tobytes())
    finally:
        session.close()


@pytest.mark.parametrize("backend", ["local", "inprocess"])
def test_a_case_that_raised_in_a_batch_gets_no_second_chance(backend: str) -> None:
    """One call at a time, `flaky` fails on its second call and the check ends there; the batch must fail on the
    same case even though calling that case again alone (for the plan's message) would answer."""
    from grader.engine.plan import CandidateRaised

    session = _start(backend)
    try:
        contract = layers.Contract("flaky", args=("x",), returns=("y",))
        cases = [{"x": np.full(2, float(k))} for k in range(4)]
        got = []
        with pytest.raises(CandidateRaised, match="only the second call fails"):
            for named in contract.call_each(_context(session), cases, lambda c: contract.call(_context(session), c),
                                            batch=4):
                got.append(named["y"].tolist())
        assert got == [[0.0, 0.0]]
    finally:
        session.close()
