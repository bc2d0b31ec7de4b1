"""Class labels of a source as classes 0..K−1, whatever the source numbered or named them.

What this module is: `encode_labels(values, origin)` maps any label set — integers from 0,
from 1, with gaps, negative; strings; folder names — to (N,) int64 classes 0..K−1 and the K
original labels as strings (`class_names`, recorded in the dataset version, the model card and
the published model, which takes them back: `gan.registry.portable`). Classes are in the labels'
natural order: numerically when every label is an integer (2 before 10), else as sorted
strings. Integer labels that already are 0..K−1 keep their values and get no names (the
labels are then the integers themselves, as for digits and MNIST).

What it is not: no reading of files (the sources), no check of images (`gan.data.validate`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gan.data.validate import MAX_CLASSES, DataError


def _as_int(name: str) -> int | None:
    """The integer a label name spells ("7", "-1", "10"), else None ("07" is a name: it would
    not come back the same from int)."""
    try:
        value = int(name)
    except ValueError:
        return None
    return value if str(value) == name else None


def natural_order(names: Sequence[str]) -> tuple[str, ...]:
    """Distinct names sorted numerically when all are integers, else as strings."""
    distinct = set(names)
    ints = {n: _as_int(n) for n in distinct}
    if all(v is not None for v in ints.values()):
        return tuple(sorted(distinct, key=lambda n: ints[n]))  # type: ignore[arg-type,return-value]
    return tuple(sorted(distinct))


def encode_labels(values: Sequence[object] | np.ndarray, origin: str
                  ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Raw labels (N,) → (classes (N,) int64 in 0..K−1, class names or () ) — see the module.

    DataError naming `origin` for more than `MAX_CLASSES` distinct labels."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        distinct = np.unique(arr)
        if len(distinct) > MAX_CLASSES:
            raise DataError(f"{origin}: {len(distinct)} distinct labels, more than the "
                            f"{MAX_CLASSES} classes a model takes")
        if len(distinct) == 0 or (distinct[0] == 0 and distinct[-1] == len(distinct) - 1):
            return arr.astype(np.int64), ()  # already 0..K-1
        return (np.searchsorted(distinct, arr).astype(np.int64),
                tuple(str(int(v)) for v in distinct))
    names = [str(v) for v in arr.tolist()]
    order = natural_order(names)
    if len(order) > MAX_CLASSES:
        raise DataError(f"{origin}: {len(order)} distinct labels, more than the "
                        f"{MAX_CLASSES} classes a model takes")
    index = {n: i for i, n in enumerate(order)}
    return np.array([index[n] for n in names], dtype=np.int64), order
