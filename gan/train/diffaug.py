"""Differentiable augmentation for D (DiffAugment, Zhao et al. 2020), for small datasets.

What this module is: `diff_augment(x, policy, rng)`, the paper's three transforms applied to a
batch of images in [-1, 1], each sample drawn independently, every op differentiable w.r.t. x
so G's gradient passes through:
  color        brightness + U(-0.5, 0.5); saturation × U(0, 2) around the pixel's channel
               mean; contrast × U(0.5, 1.5) around the image mean
  translation  shift by up to 1/8 of H and W (integer pixels), zero (mid-grey) padding
  cutout       one square of side H/2 (centre anywhere in the image) set to 0
as in the authors' DiffAugment_pytorch.py (same order, ratios and value conventions). The same
policy is applied to real and fake images before D, in both the D and the G step
(`gan.train.steps`); `parse_policy` checks a `train.diffaugment` string.

Hand-written (about 60 lines) rather than taken from kornia or the authors' repository: neither
is installed here, and the transforms are the paper's short definitions; seeded through `rng`
(the trainer's stream) so runs stay reproducible.

What it is not: no data augmentation of the training set (nothing is stored augmented), no
ADA (adaptive probability).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """"color,translation,cutout" → the ops in that order; '' → (); unknown names raise."""
    ops = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in ops if p not in POLICIES]
    if bad:
        raise ValueError(f"train.diffaugment: unknown {bad}; use a comma list of "
                         f"{', '.join(POLICIES)} (or '' for none)")
    return ops


def _rand(n: int, x: Tensor, rng: torch.Generator | None) -> Tensor:
    """(n, 1, 1, 1) uniform [0, 1) drawn from `rng` (on its device), on x's device/dtype."""
    dev = rng.device if rng is not None else x.device
    return torch.rand(n, 1, 1, 1, generator=rng, device=dev).to(x.device, x.dtype)


def color(x: Tensor, rng: torch.Generator | None = None) -> Tensor:
    """(B, C, H, W) → same: brightness, saturation, contrast, each drawn per sample."""
    b = x.shape[0]
    x = x + (_rand(b, x, rng) - 0.5)
    mean_c = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    x = (x - mean_c) * (_rand(b, x, rng) * 2) + mean_c
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - mean) * (_rand(b, x, rng) + 0.5) + mean


def translation(x: Tensor, rng: torch.Generator | None = None,
                ratio: float = TRANSLATION_RATIO) -> Tensor:
    """(B, C, H, W) → same, each sample shifted by integers in [-ratio·H, ratio·H] (and W)."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = rng.device if rng is not None else x.device
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=rng, device=dev).to(x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=rng, device=dev).to(x.device)
    gy = torch.arange(h, device=x.device).view(1, h, 1) + dy + sh  # (B, H, 1) rows in the pad
    gx = torch.arange(w, device=x.device).view(1, 1, w) + dx + sw  # (B, 1, W)
    padded = F.pad(x, (sw, sw, sh, sh))  # (B, C, H+2sh, W+2sw), zeros
    idx = (gy * (w + 2 * sw) + gx).view(b, 1, h * w).expand(-1, x.shape[1], -1)  # (B, C, HW)
    return padded.flatten(2).gather(2, idx).view_as(x)


def cutout(x: Tensor, rng: torch.Generator | None = None, ratio: float = CUTOUT_RATIO) -> Tensor:
    """(B, C, H, W) → same with one (ratio·H × ratio·W) square per sample set to 0."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = rng.device if rng is not None else x.device
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=rng, device=dev).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=rng, device=dev).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - (cy - ch // 2)  # row in the square
    xs = torch.arange(w, device=x.device).view(1, 1, w) - (cx - cw // 2)
    inside = (ys >= 0) & (ys < ch) & (xs >= 0) & (xs < cw)  # (B, H, W), clipped at the edges
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: Tensor, policy: tuple[str, ...] | str,
                 rng: torch.Generator | None = None) -> Tensor:
    """x (B, C, H, W) in [-1, 1] → augmented (B, C, H, W); `policy` '' or () → x itself."""
    ops = parse_policy(policy) if isinstance(policy, str) else policy
    for op in ops:
        x = _OPS[op](x, rng)
    return x
