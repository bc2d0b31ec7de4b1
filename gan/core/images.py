"""Pixel conventions shared by data, evaluation and serving: uint8 [0, 255] ↔ float [-1, 1].

What this module is: the two conversions every stage must agree on, in one place, so that a
prepared dataset, a generated sample and a saved picture use the same mapping.

What it is not: no image files, no grids, no resizing (resizing lives in `gan.data.prepare`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def from_uint8(u: Tensor) -> Tensor:
    """uint8 in [0, 255] → float32 in [-1, 1] (same shape)."""
    if u.dtype != torch.uint8:
        raise TypeError(f"from_uint8 expects a uint8 tensor, got {u.dtype}")
    return u.to(torch.float32).div_(127.5).sub_(1.0)


def to_uint8(x: Tensor) -> Tensor:
    """float in [-1, 1] → uint8 in [0, 255] (rounded, clamped; same shape)."""
    return ((x.detach().to(torch.float32) + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def unit_to_uint8(x: Tensor) -> Tensor:
    """float in [0, 1] → uint8 in [0, 255] (rounded, clamped; same shape)."""
    return (x.detach().to(torch.float32) * 255.0).round_().clamp_(0, 255).to(torch.uint8)
