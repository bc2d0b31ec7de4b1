"""Training the label-free judge's encoder: its recipe sized by the data, and the loop.

What this module is: `SSLRecipe` (everything that shapes the training; stored in the judge's
JSON) and `ssl_recipe(n, channels, image_size)`, which sizes it by the data; `nt_xent` (SimCLR's
loss, Chen et al. 2020) and `fit_encoder`, the deterministic training loop (CPU; the caller's
global RNG untouched): two views of each image (`gan.eval.ssl_augment`) pulled together, the
batch's other views pushed apart.

What it is not: no augmentation (`gan.eval.ssl_augment`), no quality check or cache
(`gan.eval.ssl_judge`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from gan.eval.ssl_augment import ViewConfig, augment
from gan.nets.ssl_net import SSLArch, SSLNet

MIN_STEPS_PER_EPOCH = 8  # small sets need the steps more than the negatives
MAX_BATCH = 64  # more steps beat more negatives here (measured: gan.tools.ssl_study)
TARGET_STEPS = 1500  # optimiser steps a set gets when its epochs allow
# Cost grows with epochs × images, as a GAN's: 60 epochs cost less than the default recipe's 100
# epochs on the same images (CPU seconds, measured: python -m gan.tools.ssl_study quality); a
# big set stops at TARGET_STEPS, so its judge costs less still.
MIN_EPOCHS, MAX_EPOCHS = 20, 60


@dataclass(frozen=True)
class SSLRecipe:
    """How the encoder is trained (see `ssl_recipe` for the data-sized defaults)."""

    epochs: int
    batch_size: int
    width: int = 16
    feature_dim: int = 64
    lr: float = 2e-3
    temperature: float = 0.2
    views: ViewConfig = field(default_factory=ViewConfig)

    def arch(self, channels: int, image_size: int) -> SSLArch:
        return SSLArch(channels=channels, image_size=image_size, width=self.width,
                       feature_dim=self.feature_dim)


def ssl_recipe(n_train: int, channels: int, image_size: int,
               epochs: int | None = None) -> SSLRecipe:
    """The recipe for `n_train` images of `channels` × `image_size`²: a batch of at most
    `MAX_BATCH` that still gives `MIN_STEPS_PER_EPOCH` steps an epoch, and (unless `epochs` is
    given) the epochs that make about `TARGET_STEPS` steps, within [MIN_EPOCHS, MAX_EPOCHS]:
    a big set stops at the target steps, a small one at the epochs the budget allows. The
    encoder's width stays 16 for grey and colour (a wider one costs about twice per epoch,
    which the budget cannot pay); channels and size reach the net through its input layer and
    adaptive pool."""
    if n_train < 2:
        raise ValueError(f"the label-free judge needs at least 2 train images, got {n_train}")
    if channels not in (1, 3) or image_size < 8:
        raise ValueError(f"the label-free judge takes 1 or 3 channels of at least 8×8 pixels, "
                         f"got {channels} × {image_size}×{image_size}")
    batch = max(2, min(MAX_BATCH, n_train // MIN_STEPS_PER_EPOCH))
    steps_per_epoch = max(1, n_train // batch)
    if epochs is None:
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))
    if epochs < 1:
        raise ValueError(f"the label-free judge needs at least one epoch, got {epochs}")
    return SSLRecipe(epochs=epochs, batch_size=batch)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's loss: each of the 2B projections must pick its partner view among the other
    2B − 1; z1, z2 (B, P) → scalar."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, P)
    sim = (z @ z.T / temperature).fill_diagonal_(float("-inf"))  # (2B, 2B)
    n = len(z1)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # partner of each row
    return F.cross_entropy(sim, target)


def fit_encoder(x: Tensor, recipe: SSLRecipe, seed: int) -> SSLNet:
    """Train an `SSLNet` on images x (N, C, S, S) in [-1, 1]; deterministic for a seed (CPU),
    the global RNG left as it was. Returns the net in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = SSLNet(recipe.arch(int(x.shape[1]), int(x.shape[2])))
        # channels-last convolutions: 1.5× faster steps on CPU (measured), same maths
        net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
        b = min(recipe.batch_size, len(x))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=recipe.epochs * max(1, len(x) // b))
        net.train()
        for _ in range(recipe.epochs):
            for idx in torch.randperm(len(x), generator=gen).split(b):
                if len(idx) < b:  # equal batches: the loss's scale does not jump
                    continue
                loss = _step_loss(net, x[idx].float(), recipe, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return net.to(memory_format=torch.contiguous_format).eval()


def _step_loss(net: SSLNet, xb: Tensor, recipe: SSLRecipe, gen: torch.Generator) -> Tensor:
    v1, v2 = (augment(xb, gen, recipe.views).contiguous(memory_format=torch.channels_last)
              for _ in range(2))  # (B, C, S, S) each
    return nt_xent(net(v1), net(v2), recipe.temperature)
