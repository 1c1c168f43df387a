"""GAN losses written out as a stable softplus; the fake batch made under torch.no_grad(); module zero_grad."""

import torch


def softplus(x):
    # log(1 + exp(x)) = max(x, 0) + log(1 + exp(-|x|)): exp never overflows.
    return torch.clamp(x, min=0) + torch.log1p(torch.exp(-torch.abs(x)))


def discriminator_loss(logits_real, logits_fake):
    # -log sigmoid(x) = softplus(-x) for label 1; -log(1 - sigmoid(x)) = softplus(x) for label 0.
    return softplus(-logits_real).mean() + softplus(logits_fake).mean()


def generator_loss(logits_fake):
    return softplus(-logits_fake).mean()


def train_step(G, D, opt_G, opt_D, real, z):
    with torch.no_grad():
        fake = G(z)
    D.zero_grad(set_to_none=True)
    d_loss = discriminator_loss(D(real), D(fake))
    d_loss.backward()
    opt_D.step()

    G.zero_grad(set_to_none=True)
    g_loss = generator_loss(D(G(z)))
    g_loss.backward()
    opt_G.step()
    return float(d_loss.detach()), float(g_loss.detach())


def train_gan(G, D, sample_real, z_dim, steps):
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.99))
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.99))
    for step in range(steps):
        real = sample_real(512)
        z = torch.randn(512, z_dim)
        train_step(G, D, opt_G, opt_D, real, z)
