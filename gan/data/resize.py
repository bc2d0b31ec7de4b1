"""Resizing array images to the prepared size: one function shared by preparation and the
generated sets that must match it pixel for pixel.

What this module is: `to_uint8_images(x, size, channels)`, the array sources' resize policy
(centre crop to a square, bilinear, antialiased when shrinking, then the channel conversion),
used by `gan.data.prepare` for every array source and by `gan.data.stacked`, whose channels are
the grey digits exactly as preparation makes them.

What it is not: no decoding of image files (`gan.data.decode`, Lanczos), no splitting or storage.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gan.core.images import unit_to_uint8
from gan.data.decode import to_channels

CHUNK = 8192  # images per float copy: bounds the memory of a large dataset's resize


def to_uint8_images(x: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(N, C, H, W) uint8|float[0,1] → (N, channels, size, size) uint8: centre crop to a
    square, bilinear resize when needed, then the channel conversion of `to_channels`."""
    n, c, h, w = x.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, :, top : top + side, left : left + side]  # (N, C, side, side)
    if side == size and x.dtype == np.uint8:
        return to_channels(np.ascontiguousarray(x), channels)
    out = np.empty((n, c, size, size), dtype=np.uint8)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    for i in range(0, n, CHUNK):
        t = torch.from_numpy(np.asarray(x[i : i + CHUNK], dtype=np.float32)) / scale
        if side != size:
            # antialias only matters (and only applies) when shrinking.
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < side)
        out[i : i + CHUNK] = unit_to_uint8(t).numpy()
    return to_channels(out, channels)
