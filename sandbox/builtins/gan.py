"""Trusted code the gan test plan runs inside the sandbox: the networks, optimizers and data it trains on.

The grader builds the generator, discriminator and optimizers that the
candidate's `train_step` and `train_gan` receive, instruments them to record
what happened during a call (which network received gradients, in which order
the optimizers stepped, what G was run on), and reads their parameters back
as arrays. Nothing here decides a verdict: it reports, the host judges.

The host imports the same builders (reference/gan.py does), so both sides
agree on the architectures, the initial weights, the optimizer settings and
the target distribution by construction.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

DTYPE = torch.float64
HIDDEN_UNITS = 64
LEAKY_SLOPE = 0.2
LOSS_NAMES = ("discriminator_loss", "generator_loss")

# Optimizer settings of the train_step tests. Plain SGD keeps every update linear
# in the gradient (a sum instead of a mean shows); Adam adds per-parameter state.
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.05}),
    "adam": (torch.optim.Adam, {"lr": 1e-2, "betas": (0.5, 0.999)}),
}


# ---------------------------------------------------------------------------
# Architectures, optimizers, data (shared with the host)


def build_generator(z_dim: int, seed: int) -> nn.Sequential:
    """The contract's generator z_dim -> 64 -> 64 -> 2 with ReLU, float64, PyTorch's default init under seed."""
    # fork_rng: building a model must not move the global torch seed the grader set.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(z_dim, HIDDEN_UNITS, dtype=DTYPE),
            nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, HIDDEN_UNITS, dtype=DTYPE),
            nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, 2, dtype=DTYPE),
        )


def build_discriminator(seed: int) -> nn.Sequential:
    """The contract's discriminator 2 -> 64 -> 64 -> 1 with LeakyReLU 0.2, float64, default init under seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(2, HIDDEN_UNITS, dtype=DTYPE),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(HIDDEN_UNITS, HIDDEN_UNITS, dtype=DTYPE),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(HIDDEN_UNITS, 1, dtype=DTYPE),
        )


def make_optimizers(G: nn.Module, D: nn.Module, kind: str) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """(opt_G, opt_D) of the named kind in OPTIMIZERS, over G's and D's parameters."""
    cls, options = OPTIMIZERS[kind]
    return cls(G.parameters(), **options), cls(D.parameters(), **options)


@dataclass(frozen=True)
class Ring:
    """A mixture of n_modes equally weighted isotropic Gaussians (std) evenly spaced on a circle."""

    n_modes: int = 8
    radius: float = 2.0
    std: float = 0.05

    def centers(self) -> np.ndarray:
        """Mode centres (n_modes, 2), the first on the positive x axis."""
        angle = 2.0 * math.pi * np.arange(self.n_modes) / self.n_modes
        return self.radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)

    def sampler(self, seed: int) -> Callable[[int], Tensor]:
        """sample_real(n) -> float64 tensor (n, 2), from its own torch generator so it ignores the global seed."""
        gen = torch.Generator().manual_seed(seed)
        centers = torch.as_tensor(self.centers(), dtype=DTYPE)

        def sample_real(n: int) -> Tensor:
            """n points of the target distribution as a float64 tensor (n, 2)."""
            mode = torch.randint(0, self.n_modes, (int(n),), generator=gen)
            return centers[mode] + self.std * torch.randn(int(n), 2, generator=gen, dtype=DTYPE)

        return sample_real

    def sample(self, n: int, seed: int) -> np.ndarray:
        """n points of the mixture as an array (n, 2)."""
        return self.sampler(seed)(n).numpy()


def module_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """Copies of a module's parameters as float64 arrays, keyed like its state_dict (e.g. '0.weight')."""
    return {name: p.detach().to(DTYPE).numpy().copy() for name, p in module.named_parameters()}


def trusted_discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The contract's discriminator loss, standing in for the candidate's while train_step is checked."""
    return (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
            + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))


def trusted_generator_loss(logits_fake: Tensor) -> Tensor:
    """The contract's non-saturating generator loss, standing in for the candidate's."""
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


TRUSTED_LOSSES = {"discriminator_loss": trusted_discriminator_loss, "generator_loss": trusted_generator_loss}


# ---------------------------------------------------------------------------
# What happened during a call


class Recorder:
    """Records, in order: gradients computed for G's parameters, optimizer steps, and G's inputs."""

    def __init__(self, G: nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer) -> None:
        self.events: list[str] = []
        self.g_inputs: list[Any] = []
        for p in G.parameters():
            p.register_hook(self._on_g_grad)  # type: ignore[no-untyped-call]
        opt_D.register_step_pre_hook(lambda *_: self.events.append("step D"))
        opt_G.register_step_pre_hook(lambda *_: self.events.append("step G"))
        G.register_forward_pre_hook(self._on_g_forward)

    def _on_g_grad(self, grad: Tensor) -> Tensor:
        # One event per backward pass, however many of G's parameters it reaches.
        if not self.events or self.events[-1] != "grad G":
            self.events.append("grad G")
        return grad

    def _on_g_forward(self, _: nn.Module, args: tuple[Any, ...]) -> None:
        self.events.append("forward G")
        first = args[0] if args else None
        self.g_inputs.append(first.detach().to(DTYPE).numpy().copy() if isinstance(first, Tensor) else None)

    def clear(self) -> None:
        self.events.clear()
        self.g_inputs.clear()


# ---------------------------------------------------------------------------
# Entry points the host calls through ctx.helper("gan:...")


def prepare(seed: int) -> None:
    """float64 as torch's default dtype (the statement promises it) and the global torch seed."""
    torch.set_default_dtype(DTYPE)
    torch.manual_seed(seed)


def build_models(z_dim: int, g_seed: int, d_seed: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(G, D) for the candidate, kept in the sandbox as handles."""
    torch.set_default_dtype(DTYPE)
    return build_generator(z_dim, g_seed), build_discriminator(d_seed)


def ring_sampler(seed: int) -> Callable[[int], Tensor]:
    """The sample_real function handed to train_gan."""
    return Ring().sampler(seed)


def parameters(module: nn.Module) -> dict[str, np.ndarray]:
    """A module's parameters as arrays (the host scores them with its own forward pass)."""
    return module_arrays(module)


@dataclass
class StepRig:
    """The objects of one train_step check: networks, optimizers and the recorder watching them."""

    G: nn.Module
    D: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    recorder: Recorder


def build_step_rig(z_dim: int, g_seed: int, d_seed: int, optimizer: str) -> StepRig:
    """Networks, optimizers and a recorder for train_step; kept in the sandbox as one handle."""
    torch.set_default_dtype(DTYPE)
    G, D = build_generator(z_dim, g_seed), build_discriminator(d_seed)
    opt_G, opt_D = make_optimizers(G, D, optimizer)
    return StepRig(G, D, opt_G, opt_D, Recorder(G, opt_G, opt_D))


def rig_parameters(rig: StepRig) -> dict[str, dict[str, np.ndarray]]:
    """G's and D's parameters of a rig as arrays."""
    return {"G": module_arrays(rig.G), "D": module_arrays(rig.D)}


def _solution() -> Any:
    return sys.modules.get("solution")


def _error(exc: BaseException) -> dict[str, Any]:
    """The candidate's exception in the runner's format (type, message, the candidate's traceback lines)."""
    from sandbox.runner import describe

    module = _solution()
    folder = os.path.dirname(getattr(module, "__file__", "") or "") or "/tmp/submission"
    return describe(exc, "solution.py", folder)


def _missing(name: str) -> dict[str, Any]:
    return {"type": "MissingName", "message": name, "missing": name}


def describe_value(value: Any) -> dict[str, Any]:
    """What a returned value is: its type, and for tensors their shape, dtype, gradient flag and value."""
    info: dict[str, Any] = {"type": type(value).__name__, "is_tensor": isinstance(value, Tensor)}
    if isinstance(value, Tensor):
        info.update(shape=list(value.shape), dtype=str(value.dtype).removeprefix("torch."),
                    requires_grad=bool(value.requires_grad),
                    value=value.detach().to(DTYPE).numpy().copy() if value.is_floating_point() else None)
    elif isinstance(value, (bool, int, float, np.number)):
        info["value"] = float(value)
    elif isinstance(value, (tuple, list)) and len(value) <= 8:
        info["items"] = [describe_value(v) for v in value]
    return info


def call_loss(name: str, arrays: Sequence[np.ndarray]) -> dict[str, Any]:
    """Call the candidate's loss on float64 leaf tensors, backpropagate its output, report everything."""
    torch.set_default_dtype(DTYPE)
    fn = getattr(_solution(), name, None)
    if fn is None:
        return {"error": _missing(name)}
    leaves = [torch.tensor(np.asarray(a), dtype=DTYPE, requires_grad=True) for a in arrays]
    try:
        out = fn(*leaves)
    except BaseException as exc:  # the candidate's code may raise anything
        return {"error": _error(exc)}
    report: dict[str, Any] = {"result": describe_value(out), "grads": None, "backward_error": None}
    if isinstance(out, Tensor) and out.requires_grad and out.numel() == 1:
        try:
            out.reshape(()).backward()  # type: ignore[no-untyped-call]
            report["grads"] = [leaf.grad.numpy().copy() if leaf.grad is not None else None for leaf in leaves]
        except BaseException as exc:
            report["backward_error"] = _error(exc)
    report["inputs_after"] = [leaf.detach().numpy().copy() for leaf in leaves]
    return report


def call_train_step(rig: StepRig, real: np.ndarray, z: np.ndarray, trusted_losses: bool = True) -> dict[str, Any]:
    """Call the candidate's train_step on the rig; report its result, the networks after it, and the events.

    With trusted_losses, the contract's losses stand in for the candidate's
    module-level discriminator_loss and generator_loss during the call (and
    only then), so the loop is judged apart from the losses.
    """
    torch.set_default_dtype(DTYPE)
    module = _solution()
    fn = getattr(module, "train_step", None)
    if fn is None:
        return {"error": _missing("train_step")}
    real_t = torch.tensor(np.asarray(real), dtype=DTYPE)
    z_t = torch.tensor(np.asarray(z), dtype=DTYPE)
    saved = {name: module.__dict__[name] for name in LOSS_NAMES if name in module.__dict__}
    rig.recorder.clear()
    report: dict[str, Any] = {}
    try:
        if trusted_losses:
            module.__dict__.update(TRUSTED_LOSSES)
        result = fn(rig.G, rig.D, rig.opt_G, rig.opt_D, real_t, z_t)
        report["result"] = describe_value(result)
    except BaseException as exc:
        report["error"] = _error(exc)
    finally:
        for name in LOSS_NAMES:
            module.__dict__.pop(name, None)
        module.__dict__.update(saved)
    report.update(G=module_arrays(rig.G), D=module_arrays(rig.D), events=list(rig.recorder.events),
                  g_inputs=list(rig.recorder.g_inputs), real_after=real_t.numpy().copy(), z_after=z_t.numpy().copy())
    return report
