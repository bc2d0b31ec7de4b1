"""Stacked digits: three bundled digits as the R, G and B channels of one image (1,000 modes).

What this module is: the Stacked MNIST construction (Metz et al. 2017, "Unrolled GANs"; the
mode-collapse test of PacGAN, Lin et al. 2018, and R3GAN, Huang et al. 2024) made from
scikit-learn's bundled digits (1,797 8×8 glyphs, no download), the standard test of mode
collapse at CPU scale. `render_stacked(n, seed)` draws, per image and per channel
independently, a digit uniformly from 0-9 and then one of that digit's glyphs uniformly; the
image's mode is 100·r + 10·g + b (1,000 modes, each of probability 1/1000).

Each channel is the glyph exactly as preparation makes the grey `digits` source
(`digit_glyphs`: `gan.data.resize.to_uint8_images`, bilinear 8 → 28 px), so a classifier of
the grey digits reads each channel (`gan.eval.modes`). `part` restricts the glyphs to one half
of `gan.data.painted.glyph_split` (disjoint, stratified): the mode benchmark's classifier is
trained on the `reference` half, and the real data's own figure is measured on images of the
`run` half, glyphs the classifier never saw.

`STACKED_N` images with `STACKED_SEED` are the `stacked-digits` source (`gan.data.sources`,
unlabelled: the standard benchmark is unconditional); `write_stacked` writes flat PNG files
(`gan data make-stacked`), named by their mode.

What it is not: no classifier or metric (`gan.eval.modes`), no reading of files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from gan.data.painted import Part, glyph_split
from gan.data.resize import to_uint8_images
from gan.data.shapes import write_class_folders

SIZE = 28  # what the grey digits source is prepared to (auto_image_size of 8 px)
MODES = 1000
STACKED_N = 25_600  # the `stacked-digits` source's images (the probe)
STACKED_SEED = 0  # fixed: the source is one data set; `data.split_seed` only moves the split
MODE_NAMES = tuple(f"{m:03d}" for m in range(MODES))  # "rgb": the digits of R, G, B


def digit_glyphs(part: Part | None = None, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The bundled glyphs (G, size, size) uint8 as the grey digits source is prepared, and their
    digits (G,) int64; all 1,797 (`part` None) or one half (`glyph_split`)."""
    if part is None:
        d = load_digits()
        glyphs, labels = (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
    else:
        glyphs, labels = glyph_split(part)
    x = to_uint8_images(glyphs[:, None], size, 1)  # (G, 1, size, size)
    return x[:, 0], labels


def render_stacked(n: int, seed: int = 0, *, part: Part | None = None,
                   size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, size, size) uint8 and their modes (n,) int64 in [0, 1000), seeded.

    Channel c of image i is a glyph of digit d_ic, d_ic uniform on 0-9 and independent across
    channels and images, the glyph uniform among that digit's glyphs; mode = 100·d_i0 +
    10·d_i1 + d_i2."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    glyphs, labels = digit_glyphs(part, size)  # (G, S, S), (G,)
    order = np.argsort(labels, kind="stable")  # glyph indices grouped by digit
    counts = np.bincount(labels, minlength=10)  # (10,)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, size=(n, 3))  # (n, 3): R, G, B
    pick = (rng.random((n, 3)) * counts[digits]).astype(np.int64)  # (n, 3) within the digit
    idx = order[starts[digits] + pick]  # (n, 3) glyph indices
    images = glyphs[idx]  # (n, 3, S, S)
    modes = digits @ np.array([100, 10, 1])
    return images, modes.astype(np.int64)


def write_stacked(out_dir: str | Path, n: int = STACKED_N, seed: int = STACKED_SEED
                  ) -> list[Path]:
    """Flat PNG files `<out_dir>/<mode>-<i>.png` (RGB, unlabelled for `--source images`: the
    mode is only in the name); returns their paths. Refuses a non-empty `out_dir`."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):  # before rendering: fail in no time
        raise FileExistsError(f"{out}: not empty; give a new or empty folder")
    images, modes = render_stacked(n, seed)
    return write_class_folders(out, images.transpose(0, 2, 3, 1), modes, MODE_NAMES, flat=True)
