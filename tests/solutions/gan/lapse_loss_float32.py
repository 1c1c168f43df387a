"""Known lapse: discriminator_loss is computed in float32 (the logits cast with .float()); its math is right.
One lapse, one charge: only losses_conformance loses its points, for the dtype; the value, gradient and
stability tests compare at float32's precision and pass.
Expect: losses_conformance
"""

import torch
import torch.nn.functional as F


def discriminator_loss(logits_real, logits_fake):
    logits_real, logits_fake = logits_real.float(), logits_fake.float()  # float32: the lapse
    real_term = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake_term = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return real_term + fake_term


def generator_loss(logits_fake):
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


def train_step(G, D, opt_G, opt_D, real, z):
    opt_D.zero_grad()
    fake = G(z).detach()
    d_loss = discriminator_loss(D(real), D(fake))
    d_loss.backward()
    opt_D.step()

    opt_G.zero_grad()
    g_loss = generator_loss(D(G(z)))
    g_loss.backward()
    opt_G.step()
    return d_loss.item(), g_loss.item()


def train_gan(G, D, sample_real, z_dim, steps):
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    batch = 256
    for _ in range(steps):
        real = sample_real(batch)
        z = torch.randn(batch, z_dim, dtype=real.dtype)
        train_step(G, D, opt_G, opt_D, real, z)
