"""Pictures of an evaluation as PNG bytes: sample grids, real-vs-generated, training curves.

What this module is: image grids built with numpy + Pillow (torchvision's `make_grid` is not
usable on this machine, so the few lines of tiling are written here), and loss / D-output
curves drawn with matplotlib's object API on the Agg canvas (no pyplot global state, safe in
threads and workers).

What it is not: no sampling, no metrics, no storage.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from gan.core.images import to_uint8


def _tiles(images: Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] → (N, H, W, C) uint8 (`gan.core.images` mapping)."""
    return to_uint8(images.detach().float().nan_to_num(-1.0)).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: Tensor, ncol: int, *, pad: int = 2, pad_value: int = 255,
               scale: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images row by row into (rows·(H+pad)+pad, ncol·(W+pad)+pad, C) uint8.

    Empty cells (N not a multiple of ncol) stay `pad_value`. `scale` repeats pixels (nearest)
    so 28×28 tiles stay legible.
    """
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"image_grid needs (N>0, C, H, W) images, got {tuple(images.shape)}")
    if ncol < 1:
        raise ValueError(f"image_grid: ncol must be >= 1, got {ncol}")
    tiles = _tiles(images)  # (N, H, W, C)
    n, h, w, c = tiles.shape
    rows = -(-n // ncol)
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[y:y + h, x:x + w] = tiles[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def png_bytes(grid: np.ndarray) -> bytes:
    """(H, W, C) uint8 → PNG: C=1 grey, C=3 RGB, C=4 RGBA, otherwise the first channel."""
    # Pillow infers the mode from the uint8 array: (H, W) → L, (H, W, 3) → RGB, (H, W, 4) → RGBA.
    arr = grid if grid.shape[2] in (3, 4) else np.ascontiguousarray(grid[:, :, 0])
    img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def sample_grid_png(images: Tensor, ncol: int = 10, scale: int = 2) -> bytes:
    """PNG of generated images, `ncol` per row (one row per class when ordered that way)."""
    return png_bytes(image_grid(images, ncol, scale=scale))


def real_vs_generated_png(real: Tensor, fake: Tensor, ncol: int = 10, scale: int = 2,
                          gap: int = 8) -> bytes:
    """PNG with a grid of real images on the left and generated ones on the right."""
    left = image_grid(real, ncol, scale=scale)
    right = image_grid(fake, ncol, scale=scale)
    if left.shape[2] != right.shape[2]:
        raise ValueError(f"real has {left.shape[2]} channels, generated {right.shape[2]}")
    h = max(left.shape[0], right.shape[0])
    canvas = np.full((h, left.shape[1] + gap * scale + right.shape[1], left.shape[2]), 128,
                     np.uint8)  # grey gap marks the border between the halves
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap * scale:] = right
    return png_bytes(canvas)


def _series(history: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, list[float]]:
    return {k: [float(h.get(k, float("nan"))) for h in history] for k in keys}


def curves_png(history: Sequence[dict[str, float]], *, width_in: float = 10.0,
               height_in: float = 4.0, dpi: int = 100) -> bytes:
    """Loss curves (keys starting with `loss`) and D outputs (keys starting with `d_`) per epoch.

    An empty history gives a figure that says so, so the artifact always exists.
    """
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax_loss, ax_d = fig.subplots(1, 2)
    keys = sorted({k for h in history for k in h})
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    for ax, prefix, title in ((ax_loss, "loss", "losses"), (ax_d, "d_", "D outputs")):
        chosen = [k for k in keys if k.startswith(prefix)]
        for k, ys in _series(history, chosen).items():
            ax.plot(epochs, ys, marker="o" if len(epochs) < 30 else None, label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if chosen:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no training history", ha="center", va="center",
                    transform=ax.transAxes)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
