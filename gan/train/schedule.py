"""Per-step hyper-parameter schedules: R3GAN's cosine decay of lr, β2 and γ.

What this module is: `Knobs` (lr of G and D, β2 of G and D, the R1/R2 γ at one step),
`knobs_at(cfg, images, horizon_images)`, a pure function of the images trained so far, so a
resumed run (whose step count is in its checkpoint) continues the schedule exactly, and
`apply_knobs`, which writes them into the Adam optimisers' param groups.

The "r3gan-cosine" schedule is the official R3GAN code's `cosine_decay_with_warmup` (no
warm-up, no hold; github.com/brownvc/R3GAN, training/training_loop.py and train.py's presets):
v(t) = v0 + (1 - c(t))·(v1 - v0), c(t) = (1 + cos(π·t))/2, t = images / horizon, from
TrainConfig's lr_g, lr_d, beta2(_d) and r1r2_gamma (v0) to lr/4, β2 0.99 and γ/10 (v1): the
ratios of every preset there (lr 2e-4 → 5e-5, γ e.g. 0.05 → 0.005, β2 0.9 → 0.99). Two
deliberate differences: t is clamped to 1 (the official formula, unclamped, would swing back
up past its horizon), and the horizon is `schedule_kimg` or else the run's planned images
(epochs × train images) instead of the official 20 M images, which CPU runs never reach.
Not scheduled here (the official code ramps them too): the EMA half-life (the project's EMA
has its own warm-up, `gan.train.steps.ema_update`) and the augmentation probability.

What it is not: no optimiser construction (`gan.train.state`), no loop (`gan.train.loop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gan.core.config import TrainConfig

FINAL_LR_RATIO = 0.25  # 2e-4 → 5e-5
FINAL_GAMMA_RATIO = 0.1  # e.g. 0.05 → 0.005 (CIFAR-10), 2 → 0.2 (FFHQ-64)
FINAL_BETA2 = 0.99  # 0.9 → 0.99


@dataclass(frozen=True)
class Knobs:
    """The scheduled values at one step."""

    lr_g: float
    lr_d: float
    beta2_g: float
    beta2_d: float
    r1r2_gamma: float


def horizon_images(cfg: TrainConfig, images_per_epoch: int | None) -> float | None:
    """Images over which the schedule runs: `schedule_kimg` · 1000, else epochs × the images
    of one epoch; None for the constant schedule. ValueError when neither is known."""
    if cfg.schedule == "constant":
        return None
    if cfg.schedule_kimg is not None:
        return cfg.schedule_kimg * 1000.0
    if not images_per_epoch:
        raise ValueError(f"train.schedule {cfg.schedule!r} needs its horizon: set "
                         "train.schedule_kimg (thousands of images), since this run's planned "
                         "images (epochs × train images) are not known here")
    return float(cfg.epochs * images_per_epoch)


def cosine(v0: float, v1: float, t: float) -> float:
    """v0 at t = 0 to v1 at t ≥ 1 along half a cosine (t clamped to [0, 1])."""
    t = min(max(t, 0.0), 1.0)
    return v0 + (1.0 - 0.5 * (1.0 + math.cos(math.pi * t))) * (v1 - v0)


def knobs_at(cfg: TrainConfig, images: float, horizon: float | None) -> Knobs:
    """The knobs after `images` trained images (global: steps × batch_size)."""
    b2g, b2d = cfg.betas_g[1], cfg.betas_d[1]
    if cfg.schedule == "constant" or horizon is None:
        return Knobs(cfg.lr_g, cfg.lr_d, b2g, b2d, cfg.r1r2_gamma)
    t = images / horizon
    return Knobs(lr_g=cosine(cfg.lr_g, cfg.lr_g * FINAL_LR_RATIO, t),
                 lr_d=cosine(cfg.lr_d, cfg.lr_d * FINAL_LR_RATIO, t),
                 beta2_g=cosine(b2g, FINAL_BETA2, t), beta2_d=cosine(b2d, FINAL_BETA2, t),
                 r1r2_gamma=cosine(cfg.r1r2_gamma, cfg.r1r2_gamma * FINAL_GAMMA_RATIO, t))


def apply_knobs(knobs: Knobs, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer
                ) -> None:
    """Write lr and β2 into every param group of G's and D's Adam (β1 unchanged)."""
    for opt, lr, beta2 in ((opt_g, knobs.lr_g, knobs.beta2_g), (opt_d, knobs.lr_d, knobs.beta2_d)):
        for group in opt.param_groups:
            group["lr"] = lr
            group["betas"] = (group["betas"][0], beta2)
