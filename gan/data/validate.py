"""Validation of raw training images and labels, before any preparation work.

What this module is: `validate` checks a source's images — shape (N, H, W) or (N, 1, H, W),
uint8 in [0, 255] or float in [0, 1], finite — and its labels — (N,) integers in
[0, max_classes) — and returns them as (N, H, W) images and (N,) int64 labels; `DataError`, the
error of every dataset problem in `gan.data`, names the file and the problem.

What it is not: no reading of files (`gan.data.sources`), no resizing, splitting or storage
(`gan.data.prepare`).
"""

from __future__ import annotations

import numpy as np

MAX_CLASSES = 1000  # ModelConfig.num_classes' upper bound


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and the problem."""


def validate(
    x: np.ndarray, y: np.ndarray | None, *, origin: str, max_classes: int = MAX_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """Check shape, dtype, range, finiteness and labels; return (N, H, W) images, (N,) int64."""
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]  # (N, 1, H, W) → (N, H, W)
    if x.ndim != 3:
        raise DataError(
            f"{origin}: images must be (N, H, W) or (N, 1, H, W), got shape {tuple(x.shape)}"
        )
    n, h, w = x.shape
    if n == 0 or h < 2 or w < 2:
        raise DataError(f"{origin}: no usable images (shape {tuple(x.shape)})")
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            raise DataError(
                f"{origin}: {int(bad.sum())} NaN/inf pixel values (first in image {first})"
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{origin}: float images must lie in [0, 1], found [{lo:g}, {hi:g}] "
                "(store uint8 0..255 or rescale)"
            )
        x = x.astype(np.float32, copy=False)
    else:
        raise DataError(f"{origin}: image dtype {x.dtype} not supported (use uint8 or float)")
    return x, _validate_labels(y, n, origin=origin, max_classes=max_classes)


def _validate_labels(y: np.ndarray | None, n: int, *, origin: str, max_classes: int) -> np.ndarray:
    if y is None:
        return np.zeros(n, dtype=np.int64)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{origin}: labels must be (N,) = ({n},), got shape {tuple(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{origin}: labels must be integers, got dtype {y.dtype}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= max_classes:
        raise DataError(
            f"{origin}: labels must lie in [0, {max_classes - 1}], found [{lo}, {hi}]"
        )
    return y.astype(np.int64, copy=False)
