"""Known-wrong: the losses take log(sigmoid(x)) and log(1 - sigmoid(x)) directly: infinite for logits of magnitude 100.
Expect: losses_stability
"""

import torch
import torch.nn.functional as F


def discriminator_loss(logits_real, logits_fake):
    real_term = -torch.log(torch.sigmoid(logits_real)).mean()
    fake_term = -torch.log(1 - torch.sigmoid(logits_fake)).mean()
    return real_term + fake_term


def generator_loss(logits_fake):
    return -torch.log(torch.sigmoid(logits_fake)).mean()


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
