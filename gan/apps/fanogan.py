"""f-AnoGAN: a fast encoder trained after the GAN, so scoring needs no latent search.

What this module is (Schlegl et al. 2019, "f-AnoGAN: Fast unsupervised anomaly detection with
generative adversarial networks", the izi_f variant):
  * `Encoder` (in `gan.nets.encoder`): x (N, C, H, W) → z (N, latent_dim), a small DCGAN-style
    conv net. No tanh on the output: our latents are N(0, 1), not the paper's U(−1, 1).
  * `train_encoder(G, D, x, y)`: G and D frozen, E trained on (normal) training images to
    minimise the izi_f loss  (1/n)·‖x − G(E(x))‖² + κ·(1/n_f)·‖f(x) − f(G(E(x)))‖²,
    f = `D.features` (the discriminator's penultimate layer), κ = 1 as in the paper.
    A conditional G is fed the image's own label (an encoder per class is not needed).
  * `fanogan_scores(G, D, E, x, labels)`: the same two terms per image as the anomaly score
    (one forward pass per image: no search).

What it is not: no I/O, no CLI (the evaluation in `gan.apps.studies.anomaly_eval` uses it as a
fourth column next to AnoGAN); the encoder is an evaluation artefact, not logged to the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from gan.apps.latent_search import frozen
from gan.core.config import Frozen
from gan.nets.encoder import Encoder
from gan.nets.models import Discriminator, Generator

KAPPA = 1.0  # Schlegl et al. 2019, eq. 4: weight of the feature residual


class EncoderConfig(Frozen):
    """Knobs of the izi_f encoder training."""

    epochs: int = Field(40, ge=1, le=1000, description="Passes over the training images.")
    batch_size: int = Field(64, ge=1, le=4096, description="Images per step.")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate.")
    base_channels: int = Field(32, ge=4, le=512, description="Width of the first conv.")
    kappa: float = Field(KAPPA, ge=0.0, description="Weight of the feature residual.")
    seed: int = Field(0, ge=0, description="Seed of the init and the shuffling.")


def izi_f_terms(G: Generator, D: Discriminator, E: Encoder, x: Tensor, y: Tensor | None
                ) -> tuple[Tensor, Tensor]:
    """(pixel MSE (B,), feature MSE (B,)) of x against G(E(x), y): the paper's A_R and A_D."""
    gx = G(E(x), y)  # (B, C, H, W)
    pixel = (x - gx).square().flatten(1).mean(1)
    feature = (D.features(x) - D.features(gx)).square().mean(1)  # (B,)
    return pixel, feature


def train_encoder(G: Generator, D: Discriminator, x: Tensor, y: Tensor | None = None,
                  cfg: EncoderConfig | None = None,
                  on_epoch: Callable[[int, float], None] | None = None
                  ) -> tuple[Encoder, list[float]]:
    """izi_f: E trained with G and D frozen; returns (E in eval mode, mean loss per epoch)."""
    cfg = cfg or EncoderConfig()
    if len(x) == 0:
        raise ValueError("no images to train the encoder on (N = 0)")
    if G.conditional and (y is None or y.shape != (len(x),)):
        raise ValueError(f"a conditional generator needs labels y of shape ({len(x)},)")
    dev = next(G.parameters()).device
    yy = y.long() if G.conditional and y is not None else None
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]), frozen(G, D):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        E = Encoder(image_shape=G.image_shape, latent_dim=G.latent_dim,
                    base_channels=cfg.base_channels).to(dev).train()
        opt = torch.optim.Adam(E.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        for epoch in range(cfg.epochs):
            total, seen = 0.0, 0
            for idx in torch.randperm(len(x), generator=gen).split(cfg.batch_size):
                xb = x[idx].to(dev)
                yb = None if yy is None else yy[idx].to(dev)
                pixel, feature = izi_f_terms(G, D, E, xb, yb)
                loss = (pixel + cfg.kappa * feature).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
            losses.append(total / seen)
            if on_epoch is not None:
                on_epoch(epoch + 1, losses[-1])
    return E.eval(), losses


@dataclass(frozen=True, eq=False)
class FAnoGANScores:
    score: np.ndarray  # (N,) pixel + κ·feature: higher = more anomalous
    pixel: np.ndarray  # (N,) mean (x − G(E(x)))²
    feature: np.ndarray  # (N,) mean (f(x) − f(G(E(x))))²


@torch.no_grad()
def fanogan_scores(G: Generator, D: Discriminator, E: Encoder, x: Tensor, *,
                   labels: Tensor | None = None, kappa: float = KAPPA, batch: int = 512
                   ) -> FAnoGANScores:
    """f-AnoGAN anomaly scores of x (N, C, H, W) in [-1, 1]; `labels` for conditional G."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(G.image_shape):
        raise ValueError(f"images have shape {tuple(x.shape)}, the generator makes "
                         f"(N, {', '.join(map(str, G.image_shape))})")
    if G.conditional and (labels is None or labels.shape != (len(x),)):
        raise ValueError(f"a conditional generator needs labels of shape ({len(x)},)")
    dev = next(G.parameters()).device
    parts = []
    with frozen(G, D, E):
        for i in range(0, len(x), batch):
            y = None if not G.conditional or labels is None else labels[i:i + batch].to(dev)
            parts.append(torch.stack(izi_f_terms(G, D, E, x[i:i + batch].to(dev), y), 1).cpu())
    pf = torch.cat(parts).double().numpy()  # (N, 2)
    return FAnoGANScores(score=pf[:, 0] + kappa * pf[:, 1], pixel=pf[:, 0], feature=pf[:, 1])

