"""The label-free judge's views: SimCLR's augmentations, hand-written on batched tensors.

What this module is: `ViewConfig` (the augmentation settings, stored in the judge's JSON) and
`augment(x, gen, cfg)`, one random view of each image of a batch (B, C, H, W) in [-1, 1], drawn
from a `torch.Generator` only (deterministic per seed, the global RNG untouched). The recipe is
Chen et al. 2020 (SimCLR, appendix A), in their order:
  1. random resized crop: a crop of `crop_scale` of the area, aspect ratio 3/4..4/3, at a random
     place, resized back to H × W (bilinear);
  2. horizontal flip with probability `flip` — 0 by default: digits and letters are not
     mirror-invariant (a flipped 2 is no digit), so flips would teach the encoder to ignore a
     difference the data's classes depend on; set it for data whose classes survive a mirror;
  3. colour jitter with probability `jitter_p`: brightness, contrast, saturation and hue factors
     of strength `jitter` (SimCLR's s: 0.8·s, 0.8·s, 0.8·s, 0.2·s), applied in a random order —
     the augmentation SimCLR cannot do without: without it two crops of an image are matched by
     their colour histogram alone;
  4. random greyscale with probability `grey_p`;
  5. Gaussian blur with probability `blur_p`, σ uniform in `blur_sigma` (pixels), a 5-tap kernel.
Grey images (C = 1) get brightness and contrast only (saturation, hue and greyscale are no-ops).

Why by hand: torchvision does not import beside this project's torch, and its transforms draw
from the global RNG one image at a time; these are batched and seeded by `gen`.

What it is not: no training or quality check (`gan.eval.ssl_judge`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's "L" and torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class ViewConfig:
    """How one augmented view is drawn (see the module docstring)."""

    crop_scale: tuple[float, float] = (0.5, 1.0)
    flip: float = 0.0
    jitter: float = 1.0
    jitter_p: float = 0.8
    grey_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.2)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo  # (n,)


def _chance(n: int, p: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen) < p  # (n,) bool


def resized_crop(x: Tensor, gen: torch.Generator, scale: tuple[float, float],
                 flip: float = 0.0) -> Tensor:
    """Random crop of area share `scale`, aspect 3/4..4/3, resized back (and mirrored with
    probability `flip`); (B, C, H, W) → same."""
    b = len(x)
    area = _uniform(b, *scale, gen)  # (B,)
    log_r = _uniform(b, -0.28768, 0.28768, gen)  # log(3/4)..log(4/3)
    w = (area * log_r.exp()).sqrt()  # (B,) crop width share
    h = (area / log_r.exp()).sqrt()
    # A side longer than the image is cut to it and the other side keeps the area.
    w, h = torch.where(w > 1, 1.0, torch.where(h > 1, area, w)), \
        torch.where(h > 1, 1.0, torch.where(w > 1, area, h))
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)  # centre, crop kept inside
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    mirror = torch.where(_chance(b, flip, gen), -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * mirror, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grey(x: Tensor) -> Tensor:
    """(B, 3, H, W) → (B, 1, H, W) luma; grey input returned as is."""
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] → HSV, hue in [0, 1)."""
    mx, argmx = x.max(1)  # (B, H, W)
    mn = x.min(1).values
    delta = mx - mn
    safe = delta.clamp(min=1e-8)
    r, g, b = x.unbind(1)
    hue = torch.stack([(g - b) / safe, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe], 1)
    hue = hue.gather(1, argmx.unsqueeze(1)).squeeze(1)  # (B, H, W), in sixths
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    sat = torch.where(mx > 0, delta / mx.clamp(min=1e-8), torch.zeros_like(mx))
    return torch.stack([hue, sat, mx], 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """(B, 3, H, W) HSV (hue in [0, 1)) → RGB in [0, 1]."""
    h, s, v = x.unbind(1)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], 1)  # (B, 3, H, W)
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * ramp


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor·x + (1 − factor)·other, factor (B,), clamped to [0, 1]."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0, 1)


def colour_jitter(x01: Tensor, gen: torch.Generator, strength: float) -> Tensor:
    """Brightness, contrast, saturation, hue (SimCLR's 0.8s, 0.8s, 0.8s, 0.2s) in a random
    order (one order a batch, factors per image); (B, C, H, W) in [0, 1] → same."""
    b, c = x01.shape[:2]
    amount = 0.8 * strength
    factors = {k: _uniform(b, max(0.0, 1 - amount), 1 + amount, gen)
               for k in ("brightness", "contrast", "saturation")}
    shift = _uniform(b, -0.2 * strength, 0.2 * strength, gen)  # (B,) hue turns
    for op in torch.randperm(4, generator=gen).tolist():
        if op == 0:
            x01 = _blend(x01, torch.zeros_like(x01), factors["brightness"])
        elif op == 1:
            mean = grey(x01).mean((1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
            x01 = _blend(x01, mean.expand_as(x01), factors["contrast"])
        elif op == 2 and c == 3:
            x01 = _blend(x01, grey(x01).expand_as(x01), factors["saturation"])
        elif op == 3 and c == 3:
            hsv = rgb_to_hsv(x01)
            hue = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
            x01 = hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], 1))
    return x01


def gaussian_blur(x: Tensor, sigma: Tensor, taps: int = 5) -> Tensor:
    """Separable Gaussian blur, σ (B,) per image, `taps`-wide kernel, reflected borders;
    (B, C, H, W) → same."""
    b, c, h, w = x.shape
    offs = torch.arange(taps, dtype=x.dtype) - taps // 2  # (T,)
    k = torch.exp(-offs.square() / (2 * sigma.view(-1, 1).square()))  # (B, T)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B·C, T): one kernel a plane
    planes = F.pad(x.reshape(1, b * c, h, w), [taps // 2] * 4, mode="reflect")
    planes = F.conv2d(planes, k.view(b * c, 1, 1, taps), groups=b * c)  # along W
    planes = F.conv2d(planes, k.view(b * c, 1, taps, 1), groups=b * c)  # along H
    return planes.view(b, c, h, w)


def augment(x: Tensor, gen: torch.Generator, cfg: ViewConfig = ViewConfig()) -> Tensor:
    """One random view of each image: (B, C, H, W) in [-1, 1] → same shape, in [-1, 1]."""
    b, c = x.shape[:2]
    out = resized_crop(x.float(), gen, cfg.crop_scale, cfg.flip)
    out = (out + 1) / 2  # [0, 1] for the colour operations
    if cfg.jitter > 0:
        jittered = colour_jitter(out, gen, cfg.jitter)
        out = torch.where(_chance(b, cfg.jitter_p, gen).view(-1, 1, 1, 1), jittered, out)
    if c == 3 and cfg.grey_p > 0:
        out = torch.where(_chance(b, cfg.grey_p, gen).view(-1, 1, 1, 1),
                          grey(out).expand_as(out), out)
    if cfg.blur_p > 0:
        sigma = _uniform(b, *cfg.blur_sigma, gen)
        blurred = gaussian_blur(out, sigma)
        out = torch.where(_chance(b, cfg.blur_p, gen).view(-1, 1, 1, 1), blurred, out)
    return (out * 2 - 1).clamp(-1.0, 1.0)
