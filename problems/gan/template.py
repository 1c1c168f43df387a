"""The adversarial training loop of a GAN, in PyTorch.

Every tensor is float64: the grader's networks are float64, `sample_real`
returns float64 tensors, and torch's default dtype is float64 when your code
runs, so `torch.randn(n, z_dim)` is float64 too. Logits are the raw outputs of
the discriminator (before any sigmoid), of shape (N, 1) from the grader's D;
any shape must work. Losses are 0-dim tensors; every term is a mean over the
batch. The grader builds G, D and the optimizers; do not replace them.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Binary cross-entropy on logits, real labelled 1 and fake labelled 0.

    logits_real, logits_fake: D's logits on a real and a generated batch (same shape, e.g. (N, 1)).
    Returns a 0-dim tensor: the batch mean of the real term plus the batch mean of the fake term.
    Must be finite and exact for logits of magnitude 100, and differentiable.
    """
    raise NotImplementedError("discriminator_loss: BCE on logits, real -> 1, fake -> 0, each a batch mean, summed")


def generator_loss(logits_fake: Tensor) -> Tensor:
    """The non-saturating generator loss: BCE of D's logits on fakes against label 1.

    logits_fake: D's logits on a generated batch, e.g. (N, 1).
    Returns a 0-dim tensor (batch mean), finite for logits of magnitude 100.
    """
    raise NotImplementedError("generator_loss: BCE of the fake logits against label 1, a batch mean")


def train_step(
    G: nn.Module,
    D: nn.Module,
    opt_G: torch.optim.Optimizer,
    opt_D: torch.optim.Optimizer,
    real: Tensor,
    z: Tensor,
) -> tuple[float, float]:
    """One training step: first update D, then update G.

    real: (N, 2) real samples; z: (N, z_dim) noise; opt_G/opt_D optimize G's/D's parameters.
    D update: discriminator_loss on D(real) and D(G(z)), with no gradient reaching G.
    G update: generator_loss on D(G(z)) with the same z, through the just-updated D.
    Each update zeroes its own gradients before its backward pass.
    Returns (d_loss, g_loss) as Python floats: the losses of the two updates.
    """
    raise NotImplementedError("train_step: one D update, then one G update; return (d_loss, g_loss) as floats")


def train_gan(G: nn.Module, D: nn.Module, sample_real: Callable[[int], Tensor], z_dim: int, steps: int) -> None:
    """Train G and D in place for `steps` steps on samples of a 2-D target distribution.

    G: z_dim -> 64 -> 64 -> 2 (ReLU); D: 2 -> 64 -> 64 -> 1 (LeakyReLU 0.2); both built by the grader.
    sample_real(n) returns a float64 tensor (n, 2) of real samples.
    Choose your own optimizers, learning rates and batch size; draw z with torch's global generator.
    Returns None: the grader samples the trained G itself.
    """
    raise NotImplementedError("train_gan: create optimizers and call train_step `steps` times")
