"""Inputs and outputs of the generator applications (anomaly scoring, inpainting, augmentation).

What this module is: reading a batch of images from an `.npz` (local path or `s3://` URI) and
checking it against the generator it is meant for, reading or making inpainting masks, and
writing score tables as CSV. Every failure is an `InputError` naming the file, the array and
the value.

    images .npz  x: (N, C, H, W), (N, H, W, C) or (N, H, W) (grey); C = 1 or 3 as the generator
                 makes; float32 in [-1, 1] (the format `gan sample --npz`
                 writes) or uint8 in [0, 255]; optional y: int64 (N,) class labels
    mask file    .npy, or .npz with array `mask`: (H, W), (1, H, W), (N, H, W) or (N, 1, H, W);
                 NONZERO = MISSING (the pixels to fill), zero = known — the convention of common
                 inpainting tools (white = fill)

What it is not: no model code and no training data preparation; the checks of the arrays are
`gan.data.validate`'s, which also validates training sources (floats in [0, 1] there; here floats
are in the generator's [-1, 1]).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from gan.core.images import from_uint8
from gan.data.validate import check_images, check_labels
from gan.io.uri import read_bytes as uri_read_bytes

if TYPE_CHECKING:
    from gan.io.storage import Storage

MASK_KINDS = ("center", "boxes")


class InputError(ValueError):
    """Input the applications cannot use; the message names the file, the array and the value."""


# Messages by kind of problem (`gan.data.validate.check_images`/`check_labels` fill them in).
_MESSAGES = {
    "shape": "{origin}: array 'x' has shape {shape}, the generator makes images of shape "
             "(N, {c}, {h}, {w})",
    "empty": "{origin}: array 'x' holds no images (N = 0)",
    "nonfinite": "{origin}: array 'x' has {count} NaN/inf values",
    "range": "{origin}: float images must lie in [-1, 1] (as `gan sample --npz` writes them), "
             "found [{lo:g}, {hi:g}]; or store uint8 0..255",
    "dtype": "{origin}: array 'x' has dtype {dtype}; use float32 in [-1, 1] or uint8",
    "labels_shape": "{origin}: array 'y' has shape {shape}, expected ({n},)",
    "labels_dtype": "{origin}: array 'y' must hold integers, got dtype {dtype}",
    "labels_range": "{origin}: labels in 'y' must lie in [0, {num_classes}), found [{lo}, {hi}]",
}


@dataclass(frozen=True, eq=False)
class ImageBatch:
    """Images checked against a generator's shape."""

    x: Tensor  # (N, C, H, W) float32 in [-1, 1]
    y: Tensor | None  # (N,) int64 labels when the file had them
    origin: str


def read_bytes(uri: str, storage: Storage | None = None) -> bytes:
    """A local file or an `s3://` object; InputError when it cannot be read or is empty."""
    data = uri_read_bytes(uri, storage, error=InputError, what="input", http=False)
    if not data:
        raise InputError(f"{uri}: file is empty (0 bytes)")
    return data


def _npz_arrays(data: bytes, origin: str) -> dict[str, np.ndarray]:
    try:
        # allow_pickle=False: object arrays are refused, never unpickled.
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise InputError(f"{origin}: not an .npz archive (a bare .npy array?)")
            return {k: f[k] for k in f.files}
    except InputError:
        raise
    except Exception as e:  # zipfile / ValueError / OSError: numpy raises several kinds
        raise InputError(f"{origin}: not a readable .npz file ({type(e).__name__}: {e})") from e


def images_from_arrays(x: np.ndarray, y: np.ndarray | None, shape: Sequence[int],
                       origin: str, num_classes: int | None = None) -> ImageBatch:
    """Check x (and y) against the image shape (C, H, W) a generator makes; convert to [-1, 1]."""
    c, h, w = (int(s) for s in shape)
    if x.ndim == 3 and c == 1:
        x = x[:, None]  # (N, H, W) → (N, 1, H, W)
    elif x.ndim == 4 and x.shape[1] != c and x.shape[3] == c:
        x = x.transpose(0, 3, 1, 2)  # channels last (N, H, W, C) → (N, C, H, W)
    check_images(x, origin=origin, error=InputError, messages=_MESSAGES, channels=c,
                 size=(h, w), value_range=(-1.0, 1.0), tol=1e-6)
    if x.dtype == np.uint8:
        xt = from_uint8(torch.from_numpy(np.ascontiguousarray(x)))
    else:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).clamp(-1.0, 1.0)
    if y is None:
        return ImageBatch(x=xt, y=None, origin=origin)
    check_labels(y, len(xt), origin=origin, error=InputError, messages=_MESSAGES,
                 num_classes=num_classes)
    return ImageBatch(x=xt, y=torch.from_numpy(y.astype(np.int64)), origin=origin)


def load_images(uri: str, shape: Sequence[int], *, storage: Storage | None = None,
                num_classes: int | None = None) -> ImageBatch:
    """Read an images `.npz` (path or s3:// URI) and check it against `shape` (C, H, W)."""
    arrays = _npz_arrays(read_bytes(uri, storage), uri)
    if "x" not in arrays:
        raise InputError(f"{uri}: .npz has no array 'x' (found {sorted(arrays) or 'none'})")
    return images_from_arrays(arrays["x"], arrays.get("y"), shape, uri, num_classes)


# --------------------------------------------------------------------------- masks


def center_mask(h: int, w: int, fraction: float = 0.5) -> Tensor:
    """(1, 1, H, W) known-pixel mask (1 known, 0 missing): a centred square of side fraction·H."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"mask fraction must lie in (0, 1), got {fraction}")
    side_h, side_w = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - side_h) // 2, (w - side_w) // 2
    known = torch.ones(1, 1, h, w)
    known[..., top:top + side_h, left:left + side_w] = 0.0
    return known


def random_boxes_mask(n: int, h: int, w: int, *, boxes: int = 2, max_fraction: float = 0.5,
                      seed: int = 0) -> Tensor:
    """(N, 1, H, W) known-pixel masks, each with `boxes` random rectangles missing (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    known = torch.ones(n, 1, h, w)
    hi_h, hi_w = max(2, round(h * max_fraction)), max(2, round(w * max_fraction))
    for i in range(n):
        for _ in range(boxes):
            bh = int(torch.randint(max(1, hi_h // 3), hi_h + 1, (1,), generator=gen))
            bw = int(torch.randint(max(1, hi_w // 3), hi_w + 1, (1,), generator=gen))
            top = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
            known[i, :, top:top + bh, left:left + bw] = 0.0
    return known


def load_mask_file(path: str, n: int, h: int, w: int, *, storage: Storage | None = None
                   ) -> Tensor:
    """A mask file (nonzero = missing) → (N or 1, 1, H, W) known-pixel mask (1 known, 0 missing)."""
    data = read_bytes(path, storage)
    if data[:6] == b"\x93NUMPY":
        m = np.load(io.BytesIO(data), allow_pickle=False)
    else:
        arrays = _npz_arrays(data, path)
        if "mask" not in arrays:
            raise InputError(f"{path}: .npz has no array 'mask' (found {sorted(arrays)})")
        m = arrays["mask"]
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[2:]) != (h, w) or m.shape[0] not in (1, n):
        raise InputError(f"{path}: mask has shape {tuple(m.shape)}; for {n} images of {h}×{w} "
                         f"use (H, W) = ({h}, {w}) or (N, H, W) = ({n}, {h}, {w})")
    known = torch.from_numpy((np.asarray(m) == 0).astype(np.float32))
    return known


def make_mask(spec: str, n: int, h: int, w: int, *, seed: int = 0,
              storage: Storage | None = None) -> Tensor:
    """`center`, `boxes` or a mask file path → (N or 1, 1, H, W) known-pixel mask."""
    if spec == "center":
        known = center_mask(h, w)
    elif spec == "boxes":
        known = random_boxes_mask(n, h, w, seed=seed)
    else:
        known = load_mask_file(spec, n, h, w, storage=storage)
    missing = (known == 0).flatten(1).sum(1)
    if bool((missing == 0).any()):
        raise InputError(f"mask {spec!r}: some image has no missing pixel (nothing to fill)")
    if bool((known.flatten(1).sum(1) == 0).any()):
        raise InputError(f"mask {spec!r}: some image has no known pixel (nothing to match)")
    return known


# --------------------------------------------------------------------------- outputs


def csv_bytes(columns: dict[str, Sequence[Any]]) -> bytes:
    """Columns of equal length → CSV bytes with a header row (floats written with repr)."""
    names = list(columns)
    if len({len(v) for v in columns.values()}) > 1:
        sizes = {k: len(v) for k, v in columns.items()}
        raise ValueError(f"CSV columns differ in length: {sizes}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in zip(*columns.values(), strict=True):
        writer.writerow([repr(float(v)) if isinstance(v, float) else v for v in row])
    return buf.getvalue().encode()


def write_output(uri: str, data: bytes, storage: Storage | None = None,
                 content_type: str = "application/octet-stream") -> str:
    """Write bytes to a local path (its folder must exist) or an s3:// URI; returns the URI."""
    if uri.startswith("s3://"):
        if storage is None:
            raise InputError(f"{uri}: an s3:// output needs object storage settings")
        storage.put_bytes(uri, data, content_type)
        return uri
    p = Path(uri)
    if not p.parent.resolve().is_dir():
        raise InputError(f"{uri}: folder {p.parent} does not exist")
    p.write_bytes(data)
    return str(p)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
