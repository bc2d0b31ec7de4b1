"""A bundled RGB image set made by code: coloured shapes on textured backgrounds.

What this module is: `render_shapes(n_per_class, seed)` draws 32×32 RGB images of four classes
(circle, square, triangle, cross), each a shape of random colour, size and position on a
random texture (stripes at a random angle over a noisy base colour), seeded, no download;
`write_shapes(out_dir, ...)` writes them as PNG files, one sub-folder per class (or flat,
unlabelled), the layout `--source images` reads. `gan data make-shapes OUT_DIR` calls it.

What it is not: no reading (`gan.data.images`), no claim to be a benchmark: it exists so that
colour and the image-file path are tested end to end on real PNG files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "cross", "square", "triangle")
SIZE = 32


def _background(rng: np.random.Generator) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8: stripes of two colours at a random angle, plus pixel noise."""
    a, b = rng.integers(0, 256, size=(2, 3))
    angle, period = rng.uniform(0, math.pi), rng.uniform(3, 9)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
    mix = (0.5 + 0.5 * np.sin(2 * math.pi * phase))[..., None]  # (SIZE, SIZE, 1)
    img = a * (1 - mix) + b * mix + rng.normal(0, 12, size=(SIZE, SIZE, 3))
    return np.clip(img * 0.6, 0, 255).astype(np.uint8)  # darker: the shape stands out


def _draw(cls: str, rng: np.random.Generator) -> Image.Image:
    img = Image.fromarray(_background(rng))
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(7, 13))  # half size
    cx, cy = rng.integers(r + 1, SIZE - r - 1, size=2)
    colour = tuple(int(v) for v in rng.integers(110, 256, size=3))
    box = (cx - r, cy - r, cx + r, cy + r)
    if cls == "circle":
        draw.ellipse(box, fill=colour)
    elif cls == "square":
        draw.rectangle(box, fill=colour)
    elif cls == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:  # cross
        w = max(2, r // 3)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    return img


def render_shapes(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, SIZE, SIZE, 3) uint8 and labels (N,) int64 (index into CLASSES)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    images = np.stack([np.asarray(_draw(CLASSES[k], rng)) for k in labels])
    return images, labels.astype(np.int64)


def write_shapes(out_dir: str | Path, n_per_class: int = 750, seed: int = 0, *,
                 flat: bool = False) -> list[Path]:
    """PNG files `<out_dir>/<class>/<class>-<i>.png` (or `<out_dir>/<class>-<i>.png` when
    `flat`: no labels); returns their paths. Refuses a non-empty `out_dir`."""
    return write_class_folders(out_dir, *render_shapes(n_per_class, seed), CLASSES, flat=flat)


def write_class_folders(out_dir: str | Path, images: np.ndarray, labels: np.ndarray,
                        class_names: tuple[str, ...] | list[str], *, flat: bool) -> list[Path]:
    """Images (N, H, W, 3) uint8 as `<out_dir>/<class>/<class>-<i>.png` (flat: all in
    `out_dir`), the layout `--source images` reads; shared by the generated sets (shapes,
    painted digits). Refuses a non-empty `out_dir`."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty; give a new or empty folder")
    paths = []
    for i, (img, k) in enumerate(zip(images, labels, strict=True)):
        folder = out if flat else out / class_names[k]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{class_names[k]}-{i:05d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths
