"""GAN losses on discriminator logits, each with the paper it comes from.

What this module is: pure functions of logits (and, for WGAN-GP and R1/R2, of D's output and
its inputs) returning scalar losses to MINIMISE; `d_loss` / `g_loss` pick one by the
`TrainConfig.loss` name (rpgan's G loss also needs D's logits on a real batch). Every loss
takes raw logits: sigmoids live inside the numerically stable
`binary_cross_entropy_with_logits` / softplus forms, never in the models.

What it is not: no optimiser steps, no models, no logging (see `gan.train.steps`).

Conventions (pytorch/examples dcgan): D's loss is the SUM of its real and fake terms, each a
mean over the batch; G's loss is a mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("bce", "ns", "hinge", "wgan-gp", "rpgan")


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


# --- rpgan: relativistic pairing, Jolicoeur-Martineau 2019, "The relativistic discriminator";
# with R1 + R2 it is R3GAN's loss (Huang et al. 2024, eq. 3 and §2.2; official Trainer.py).
def rpgan_d(real: Tensor, fake: Tensor) -> Tensor:
    """E[softplus(-(D(x) - D(G(z))))] = -E[log σ(D(x) - D(G(z)))], real/fake paired by index."""
    return F.softplus(fake - real).mean()


def rpgan_g(fake: Tensor, real: Tensor) -> Tensor:
    """E[softplus(-(D(G(z)) - D(x)))]: G wants each fake to look more real than its pair."""
    return F.softplus(real - fake).mean()


def r1r2_penalty(logits: Tensor, real_in: Tensor, fake_in: Tensor) -> tuple[Tensor, Tensor]:
    """(R1, R2) = (E‖∇_x D(x)‖², E‖∇_x̃ D(x̃)‖²), x̃ = G(z): zero-centred penalties (Mescheder
    et al. 2018; R3GAN uses both). `logits` (2B,) are D's outputs on cat(real_in, fake_in)
    (or on their augmented images), both (B, C, H, W) and requiring grad; the squared norm
    sums over C, H, W and the mean is over the batch. The graph is kept (create_graph)."""
    grads = torch.autograd.grad(logits.sum(), (real_in, fake_in), create_graph=True)
    r1, r2 = (g.float().square().flatten(1).sum(1).mean() for g in grads)
    return r1, r2


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
    if name == "rpgan":
        return rpgan_d(real, fake)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def g_loss(name: str, fake: Tensor, real: Tensor | None = None) -> Tensor:
    """G's loss for D's logits on generated images (B,) (and, for rpgan, on real ones (B,))."""
    if name == "rpgan":
        if real is None:
            raise ValueError("loss rpgan: G's loss needs D's logits on a real batch")
        return rpgan_g(fake, real)
    if name == "bce":
        return bce_g(fake)
    if name == "ns":
        return ns_g(fake)
    if name == "hinge":
        return hinge_g(fake)
    if name == "wgan-gp":
        return wgan_g(fake)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
