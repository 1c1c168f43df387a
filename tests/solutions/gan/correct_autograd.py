"""GAN losses from F.logsigmoid; gradients taken with torch.autograd.grad only for the network being updated."""

import torch
import torch.nn.functional as F


def discriminator_loss(logits_real, logits_fake):
    # log(1 - sigmoid(x)) = logsigmoid(-x).
    return -(F.logsigmoid(logits_real).mean() + F.logsigmoid(-logits_fake).mean())


def generator_loss(logits_fake):
    return -F.logsigmoid(logits_fake).mean()


def _update(loss, module, opt):
    params = [p for p in module.parameters() if p.requires_grad]
    # Only this module's gradients are computed: nothing reaches the other network.
    grads = torch.autograd.grad(loss, params)
    opt.zero_grad()
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()


def train_step(G, D, opt_G, opt_D, real, z):
    fake = G(z)
    d_loss = discriminator_loss(D(real), D(fake))
    _update(d_loss, D, opt_D)
    g_loss = generator_loss(D(G(z)))
    _update(g_loss, G, opt_G)
    return float(d_loss.detach()), float(g_loss.detach())


def train_gan(G, D, sample_real, z_dim, steps):
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(steps):
        real = sample_real(128)
        z = torch.randn(real.shape[0], z_dim, dtype=real.dtype, device=real.device)
        train_step(G, D, opt_G, opt_D, real, z)
