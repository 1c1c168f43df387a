"""In-process smoke test of the gan solutions: correct ones match the reference, each wrong one shows its planted bug.

This imports the solution files directly (no sandbox) and compares them with
reference/gan.py on a few inputs. The sandboxed grading of the same files is
tested by the catalog-wide tests.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from grader.engine.checks.samples import mode_coverage
from reference import gan as ref
from sandbox.builtins import gan as builtins

SOLUTIONS = Path(__file__).parent / "solutions" / "gan"
CORRECT = sorted(SOLUTIONS.glob("correct_*.py"))
WRONG = sorted(SOLUTIONS.glob("wrong_*.py"))

# Which finding each planted bug must produce (it may produce others too).
EXPECTED_FINDINGS = {
    "wrong_labels_swapped": {"discriminator_loss"},
    "wrong_loss_summed": {"discriminator_loss", "generator_loss"},
    "wrong_d_loss_averaged": {"discriminator_loss"},
    "wrong_log_sigmoid": {"stability"},
    "wrong_saturating_generator_loss": {"generator_loss"},
    "wrong_no_zero_grad": {"train_step parameters"},
    "wrong_no_detach": {"gradient reached G during the D update"},
    "wrong_fresh_z": {"train_step parameters", "G not run on the given z"},
    "wrong_g_before_d": {"train_step parameters", "G stepped before D"},
    "wrong_g_update_detached": {"train_step parameters"},
    "wrong_returns_tensors": {"train_step returns"},
    "wrong_train_gan_noop": {"train_gan"},
}


@pytest.fixture(autouse=True)
def sandbox_like_torch() -> Iterator[None]:
    """float64 default dtype and one thread, as the grader sets them for this problem."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def load(path: Path) -> ModuleType:
    """Import a solution file under a unique module name."""
    spec = importlib.util.spec_from_file_location(f"gan_solution_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Normwise relative error, inf when either side is not finite or shapes differ."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom > 0 else 0.0


def value_and_grads(fn: Any, *logits: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """A loss value and its gradients with respect to each logits array."""
    leaves = [torch.tensor(x, requires_grad=True) for x in logits]
    loss = fn(*leaves)
    loss.backward()
    grads = [x.grad.numpy() if x.grad is not None else np.full(x.shape, np.nan) for x in leaves]
    return loss.detach().numpy(), grads


def loss_findings(sol: ModuleType) -> set[str]:
    """Compare both losses and their gradients with the reference on ordinary and huge logits."""
    found: set[str] = set()
    rng = np.random.default_rng(0)
    cases = [("ordinary", 3.0 * rng.standard_normal(shape), 3.0 * rng.standard_normal(shape))
             for shape in [(2, 1), (5,), (7, 1)]]
    huge = np.array([[100.0], [-100.0], [30.0], [-30.0]])
    cases += [("stability", huge, -huge), ("stability", -huge, huge)]
    for label, real, fake in cases:
        for name, args in (("discriminator_loss", (real, fake)), ("generator_loss", (fake,))):
            expected, expected_grads = value_and_grads(getattr(ref, name), *args)
            got, got_grads = value_and_grads(getattr(sol, name), *args)
            errors = [rel_err(got, expected)] + [rel_err(g, e) for g, e in zip(got_grads, expected_grads)]
            if max(errors) > 1e-10 or got.shape != ():
                found.add(name if label == "ordinary" else "stability")
    return found


def step_findings(sol: ModuleType) -> set[str]:
    """Three consecutive train_step calls with SGD and with Adam, against the reference step."""
    found: set[str] = set()
    make_opts = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
        "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.5, 0.999)),
    }
    for opt_name, make_opt in make_opts.items():
        nets = {who: (ref.build_generator(3, seed=5), ref.build_discriminator(seed=6)) for who in ("sol", "ref")}
        opts = {who: (make_opt(G.parameters()), make_opt(D.parameters())) for who, (G, D) in nets.items()}
        recorder = builtins.Recorder(nets["sol"][0], *opts["sol"])
        rng = np.random.default_rng(1 if opt_name == "sgd" else 2)
        for _ in range(3):
            real = torch.tensor(ref.Ring().centers()[rng.integers(0, 8, 6)] + 0.05 * rng.standard_normal((6, 2)))
            z = torch.tensor(rng.standard_normal((6, 3)))
            real0, z0 = real.clone(), z.clone()
            recorder.clear()
            got = sol.train_step(*nets["sol"], *opts["sol"], real, z)
            expected = ref.train_step(*nets["ref"], *opts["ref"], real0.clone(), z0.clone())
            if not (type(got) is tuple and len(got) == 2 and all(type(v) is float for v in got)):
                found.add("train_step returns")
            elif rel_err(np.array(got), np.array(expected)) > 1e-10:
                found.add("train_step losses")
            if not (torch.equal(real, real0) and torch.equal(z, z0)):
                found.add("train_step mutates its inputs")
            for mine, theirs in zip(nets["sol"], nets["ref"]):
                mine_arrays, ref_arrays = ref.module_arrays(mine), ref.module_arrays(theirs)
                if any(rel_err(mine_arrays[k], ref_arrays[k]) > 1e-10 for k in ref_arrays):
                    found.add("train_step parameters")
            ev = recorder.events
            if "step D" not in ev or "step G" not in ev:
                found.add("an optimizer was not stepped")
            else:
                d_step = ev.index("step D")
                # Only G's gradients since its own last step belong to the D update.
                since = max((i for i in range(d_step) if ev[i] == "step G"), default=-1) + 1
                if "grad G" in ev[since:d_step]:
                    found.add("gradient reached G during the D update")
                if ev.index("step G") < ev.index("step D"):
                    found.add("G stepped before D")
            if not recorder.g_inputs or any(x is None or not np.array_equal(x, z0.numpy()) for x in recorder.g_inputs):
                found.add("G not run on the given z")
    return found


def train_findings(sol: ModuleType) -> set[str]:
    """A short train_gan run must return None and change both networks."""
    G, D = ref.build_generator(8, seed=0), ref.build_discriminator(seed=1)
    g0, d0 = ref.module_arrays(G), ref.module_arrays(D)
    torch.manual_seed(0)
    result = sol.train_gan(G, D, ref.Ring().sampler(0), 8, 20)
    g1, d1 = ref.module_arrays(G), ref.module_arrays(D)
    unchanged = any(np.array_equal(g0[k], g1[k]) for k in g0) or any(np.array_equal(d0[k], d1[k]) for k in d0)
    return {"train_gan"} if result is not None or unchanged else set()


def all_findings(sol: ModuleType) -> set[str]:
    """Every discrepancy with the reference the smoke checks can see."""
    return loss_findings(sol) | step_findings(sol) | train_findings(sol)


def test_the_catalog_of_solutions_is_complete() -> None:
    assert len(CORRECT) >= 2
    assert {p.stem for p in WRONG} == set(EXPECTED_FINDINGS)
    for path in WRONG:
        lines = path.read_text().splitlines()
        assert lines[0].startswith('"""Known-wrong: ') and lines[1].startswith("Expect: "), path.name


def test_the_reference_passes_its_own_smoke_checks() -> None:
    assert all_findings(ref) == set()


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_solution_matches_the_reference(path: Path) -> None:
    assert all_findings(load(path)) == set()


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.stem)
def test_wrong_solution_shows_its_planted_bug(path: Path) -> None:
    found = all_findings(load(path))
    assert EXPECTED_FINDINGS[path.stem] <= found, f"found only {sorted(found)}"


@pytest.mark.slow
@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_train_gan_covers_the_ring(path: Path) -> None:
    ring = ref.Ring()
    G, D = ref.build_generator(8, seed=0), ref.build_discriminator(seed=1)
    torch.manual_seed(0)
    load(path).train_gan(G, D, ring.sampler(0), 8, 3000)
    coverage = mode_coverage(ref.generator_samples(G, 8, 2000, seed=9), ring.centers(), ring.std)
    assert coverage.modes_covered >= 6 and coverage.share_near_mode >= 0.5, coverage
