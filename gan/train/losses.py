"""GAN losses on discriminator logits, each with the paper it comes from.

What this module is: pure functions of logits (and, for WGAN-GP, of the critic's output on
interpolates) returning scalar losses to MINIMISE; `d_loss` / `g_loss` pick one by the
`TrainConfig.loss` name. Every loss takes raw logits: sigmoids live inside the numerically
stable `binary_cross_entropy_with_logits` / softplus forms, never in the models.

What it is not: no optimiser steps, no models, no logging (see `gan.train.steps`).

Conventions (pytorch/examples dcgan): D's loss is the SUM of its real and fake terms, each a
mean over the batch; G's loss is a mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("bce", "ns", "hinge", "wgan-gp")


# --- bce: Goodfellow et al. 2014, "Generative Adversarial Nets", with one-sided label
# smoothing from Salimans et al. 2016, "Improved Techniques for Training GANs" §3.4 — the seed.
def bce_d(real: Tensor, fake: Tensor, real_label: float = 0.9) -> Tensor:
    """-[t·log σ(D(x)) + (1-t)·log(1-σ(D(x)))] - log(1-σ(D(G(z)))), t = real_label (0.9)."""
    return (
        F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_label))
        + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    )


def bce_g(fake: Tensor) -> Tensor:
    """-log σ(D(G(z))): the generator's target is 1 (smoothing is one-sided: D only)."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


# --- ns: the non-saturating GAN, Goodfellow et al. 2014 §3 (softplus(-t) = -log σ(t)).
def ns_d(real: Tensor, fake: Tensor) -> Tensor:
    """-log σ(D(x)) - log(1 - σ(D(G(z))))."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def ns_g(fake: Tensor) -> Tensor:
    """-log σ(D(G(z))): maximise log D(G(z)) instead of minimising log(1 - D(G(z)))."""
    return F.softplus(-fake).mean()


# --- hinge: Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018, "Spectral Normalization".
def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


# --- wgan-gp: Gulrajani et al. 2017, "Improved Training of Wasserstein GANs".
def wgan_d(real: Tensor, fake: Tensor) -> Tensor:
    """E[D(G(z))] - E[D(x)] (the gradient penalty is added by the caller, weighted)."""
    return fake.mean() - real.mean()


def wgan_g(fake: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


def gradient_penalty(critic_out: Tensor, x_hat: Tensor) -> Tensor:
    """E[(‖∇_x̂ D(x̂)‖₂ - 1)²] for interpolates x̂ (B, C, H, W) and their critic outputs (B,).

    `x_hat` must require grad and `critic_out` must come from it; the graph is kept
    (create_graph) so the penalty itself is differentiated w.r.t. D's weights.
    """
    (grad,) = torch.autograd.grad(critic_out.sum(), x_hat, create_graph=True)
    norms = grad.float().flatten(1).norm(2, dim=1)  # (B,)
    return ((norms - 1.0) ** 2).mean()


def d_loss(name: str, real: Tensor, fake: Tensor, *, real_label: float = 0.9) -> Tensor:
    """D's loss (without any gradient penalty) for logits on real (B,) and fake (B,) images."""
    if name == "bce":
        return bce_d(real, fake, real_label)
    if name == "ns":
        return ns_d(real, fake)
    if name == "hinge":
        return hinge_d(real, fake)
    if name == "wgan-gp":
        return wgan_d(real, fake)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def g_loss(name: str, fake: Tensor) -> Tensor:
    """G's loss for D's logits on generated images (B,)."""
    if name == "bce":
        return bce_g(fake)
    if name == "ns":
        return ns_g(fake)
    if name == "hinge":
        return hinge_g(fake)
    if name == "wgan-gp":
        return wgan_g(fake)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
