"""In-process smoke test of the mlp solution files against the reference.

Every correct_*.py must agree with reference/mlp.py on every probe; every
wrong_*.py must disagree on the probe that names its planted mistake, so the
sandboxed grading tests have real bugs to find. No sandbox here: the files are
imported directly, which is only acceptable because they are our own fixtures.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from reference import mlp as ref

SOLUTIONS_DIR = Path(__file__).parent / "solutions" / "mlp"
CORRECT = sorted(SOLUTIONS_DIR.glob("correct_*.py"))
WRONG = sorted(SOLUTIONS_DIR.glob("wrong_*.py"))
FORBIDDEN_MODULES = {"torch", "jax", "autograd", "tensorflow", "scipy"}
RTOL = 1e-9

# The probe that must see each planted mistake (wrong_<key>.py).
EXPECTED_PROBE = {
    "affine_mutates_input": "affine_inputs_untouched",
    "db_mean": "affine_backward",
    "dlogits_not_averaged": "softmax",
    "dx_not_reshaped": "affine_backward",
    "l2_grad_factor": "net_grads",
    "l2_missing_from_grad": "net_grads",
    "loss_summed": "softmax",
    "net_loss_without_reg": "net_loss",
    "reg_on_biases": "net_loss",
    "relu_mask_inverted": "relu_backward",
    "sgd_rebinds_local": "sgd_step",
    "sgd_sign": "sgd_step",
    "softmax_unstable": "softmax_stability",
    "torch_autograd": "imports",
    "train_noop": "train_mlp",
}


def load(path: Path) -> ModuleType:
    """Import a solution file as a fresh module named after it."""
    spec = importlib.util.spec_from_file_location(f"mlp_solution_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch = sys.modules.get("torch")
    if torch is not None:
        # As in the sandbox: one thread, or torch oversubscribes the shared cores.
        torch.set_num_threads(1)
    return module


def copies(*arrays: np.ndarray) -> list[np.ndarray]:
    """Fresh copies for the solution, so a solution that mutates its inputs cannot change the reference's."""
    return [a.copy() for a in arrays]


def same(actual: object, expected: np.ndarray) -> bool:
    """True when actual is an ndarray of expected's shape, finite, within RTOL normwise."""
    if type(actual) is not np.ndarray and not np.isscalar(actual):
        return False
    a = np.asarray(actual, dtype=np.float64)
    if a.shape != expected.shape or not np.all(np.isfinite(a)):
        return False
    denom = np.linalg.norm(a) + np.linalg.norm(expected)
    return bool(denom == 0 or np.linalg.norm(a - expected) / denom < RTOL)


# -- probes: each returns True when the solution agrees with the reference ----------------------


def probe_imports(m: ModuleType, path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        if any(name.split(".")[0] in FORBIDDEN_MODULES for name in names):
            return False
    return True


def probe_affine_forward(m: ModuleType, path: Path) -> bool:
    for x_shape, M in [((3, 4), 5), ((4, 2, 3, 2), 5)]:
        p = ref.affine_inputs(1, x_shape, M)
        out, _ = m.affine_forward(*copies(p["x"], p["w"], p["b"]))
        if not same(out, ref.affine_forward(p["x"], p["w"], p["b"])[0]):
            return False
    return True


def probe_affine_inputs_untouched(m: ModuleType, path: Path) -> bool:
    p = ref.affine_inputs(2, (3, 2, 4), 5)
    before = {k: v.copy() for k, v in p.items()}
    m.affine_forward(p["x"], p["w"], p["b"])
    return all(p[k].shape == v.shape and np.array_equal(p[k], v) for k, v in before.items())


def probe_affine_backward(m: ModuleType, path: Path) -> bool:
    for x_shape, M in [((3, 4), 5), ((4, 2, 3, 2), 5)]:
        p = ref.affine_inputs(3, x_shape, M)
        dout = np.random.default_rng(4).standard_normal((x_shape[0], M))
        _, cache = m.affine_forward(*copies(p["x"], p["w"], p["b"]))
        got = m.affine_backward(dout.copy(), cache)
        expected = ref.affine_backward(dout, ref.affine_forward(p["x"], p["w"], p["b"])[1])
        if len(got) != 3 or not all(same(g, e) for g, e in zip(got, expected)):
            return False
    return True


def probe_relu_forward(m: ModuleType, path: Path) -> bool:
    x = ref.away_from_zero(np.random.default_rng(5), (3, 2, 4))
    return same(m.relu_forward(x.copy())[0], ref.relu_forward(x)[0])


def probe_relu_backward(m: ModuleType, path: Path) -> bool:
    rng = np.random.default_rng(6)
    x, dout = ref.away_from_zero(rng, (4, 5)), rng.standard_normal((4, 5))
    _, cache = m.relu_forward(x.copy())
    return same(m.relu_backward(dout.copy(), cache), ref.relu_backward(dout, ref.relu_forward(x)[1]))


def probe_softmax(m: ModuleType, path: Path) -> bool:
    p = ref.classification_inputs(7, 6, 4, scale=3.0)
    loss, dlogits = m.softmax_cross_entropy(*copies(p["logits"], p["y"]))
    rloss, rdlogits = ref.softmax_cross_entropy(p["logits"], p["y"])
    return same(np.asarray(loss), np.asarray(rloss)) and same(dlogits, rdlogits)


def probe_softmax_stability(m: ModuleType, path: Path) -> bool:
    p = ref.large_logits(8, 4, 10, magnitude=1e4)
    with np.errstate(all="ignore"):
        loss, dlogits = m.softmax_cross_entropy(*copies(p["logits"], p["y"]))
    rloss, rdlogits = ref.softmax_cross_entropy(p["logits"], p["y"])
    return same(np.asarray(loss), np.asarray(rloss)) and same(dlogits, rdlogits)


def _net_pair(m: ModuleType, reg: float) -> tuple[object, ref.TwoLayerNet]:
    """The candidate's net and the reference's, holding the same params with non-zero biases."""
    D, H, C = 5, 7, 4
    net = m.TwoLayerNet(D, H, C, weight_scale=0.5, reg=reg, seed=3)
    rng = np.random.default_rng(9)
    shared = {"W1": rng.standard_normal((D, H)), "b1": rng.standard_normal(H),
              "W2": rng.standard_normal((H, C)), "b2": rng.standard_normal(C)}
    for k, v in shared.items():
        net.params[k] = v.copy()
    reference = ref.TwoLayerNet(D, H, C, reg=reg)
    reference.params = {k: v.copy() for k, v in shared.items()}
    return net, reference


def _net_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(10)
    return rng.standard_normal((6, 5)), rng.integers(0, 4, size=6)


def probe_net_init(m: ModuleType, path: Path) -> bool:
    net = m.TwoLayerNet(20, 300, 10, weight_scale=0.05, reg=0.0, seed=1)
    shapes = {"W1": (20, 300), "b1": (300,), "W2": (300, 10), "b2": (10,)}
    if {k: np.shape(v) for k, v in net.params.items()} != shapes:
        return False
    # 6,000 Gaussian draws: the sample standard deviation is within 3% of weight_scale.
    return bool(abs(net.params["W1"].std() / 0.05 - 1) < 0.03 and not net.params["b1"].any())


def probe_net_scores(m: ModuleType, path: Path) -> bool:
    net, reference = _net_pair(m, reg=0.0)
    X, _ = _net_batch()
    return same(net.loss(X.copy()), reference.loss(X))


def probe_net_loss(m: ModuleType, path: Path) -> bool:
    net, reference = _net_pair(m, reg=0.7)
    X, y = _net_batch()
    return same(np.asarray(net.loss(*copies(X, y))[0]), np.asarray(reference.loss(X, y)[0]))


def probe_net_grads(m: ModuleType, path: Path) -> bool:
    net, reference = _net_pair(m, reg=0.7)
    X, y = _net_batch()
    _, expected = reference.loss(X, y)
    for _ in range(2):  # a second call catches state carried over between calls
        _, grads = net.loss(*copies(X, y))
        if sorted(grads) != sorted(expected) or not all(same(grads[k], expected[k]) for k in expected):
            return False
    return True


def probe_sgd_step(m: ModuleType, path: Path) -> bool:
    rng = np.random.default_rng(11)
    params = {"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(4)}
    expected = {k: v.copy() for k, v in params.items()}
    for _ in range(2):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        if m.sgd_step(params, {k: g.copy() for k, g in grads.items()}, 0.05) is not None:
            return False
        expected = {k: expected[k] - 0.05 * grads[k] for k in expected}
        if not all(same(params[k], expected[k]) for k in expected):
            return False
    return True


# 600 examples keep the probe fast; the three correct styles reach 0.94 to 0.96 on it.
TRAIN_TASK = ref.training_task(0, n_train=600, n_test=1000)
TRAIN_PASS_ACCURACY = 0.9


def probe_train_mlp(m: ModuleType, path: Path) -> bool:
    t = TRAIN_TASK
    with np.errstate(all="ignore"):
        params = m.train_mlp(*copies(t.X_train, t.y_train), t.hidden_dim, t.num_classes, 0)
        try:
            ref.check_params(params, t.X_train.shape[1], t.hidden_dim, t.num_classes)
        except ValueError:
            return False
        return ref.accuracy(params, t.X_test, t.y_test) >= TRAIN_PASS_ACCURACY


PROBES: dict[str, Callable[[ModuleType, Path], bool]] = {
    name.removeprefix("probe_"): fn for name, fn in globals().items() if name.startswith("probe_")
}


def disagreements(path: Path) -> dict[str, str]:
    """Probe name -> why, for every probe on which the solution differs from the reference."""
    module = load(path)
    found = {}
    for name, probe in PROBES.items():
        try:
            if not probe(module, path):
                found[name] = "differs from the reference"
        except Exception as exc:  # a planted bug may raise (wrong shapes); that is a disagreement too
            found[name] = f"raised {type(exc).__name__}: {exc}"
    return found


def test_every_wrong_solution_is_documented() -> None:
    keys = {p.stem.removeprefix("wrong_") for p in WRONG}
    assert keys == set(EXPECTED_PROBE), "EXPECTED_PROBE must name exactly the wrong_*.py files"
    readme = (SOLUTIONS_DIR / "README.md").read_text()
    for p in WRONG:
        assert p.name in readme, f"{p.name} is missing from tests/solutions/mlp/README.md"
        lines = p.read_text().splitlines()
        assert lines[0].startswith('"""Known-wrong: ') and lines[1].startswith("Expect: ")


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_solution_matches_the_reference(path: Path) -> None:
    assert disagreements(path) == {}


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_fails_the_probe_naming_its_mistake(path: Path) -> None:
    found = disagreements(path)
    expected = EXPECTED_PROBE[path.stem.removeprefix("wrong_")]
    assert expected in found, f"planted bug not seen by probe {expected!r}; disagreements: {found}"


def test_at_least_two_correct_styles() -> None:
    assert len(CORRECT) >= 2
