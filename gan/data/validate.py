"""Validation of image and label arrays: training sources and application inputs alike.

What this module is: `check_images` and `check_labels`, the one place that checks an image batch
— shape (N, C, H, W) or (N, H, W), uint8 or finite floats in a given range — and its (N,) integer
labels; each caller passes its error class and its own message for each kind of problem
(`gan.apps.inputs` for application inputs in [-1, 1]). `validate` applies them to a training
source — images (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3, uint8 in [0, 255] or
float in [0, 1], integer labels in [0, max_classes) (or any integers, which the caller maps
to classes with `gan.data.labels`) — and returns (N, C, H, W) images and (N,) int64 labels;
`SourceData` is what every source returns; `DataError`, the error of every dataset problem in
`gan.data`, names the file and the problem.

What it is not: no reading of files (`gan.data.sources`), no resizing, splitting or storage
(`gan.data.prepare`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

MAX_CLASSES = 1000  # ModelConfig.num_classes' upper bound


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and the problem."""


# Messages by kind of problem; `check_images`/`check_labels` fill in origin and the facts found.
_MESSAGES = {
    "shape": "{origin}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3, "
             "got shape {shape}",
    "empty": "{origin}: no usable images (shape {shape})",
    "nonfinite": "{origin}: {count} NaN/inf pixel values (first in image {first})",
    "range": "{origin}: float images must lie in [0, 1], found [{lo:g}, {hi:g}] "
             "(store uint8 0..255 or rescale)",
    "dtype": "{origin}: image dtype {dtype} not supported (use uint8 or float)",
    "labels_shape": "{origin}: labels must be (N,) = ({n},), got shape {shape}",
    "labels_dtype": "{origin}: labels must be integers, got dtype {dtype}",
    "labels_range": "{origin}: labels must lie in [0, {max_label}], found [{lo}, {hi}]",
}


def _fail(error: type[Exception], messages: Mapping[str, str], kind: str, origin: str,
          **facts: object) -> Exception:
    return error(messages[kind].format(origin=origin, **facts))


def check_images(x: np.ndarray, *, origin: str, error: type[Exception],
                 messages: Mapping[str, str], channels: int = 1,
                 size: tuple[int, int] | None = None, min_size: int = 1,
                 value_range: tuple[float, float] = (0.0, 1.0), tol: float = 0.0) -> None:
    """Raise `error(messages[kind])` for the first problem of an image batch, in this order:

        shape      not (N, channels, H, W), nor (N, H, W) when channels is 1; or (H, W) != size
        empty      N = 0, or H or W below min_size
        nonfinite  NaN/inf values in a float array (facts: count, first image)
        range      floats outside value_range (± tol) (facts: lo, hi)
        dtype      neither uint8 nor a float dtype

    Messages are format strings over `origin`, `shape` (as given), `c`, `h`, `w` (expected) and
    the facts named above."""
    shape = tuple(x.shape)
    exp_h, exp_w = size if size is not None else (None, None)
    ok_rank = (x.ndim == 4 and x.shape[1] == channels) or (x.ndim == 3 and channels == 1)
    if not ok_rank or (size is not None and shape[-2:] != tuple(size)):
        raise _fail(error, messages, "shape", origin, shape=shape, c=channels, h=exp_h, w=exp_w)
    h, w = shape[-2:]
    if shape[0] == 0 or h < min_size or w < min_size:
        raise _fail(error, messages, "empty", origin, shape=shape)
    if x.dtype == np.uint8:
        return
    if not np.issubdtype(x.dtype, np.floating):
        raise _fail(error, messages, "dtype", origin, dtype=x.dtype)
    bad = ~np.isfinite(x)
    if bad.any():
        raise _fail(error, messages, "nonfinite", origin, count=int(bad.sum()),
                    first=int(np.argwhere(bad)[0][0]))
    lo, hi = float(x.min()), float(x.max())
    if lo < value_range[0] - tol or hi > value_range[1] + tol:
        raise _fail(error, messages, "range", origin, lo=lo, hi=hi)


def check_labels(y: np.ndarray, n: int, *, origin: str, error: type[Exception],
                 messages: Mapping[str, str], num_classes: int | None = None) -> None:
    """Raise `error(messages[kind])` unless y is (n,) integers in [0, num_classes) (when given).

    Kinds: `labels_shape` (facts: n, shape), `labels_dtype` (dtype), `labels_range` (lo, hi,
    num_classes, max_label = num_classes - 1)."""
    if y.ndim != 1 or len(y) != n:
        raise _fail(error, messages, "labels_shape", origin, n=n, shape=tuple(y.shape))
    if not np.issubdtype(y.dtype, np.integer):
        raise _fail(error, messages, "labels_dtype", origin, dtype=y.dtype)
    if num_classes is None:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise _fail(error, messages, "labels_range", origin, lo=lo, hi=hi,
                    num_classes=num_classes, max_label=num_classes - 1)


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class SourceData:
    """A source's validated images and labels, before resizing and splitting.

    `class_names` is empty when the source has no names for its labels (labels are then the
    integers themselves); `labelled` False: every label is 0 (one class). `skipped` lists
    `(file, reason)` of bad files left out under `data.max_bad_fraction`."""

    x: np.ndarray  # (N, C, H, W) uint8 in [0, 255] or float32 in [0, 1], C = 1 or 3
    y: np.ndarray  # (N,) int64
    labelled: bool = True
    class_names: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])


def to_nchw(x: np.ndarray) -> np.ndarray:
    """(N, H, W) → (N, 1, H, W); (N, H, W, C) → (N, C, H, W) when C is 1 or 3 and the array is
    not already (N, C, H, W); anything else is returned as is (for `check_images` to name)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def validate(
    x: np.ndarray, y: np.ndarray | None, *, origin: str, max_classes: int | None = MAX_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """Check shape, dtype, range, finiteness and labels; return (N, C, H, W) images (C = 1 or 3)
    and (N,) int64 labels (zeros when `y` is None). `max_classes` None: labels may be any
    integers (the caller maps them to classes, `gan.data.labels`)."""
    x = to_nchw(x)
    channels = x.shape[1] if x.ndim == 4 and x.shape[1] in (1, 3) else 1
    check_images(x, origin=origin, error=DataError, messages=_MESSAGES, channels=channels,
                 min_size=2)
    if x.dtype != np.uint8:
        x = x.astype(np.float32, copy=False)
    if y is None:
        return x, np.zeros(len(x), dtype=np.int64)
    check_labels(y, len(x), origin=origin, error=DataError, messages=_MESSAGES,
                 num_classes=max_classes)
    return x, y.astype(np.int64, copy=False)


def check_published_md5(data: bytes, origin: str, what: str, size: int, md5: str) -> None:
    """A file of a published data set's size must have its published MD5 (DataError naming
    both); a file of another size is taken as a test or derived file, and only logged."""
    if len(data) != size:
        log.info("%s: not the canonical %s file (%d bytes, published %d); MD5 check skipped",
                 origin, what, len(data), size)
        return
    got = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if got != md5:
        raise DataError(
            f"{origin}: has the canonical {what} name and size but MD5 {got} differs from the "
            f"published {md5}: the download is corrupt or not the original file"
        )
