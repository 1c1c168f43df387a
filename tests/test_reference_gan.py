"""The gan reference against independent float64 formulas, torch.nn's BCE modules and hand-written optimizer steps.

The builders it shares with the sandbox (sandbox/builtins/gan.py) are checked here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from grader.engine.checks.samples import mode_coverage
from reference import gan as ref
from sandbox.builtins import gan as builtins

# Logit shapes: the discriminator's (N, 1) and a flat (N,); N >= 2 so mean and sum differ.
LOGIT_SHAPES = [(2, 1), (3,), (7, 1), (16,)]
# (N, z_dim) for train_step: N >= 2, z_dim != 2 so G's input and output widths differ.
STEP_SHAPES = [(2, 3), (5, 8), (9, 1)]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread, as in the sandbox: on a shared machine two threads run these tiny MLPs several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(actual: np.ndarray | float, expected: np.ndarray | float, rtol: float = 1e-12) -> None:
    """Assert equal shapes, finite values and a normwise relative error below rtol."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    denom = np.linalg.norm(actual) + np.linalg.norm(expected)
    err = np.linalg.norm(actual - expected) / denom if denom > 0 else 0.0
    assert err < rtol, f"relative error {err:.3e}"


def softplus_np(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow, independent of torch."""
    return np.logaddexp(0.0, x)


def sigmoid_np(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow."""
    return np.exp(-np.logaddexp(0.0, -x))


def leaf(a: np.ndarray) -> torch.Tensor:
    """A float64 leaf tensor that records gradients."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


# ---------------------------------------------------------------------------
# Losses


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", LOGIT_SHAPES)
def test_discriminator_loss_and_its_gradient(shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    real, fake = 4.0 * rng.standard_normal(shape), 4.0 * rng.standard_normal(shape)
    n = real.size
    lr_, lf_ = leaf(real), leaf(fake)
    loss = ref.discriminator_loss(lr_, lf_)
    assert loss.shape == () and loss.dtype == torch.float64
    close(loss.item(), softplus_np(-real).mean() + softplus_np(fake).mean())
    bce = torch.nn.BCEWithLogitsLoss()
    module_loss = bce(torch.tensor(real), torch.ones(shape, dtype=torch.float64)) + bce(
        torch.tensor(fake), torch.zeros(shape, dtype=torch.float64)
    )
    close(loss.item(), module_loss.item())
    loss.backward()
    # d/dx softplus(-x) = sigmoid(x) - 1 and d/dx softplus(x) = sigmoid(x), each over the batch.
    close(lr_.grad.numpy(), (sigmoid_np(real) - 1.0) / n)
    close(lf_.grad.numpy(), sigmoid_np(fake) / n)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", LOGIT_SHAPES)
def test_generator_loss_and_its_gradient(shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed + 10)
    fake = 4.0 * rng.standard_normal(shape)
    lf_ = leaf(fake)
    loss = ref.generator_loss(lf_)
    assert loss.shape == () and loss.dtype == torch.float64
    close(loss.item(), softplus_np(-fake).mean())
    close(
        loss.item(),
        F.binary_cross_entropy(torch.sigmoid(torch.tensor(fake)), torch.ones(shape, dtype=torch.float64)).item(),
    )
    loss.backward()
    close(lf_.grad.numpy(), (sigmoid_np(fake) - 1.0) / fake.size)


def test_losses_are_finite_and_exact_for_huge_logits() -> None:
    real = np.array([[100.0], [-100.0], [1e4], [-1e4], [0.0]])
    fake = np.array([[-100.0], [100.0], [-1e4], [1e4], [0.0]])
    lr_, lf_ = leaf(real), leaf(fake)
    d_loss = ref.discriminator_loss(lr_, lf_)
    d_loss.backward()
    close(d_loss.item(), softplus_np(-real).mean() + softplus_np(fake).mean())
    close(lr_.grad.numpy(), (sigmoid_np(real) - 1.0) / real.size, rtol=1e-14)
    close(lf_.grad.numpy(), sigmoid_np(fake) / fake.size, rtol=1e-14)
    lg = leaf(fake)
    g_loss = ref.generator_loss(lg)
    g_loss.backward()
    close(g_loss.item(), softplus_np(-fake).mean())
    close(lg.grad.numpy(), (sigmoid_np(fake) - 1.0) / fake.size, rtol=1e-14)


def test_the_naive_log_sigmoid_form_really_breaks_at_logit_100() -> None:
    # Guards the premise of the stability test: the naive form is not finite here.
    x = torch.tensor([100.0], dtype=torch.float64)
    assert not torch.isfinite(-torch.log(1.0 - torch.sigmoid(x))).all()
    assert torch.isfinite(ref.discriminator_loss(-x, x))


def test_non_saturating_loss_keeps_its_gradient_where_the_saturating_one_vanishes() -> None:
    # D confidently rejects every fake: logits of -20.
    fake = np.full((4, 1), -20.0)
    a, b = leaf(fake), leaf(fake)
    ref.generator_loss(a).backward()
    ref.saturating_generator_loss(b).backward()
    close(a.grad.numpy(), np.full((4, 1), -0.25), rtol=1e-8)
    assert np.abs(b.grad.numpy()).max() < 1e-9


@pytest.mark.parametrize("shape", LOGIT_SHAPES)
def test_saturating_loss_is_mean_log_one_minus_sigmoid(shape: tuple[int, ...]) -> None:
    fake = 3.0 * np.random.default_rng(3).standard_normal(shape)
    close(ref.saturating_generator_loss(torch.tensor(fake)).item(), np.mean(np.log(1.0 - sigmoid_np(fake))))


# ---------------------------------------------------------------------------
# train_step, against a step written with torch.func and hand-written optimizers

Params = dict[str, torch.Tensor]
Update = Callable[[str, Params, tuple[torch.Tensor, ...]], Params]


def sgd_update(lr: float) -> Update:
    """p <- p - lr * g, the same rule as torch.optim.SGD without momentum."""

    def update(_: str, params: Params, grads: tuple[torch.Tensor, ...]) -> Params:
        return {k: (p - lr * g).detach() for (k, p), g in zip(params.items(), grads)}

    return update


def adam_update(lr: float, betas: tuple[float, float], eps: float = 1e-8) -> Update:
    """Adam with bias correction, written out; keeps one state per network."""
    state: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    steps: dict[str, int] = {}

    def update(net: str, params: Params, grads: tuple[torch.Tensor, ...]) -> Params:
        steps[net] = steps.get(net, 0) + 1
        t = steps[net]
        out = {}
        for (k, p), g in zip(params.items(), grads):
            m, v = state.setdefault(net, {}).get(k, (torch.zeros_like(p), torch.zeros_like(p)))
            m = betas[0] * m + (1 - betas[0]) * g
            v = betas[1] * v + (1 - betas[1]) * g * g
            state[net][k] = (m, v)
            m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
            out[k] = (p - lr * m_hat / (v_hat.sqrt() + eps)).detach()
        return out

    return update


def functional_train_step(
    G: torch.nn.Module,
    D: torch.nn.Module,
    g_params: Params,
    d_params: Params,
    real: torch.Tensor,
    z: torch.Tensor,
    update: Update,
) -> tuple[Params, Params, float, float]:
    """One D then one G update, gradients taken only with respect to the network being updated."""
    g_params = {k: p.requires_grad_(True) for k, p in g_params.items()}
    d_params = {k: p.requires_grad_(True) for k, p in d_params.items()}
    fake = functional_call(G, g_params, (z,))
    logits_real = functional_call(D, d_params, (real,))
    logits_fake = functional_call(D, d_params, (fake,))
    d_loss = F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()
    d_grads = torch.autograd.grad(d_loss, tuple(d_params.values()))
    d_params = {k: p.requires_grad_(False) for k, p in update("D", d_params, d_grads).items()}
    g_loss = F.softplus(-functional_call(D, d_params, (functional_call(G, g_params, (z,)),))).mean()
    g_grads = torch.autograd.grad(g_loss, tuple(g_params.values()))
    g_params = update("G", g_params, g_grads)
    return g_params, d_params, d_loss.item(), g_loss.item()


OPTIMIZERS = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.1), lambda: sgd_update(0.1)),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.5, 0.999)), lambda: adam_update(1e-2, (0.5, 0.999))),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("N, z_dim", STEP_SHAPES)
def test_train_step_matches_a_functional_step_over_consecutive_calls(N: int, z_dim: int, opt_name: str) -> None:
    make_opt, make_update = OPTIMIZERS[opt_name]
    G, D = ref.build_generator(z_dim, seed=1), ref.build_discriminator(seed=2)
    opt_G, opt_D = make_opt(G.parameters()), make_opt(D.parameters())
    update = make_update()
    g_params = {k: p.detach().clone() for k, p in G.named_parameters()}
    d_params = {k: p.detach().clone() for k, p in D.named_parameters()}
    rng = np.random.default_rng(N * 100 + z_dim)
    # Three calls: a missing zero_grad only changes the result from the second on.
    for _ in range(3):
        real = torch.tensor(ref.Ring().centers()[rng.integers(0, 8, N)] + 0.05 * rng.standard_normal((N, 2)))
        z = torch.tensor(rng.standard_normal((N, z_dim)))
        d_loss, g_loss = ref.train_step(G, D, opt_G, opt_D, real, z)
        g_params, d_params, d_expected, g_expected = functional_train_step(G, D, g_params, d_params, real, z, update)
        assert type(d_loss) is float and type(g_loss) is float
        close(d_loss, d_expected)
        close(g_loss, g_expected)
        for k, p in G.named_parameters():
            close(p.detach().numpy(), g_params[k].numpy(), rtol=1e-11)
        for k, p in D.named_parameters():
            close(p.detach().numpy(), d_params[k].numpy(), rtol=1e-11)


def test_train_step_sends_no_gradient_to_G_before_the_D_step_and_leaves_inputs_alone() -> None:
    G, D = ref.build_generator(4, seed=3), ref.build_discriminator(seed=4)
    opt_G = torch.optim.SGD(G.parameters(), lr=0.1)
    opt_D = torch.optim.SGD(D.parameters(), lr=0.1)
    events: list[str] = []
    for p in G.parameters():
        p.register_hook(lambda g: events.append("grad G") or g)
    for p in D.parameters():
        p.register_hook(lambda g: events.append("grad D") or g)
    for name, opt in (("step D", opt_D), ("step G", opt_G)):
        opt.register_step_pre_hook(lambda *_, name=name: events.append(name))
    real = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    real0, z0 = real.clone(), z.clone()
    ref.train_step(G, D, opt_G, opt_D, real, z)
    first_d_step = events.index("step D")
    assert "grad G" not in events[:first_d_step]
    assert "grad D" in events[:first_d_step]
    assert events.index("step D") < events.index("step G")
    assert "grad G" in events[first_d_step:]
    assert torch.equal(real, real0) and torch.equal(z, z0)


# ---------------------------------------------------------------------------
# Builders, parameters as arrays, the ring and the measurements


def test_builders_are_deterministic_float64_and_leave_the_global_seed_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    G, D = ref.build_generator(5, seed=7), ref.build_discriminator(seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    shapes = {k: a.shape for k, a in ref.module_arrays(G).items()}
    assert shapes == {
        "0.weight": (64, 5),
        "0.bias": (64,),
        "2.weight": (64, 64),
        "2.bias": (64,),
        "4.weight": (2, 64),
        "4.bias": (2,),
    }
    assert ref.module_arrays(D)["4.weight"].shape == (1, 64)
    assert all(p.dtype == torch.float64 for p in [*G.parameters(), *D.parameters()])
    again = ref.module_arrays(ref.build_generator(5, seed=7))
    other = ref.module_arrays(ref.build_generator(5, seed=8))
    assert all(np.array_equal(again[k], v) for k, v in ref.module_arrays(G).items())
    assert not np.array_equal(other["0.weight"], again["0.weight"])
    x = torch.tensor([[1.0, -1.0], [-3.0, 0.5]], dtype=torch.float64)
    # LeakyReLU 0.2 between the layers, by hand.
    h = F.leaky_relu(F.linear(x, D[0].weight, D[0].bias), 0.2)
    h = F.leaky_relu(F.linear(h, D[2].weight, D[2].bias), 0.2)
    close(D(x).detach().numpy(), F.linear(h, D[4].weight, D[4].bias).detach().numpy(), rtol=1e-15)


def test_generator_from_arrays_reproduces_the_generator() -> None:
    G = ref.build_generator(3, seed=11)
    H = ref.generator_from_arrays(ref.module_arrays(G), z_dim=3)
    close(ref.generator_samples(H, 3, 50, seed=0), ref.generator_samples(G, 3, 50, seed=0), rtol=1e-15)
    with pytest.raises(ValueError, match="expected shape"):
        ref.generator_from_arrays({**ref.module_arrays(G), "0.bias": np.zeros(3)}, z_dim=3)
    with pytest.raises(ValueError, match="names differ"):
        ref.generator_from_arrays({"0.weight": np.zeros((64, 3))}, z_dim=3)


def test_ring_sampler_is_seeded_by_its_own_generator() -> None:
    ring = ref.Ring()
    torch.manual_seed(0)
    a = ring.sample(4000, seed=5)
    torch.manual_seed(1)
    b = ring.sample(4000, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ring.sample(4000, seed=6))
    radius = np.linalg.norm(a, axis=1)
    # Radial spread of a 2-D Gaussian of std 0.05 around radius 2; bounds are loose on purpose.
    assert abs(radius.mean() - 2.0) < 0.01 and 0.03 < radius.std() < 0.07


@pytest.mark.parametrize("shape", LOGIT_SHAPES)
def test_the_sandbox_stand_in_losses_equal_the_reference(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(4)
    real, fake = torch.tensor(5.0 * rng.standard_normal(shape)), torch.tensor(5.0 * rng.standard_normal(shape))
    assert builtins.trusted_discriminator_loss(real, fake).item() == ref.discriminator_loss(real, fake).item()
    assert builtins.trusted_generator_loss(fake).item() == ref.generator_loss(fake).item()


def test_make_optimizers_covers_each_network_once() -> None:
    G, D = ref.build_generator(2, seed=0), ref.build_discriminator(seed=0)
    for kind in builtins.OPTIMIZERS:
        opt_G, opt_D = builtins.make_optimizers(G, D, kind)
        assert [p for g in opt_G.param_groups for p in g["params"]] == list(G.parameters())
        assert [p for g in opt_D.param_groups for p in g["params"]] == list(D.parameters())


def test_train_gan_is_deterministic_under_the_global_seed_and_trains_both_models() -> None:
    ring = ref.Ring()

    def run() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        G, D = ref.build_generator(8, seed=0), ref.build_discriminator(seed=1)
        torch.manual_seed(42)
        ref.train_gan(G, D, ring.sampler(0), z_dim=8, steps=5)
        return ref.module_arrays(G), ref.module_arrays(D)

    g1, d1 = run()
    g2, d2 = run()
    g0, d0 = ref.module_arrays(ref.build_generator(8, seed=0)), ref.module_arrays(ref.build_discriminator(seed=1))
    assert all(np.array_equal(g1[k], g2[k]) for k in g1) and all(np.array_equal(d1[k], d2[k]) for k in d1)
    assert all(not np.array_equal(g1[k], g0[k]) for k in g1)
    assert all(not np.array_equal(d1[k], d0[k]) for k in d1)


@pytest.mark.slow
def test_train_gan_covers_the_ring() -> None:
    ring = ref.Ring()
    G, D = ref.build_generator(8, seed=0), ref.build_discriminator(seed=1)
    before = mode_coverage(ref.generator_samples(G, 8, 2000, seed=9), ring.centers(), ring.std)
    torch.manual_seed(0)
    ref.train_gan(G, D, ring.sampler(0), z_dim=8, steps=3000)
    after = mode_coverage(ref.generator_samples(G, 8, 2000, seed=9), ring.centers(), ring.std)
    assert before.modes_covered == 0
    assert after.modes_covered >= 6 and after.share_near_mode >= 0.75, after
