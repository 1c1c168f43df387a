"""GAN losses from an nn.BCEWithLogitsLoss module; G is run once per step and its output reused by both updates."""

import torch
from torch import nn

_bce = nn.BCEWithLogitsLoss()


def discriminator_loss(logits_real, logits_fake):
    return _bce(logits_real, torch.ones_like(logits_real)) + _bce(logits_fake, torch.zeros_like(logits_fake))


def generator_loss(logits_fake):
    return _bce(logits_fake, torch.ones_like(logits_fake))


def train_step(G, D, opt_G, opt_D, real, z):
    fake = G(z)

    # D update on a detached copy: the graph through G is kept for the G update below.
    opt_D.zero_grad(set_to_none=True)
    d_loss = discriminator_loss(D(real), D(fake.detach()))
    d_loss.backward()
    opt_D.step()

    # G's parameters have not changed since fake was computed, so reusing it is exact.
    opt_G.zero_grad(set_to_none=True)
    g_loss = generator_loss(D(fake))
    g_loss.backward()
    opt_G.step()
    return d_loss.item(), g_loss.item()


def train_gan(G, D, sample_real, z_dim, steps):
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    G.train()
    D.train()
    for _ in range(steps):
        real = sample_real(128)
        train_step(G, D, opt_G, opt_D, real, torch.randn(128, z_dim))
