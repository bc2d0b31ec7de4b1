"""Disturbances of real images with a strength knob: the probes that check a judge's metric.

What this module is: Heusel et al. 2017 (the FID paper, §4) validate a metric by disturbing
real images with a growing strength and checking that the score worsens monotonically. Here:
  - per-image disturbances `(images (N, C, H, W) in [-1, 1], strength, gen) → same shape`:
    `blur` (Gaussian, σ in pixels; scipy.ndimage), `noise` (additive Gaussian, std in the
    [-1, 1] pixel scale), `colour_cast` (a per-channel offset: brighter for grey, warmer —
    red up, blue down — for RGB), `swirl` (the FID paper's swirl, angle at the centre in
    radians);
  - set disturbances, which change *which* images a "generator" returns: `drop_classes`
    (mode dropping: only some of the classes; its ladder `kept_classes`), `collapse` (n
    images from a pool of n^(1 − strength) distinct ones) and `with_copies` (a share of the
    samples are training images: the copy statistics must see it, FID need not);
  - `IMAGE_DISTURBANCES`, `COLLAPSE_STRENGTHS`, `COPY_SHARES`: the strength ladders the tests
    and the study use.

Why a colour *cast* and not a hue rotation or channel mix: the colour sets here (painted
digits, the bundled shapes) draw colours uniformly at random, and a hue rotation or channel
permutation of a uniform colour distribution is nearly the same distribution — a correct
judge would rightly not move. An offset moves every image's colours the same way.

What it is not: no metric, no judge, no sweeping over strengths (`gan.eval.validation`).
Everything is seeded by the `torch.Generator` passed in; nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

ImageDisturbance = Callable[[Tensor, float, torch.Generator], Tensor]
SWIRL_RADIUS = 0.5  # the swirl's fall-off, in units of the half image side


def _check(x: Tensor, strength: float, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: images must be (N, C, H, W), got {tuple(x.shape)}")
    if not strength >= 0:
        raise ValueError(f"{name}: strength must be ≥ 0, got {strength}")


def blur(x: Tensor, sigma: float, gen: torch.Generator | None = None) -> Tensor:
    """Gaussian blur of each image with standard deviation `sigma` pixels (0 = unchanged);
    borders reflected. (N, C, H, W) → same."""
    _check(x, sigma, "blur")
    if sigma == 0:
        return x.clone()
    out = ndimage.gaussian_filter(x.detach().float().numpy(), sigma=(0, 0, sigma, sigma),
                                  mode="reflect")  # (N, C, H, W): no mixing across N or C
    return torch.from_numpy(np.ascontiguousarray(out))


def noise(x: Tensor, std: float, gen: torch.Generator) -> Tensor:
    """x + N(0, std²) per pixel, clamped to [-1, 1]. (N, C, H, W) → same."""
    _check(x, std, "noise")
    return (x + std * torch.randn(x.shape, generator=gen)).clamp(-1.0, 1.0)


def colour_cast(x: Tensor, amount: float, gen: torch.Generator | None = None) -> Tensor:
    """Shift every pixel by a fixed per-channel offset, clamped to [-1, 1]: grey (C=1) gets
    +amount (brighter); RGB gets (+amount, 0, −amount) (a warm cast). (N, C, H, W) → same."""
    _check(x, amount, "colour_cast")
    c = x.shape[1]
    if c == 1:
        offset = torch.tensor([amount])
    elif c == 3:
        offset = torch.tensor([amount, 0.0, -amount])
    else:
        raise ValueError(f"colour_cast: images must have 1 or 3 channels, got {c}")
    return (x + offset.view(1, c, 1, 1)).clamp(-1.0, 1.0)


def swirl(x: Tensor, angle: float, gen: torch.Generator | None = None) -> Tensor:
    """The FID paper's swirl: each output pixel at polar (r, θ) about the centre is read from
    (r, θ + angle·exp(−r / SWIRL_RADIUS)), r in units of the half side; bilinear, borders
    replicated. Colours are kept, shapes are twisted. (N, C, H, W) → same.

    Hand-written on `grid_sample` (scikit-image's `swirl` is not installed here and works one
    image at a time).
    """
    _check(x, angle, "swirl")
    n, _, h, w = x.shape
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h)  # pixel centres, align_corners=False
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
    r = torch.sqrt(xx**2 + yy**2)
    theta = torch.atan2(yy, xx) + angle * torch.exp(-r / SWIRL_RADIUS)
    grid = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)  # (H, W, 2)
    grid = grid.unsqueeze(0).expand(n, h, w, 2)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


# --------------------------------------------------------------------------- set disturbances


def _draw(n_pool: int, n: int, gen: torch.Generator) -> Tensor:
    """n indices into a pool of n_pool: without replacement while n ≤ n_pool, else every
    pool index ⌊n / n_pool⌋ or ⌈n / n_pool⌉ times (as even as possible), shuffled. (n,)"""
    if n_pool < 1:
        raise ValueError("cannot draw from an empty pool")
    reps = -(-n // n_pool)
    idx = torch.cat([torch.randperm(n_pool, generator=gen) for _ in range(reps)])[:n]
    return idx[torch.randperm(n, generator=gen)]


def drop_classes(x: Tensor, y: Tensor, keep: int, n: int, gen: torch.Generator) -> Tensor:
    """Mode dropping: n images from `keep` of the classes in `y` (chosen at random), as evenly
    over them as their images allow. x (N, C, H, W), y (N,) → (n, C, H, W)."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"drop_classes: {len(x)} images and {len(y)} labels")
    classes = torch.unique(y)
    if not 1 <= keep <= len(classes):
        raise ValueError(f"drop_classes: keep must be 1..{len(classes)} (the classes in y), "
                         f"got {keep}")
    kept = classes[torch.randperm(len(classes), generator=gen)[:keep]]
    pool = torch.nonzero(torch.isin(y, kept)).flatten()  # (P,) indices of kept-class images
    return x[pool[_draw(len(pool), n, gen)]]


def kept_classes(num_classes: int, shares: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4, 0.2)
                 ) -> tuple[int, ...]:
    """The mode-dropping ladder for K classes: round(K·share) kept, at least 1, each count
    once, decreasing (K=10: 10, 8, 6, 4, 2; K=4: 4, 3, 2, 1)."""
    if num_classes < 2:
        raise ValueError(f"mode dropping needs at least 2 classes, got {num_classes}")
    return tuple(sorted({max(1, round(num_classes * s)) for s in shares}, reverse=True))


def collapse_pool(n: int, strength: float) -> int:
    """Distinct images in a collapsed set of n: round(n^(1 − strength)), at least 1
    (strength 0: n distinct; 0.5: √n; 1: one image repeated)."""
    if not 0 <= strength <= 1:
        raise ValueError(f"collapse: strength must be in [0, 1], got {strength}")
    return max(1, round(n ** (1.0 - strength)))


def collapse(x: Tensor, strength: float, n: int, gen: torch.Generator) -> Tensor:
    """Mode collapse: n images that are `collapse_pool(n, strength)` distinct images of `x`,
    each repeated equally often. x (N, C, H, W) → (n, C, H, W); N ≥ n."""
    if len(x) < n:
        raise ValueError(f"collapse: needs at least n={n} images, got {len(x)}")
    pool = torch.randperm(len(x), generator=gen)[: collapse_pool(n, strength)]
    return x[pool[_draw(len(pool), n, gen)]]


def with_copies(fresh: Tensor, train: Tensor, share: float, gen: torch.Generator) -> Tensor:
    """Copying: `fresh` (n, C, H, W) with round(share·n) of its images (chosen at random)
    replaced by distinct training images from `train` (N, C, H, W). share 1 = all copies."""
    if not 0 <= share <= 1:
        raise ValueError(f"with_copies: share must be in [0, 1], got {share}")
    n = len(fresh)
    m = round(share * n)
    if m > len(train):
        raise ValueError(f"with_copies: {m} copies asked, only {len(train)} training images")
    out = fresh.clone()
    slots = torch.randperm(n, generator=gen)[:m]
    out[slots] = train[torch.randperm(len(train), generator=gen)[:m]]
    return out


# Strength ladders, increasing: each step must worsen a good judge's FID beyond its noise at
# the sizes the tests use (≈ 300 images). The first strength leaves the images unchanged.
IMAGE_DISTURBANCES: dict[str, tuple[ImageDisturbance, tuple[float, ...]]] = {
    "blur": (blur, (0.0, 0.6, 1.0, 1.5, 2.5)),  # σ, pixels
    "noise": (noise, (0.0, 0.1, 0.2, 0.35, 0.6)),  # std, [-1, 1] pixel scale
    "colour_cast": (colour_cast, (0.0, 0.1, 0.2, 0.35, 0.6)),  # offset, [-1, 1] scale
    "swirl": (swirl, (0.0, 0.75, 1.5, 2.25, 3.0)),  # radians at the centre (≈ 3: no glyph left)
}
COLLAPSE_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)  # n^(1 − s) distinct images
COPY_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # share of samples that are training images
