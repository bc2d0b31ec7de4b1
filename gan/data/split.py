"""The train/holdout split of a dataset version: by a hash of each image's pixels.

What this module is: `split_by_hash(x, y, cfg)` puts each image in train or holdout by a keyed
hash of its decoded pixels salted with `data.split_seed` (holdout iff the hash, as a number in
[0, 1), is below `data.holdout_fraction`) — never by its position — so a source that grows
keeps every holdout image in the holdout and lets no training image into it (a champion is not
re-scored on its own training images), and the same picture in another file or row lands in
the same half. Per class the holdout share is binomial: f ± √(f(1−f)/n) for a class of n
images (digits, ≈180 a class: 0.2 ± 0.03; not the exact stratification of a random split,
which is what stability costs).

Duplicates: identical pixels hash alike, so copies of an image can never straddle the split.
They are dropped all the same — one copy kept (its first occurrence), so each picture counts
once in training and in every holdout metric — and a picture that comes with two different
labels is dropped entirely (its class is ambiguous); `Split` counts both (the manifest records
them). `data.limit` then keeps, per class in proportion (largest remainder), the images of
smallest hash under a second salt: a subset that depends on the pictures, not on file order.
`check_classes` refuses a class left without a training image.

What it is not: no reading (`gan.data.sources`), no resizing or storage (`gan.data.prepare`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from gan.core.config import DataConfig
from gan.data.validate import DataError

log = logging.getLogger(__name__)


def pixel_digests(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) images (uint8, or float in [0, 1]) → (N,) 16-byte BLAKE2b digests of each
    image's shape and pixels as 8-bit values (floats rounded to 0..255 first, so a picture
    stored as floats and as bytes is the same picture), whatever file or row held it."""
    head = f"{x.shape[1:]}:".encode()
    out = np.empty(len(x), dtype="S16")
    for i, row in enumerate(x):
        if row.dtype != np.uint8:
            row = np.rint(row * 255.0).clip(0, 255).astype(np.uint8)
        out[i] = hashlib.blake2b(head + np.ascontiguousarray(row).tobytes(),
                                 digest_size=16).digest()
    return out


def unit_hash(digests: np.ndarray, salt: str) -> np.ndarray:
    """(N,) digests → (N,) float64 in [0, 1): a keyed BLAKE2b of each digest, so one salt
    (`split:<seed>`, `limit:<seed>`) gives one fixed, independent draw per picture."""
    key = salt.encode()
    return np.array([int.from_bytes(hashlib.blake2b(bytes(d), digest_size=8, key=key).digest(),
                                    "big") for d in digests], dtype=np.float64) / 2.0**64


@dataclass(frozen=True)
class Split:
    """Source indices of the train and holdout images, and what was dropped on the way."""

    train: np.ndarray  # (N_train,) ascending
    holdout: np.ndarray  # (N_holdout,) ascending
    n_duplicates: int = 0  # exact copies of an image kept once
    n_label_conflicts: int = 0  # images whose pixels came with two or more labels: all dropped


def _dedupe(digests: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(indices kept, copies dropped, label-conflicted images dropped): one image per distinct
    picture (its first occurrence); a picture seen with different labels is dropped entirely."""
    uniq, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    lo = np.full(len(uniq), np.iinfo(np.int64).max)
    hi = np.full(len(uniq), np.iinfo(np.int64).min)
    np.minimum.at(lo, inverse, y)
    np.maximum.at(hi, inverse, y)
    conflict = lo != hi  # (U,) a picture carrying two labels
    keep = np.sort(first[~conflict])
    n_conflicts = int(conflict[inverse].sum())
    return keep, len(y) - len(keep) - n_conflicts, n_conflicts


def _limit(idx: np.ndarray, y: np.ndarray, u: np.ndarray, limit: int) -> np.ndarray:
    """`limit` of the images `idx`, each class's share kept (largest remainder): per class the
    images of smallest hash `u`, so the choice depends on the pictures, not on file order."""
    classes, counts = np.unique(y[idx], return_counts=True)
    raw = counts * limit / len(idx)
    quota = np.floor(raw).astype(np.int64)
    quota[np.argsort(-(raw - quota), kind="stable")[: limit - int(quota.sum())]] += 1
    chosen = [idx[y[idx] == c][np.argsort(u[idx[y[idx] == c]], kind="stable")[:q]]
              for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen))


def split_by_hash(x: np.ndarray, y: np.ndarray, cfg: DataConfig) -> Split:
    """Train/holdout by a hash of each image's pixels salted with `split_seed`: holdout iff
    its unit hash < `holdout_fraction`. An image keeps its half whatever else the source
    holds, so a source that grows never moves an old holdout image into training; per class
    the holdout share is binomial, f ± √(f(1−f)/n). Exact duplicates go first (see `_dedupe`),
    then `limit` (`_limit`)."""
    digests = pixel_digests(x)
    idx, n_dup, n_conflict = _dedupe(digests, y)
    if cfg.limit is not None and cfg.limit < len(idx):
        idx = _limit(idx, y, unit_hash(digests, f"limit:{cfg.split_seed}"), cfg.limit)
    held = unit_hash(digests[idx], f"split:{cfg.split_seed}") < cfg.holdout_fraction
    return Split(train=idx[~held], holdout=idx[held], n_duplicates=n_dup,
                 n_label_conflicts=n_conflict)


def check_classes(split: Split, y: np.ndarray, num_classes: int, names: tuple[str, ...],
                   origin: str) -> None:
    """DataError for a class without a train image (nothing to learn it from); a class
    without holdout images is only logged (its evaluation has no real images of it)."""
    train = np.bincount(y[split.train], minlength=num_classes)
    hold = np.bincount(y[split.holdout], minlength=num_classes)
    for c in range(num_classes):
        name = names[c] if c < len(names) else str(c)
        if train[c] + hold[c] == 0 and np.any(y == c):
            raise DataError(
                f"{origin}: class {name!r} has no image left: each of its images is an exact "
                "copy of an image labelled otherwise, and such ambiguous images are dropped "
                f"({split.n_label_conflicts} in all): correct those labels")
        if train[c] == 0 and hold[c] > 0:
            n = int(hold[c])
            what = (f"all {n} images are" if num_classes == 1 else
                    f"class {name!r} has {n} image{'' if n == 1 else 's'}, all")
            raise DataError(
                f"{origin}: {what} in the holdout split (each image's half is fixed by a hash "
                "of its pixels): give the class more images, or choose another "
                "data.split_seed")
        if hold[c] == 0 and train[c] > 0:
            log.warning("%s: class %r has no holdout image (%d in train)", origin, name,
                        int(train[c]))
