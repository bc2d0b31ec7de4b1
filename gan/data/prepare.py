"""Dataset preparation: split by image hash, content-hash version, write-once storage.

What this module is: `prepare_arrays` loads a `DataConfig`'s source (`gan.data.sources`, which
validates it and maps its labels to classes 0..K−1), splits it by a hash of each image's pixels
(`gan.data.split`: duplicates dropped, `limit` applied), converts channels, resizes and
quantises it and computes the dataset version; `prepare` writes the result once to
`s3://<bucket>/datasets/<name>/<version>/` (shards first, manifest LAST) or reuses it;
`load_prepared` reads it back as float tensors in [-1, 1] (versions of either stored form).

Resize policy: centre crop to a square (the shorter side), then resize to image_size ×
image_size (`data.image_size`, or when it is empty the size the data suggests:
`gan.data.decode.auto_image_size`, e.g. 28 for digits and MNIST, 32 for CIFAR-10) — array
sources (digits, IDX, npz, CIFAR) with bilinear interpolation, antialiased when shrinking;
image files are already decoded that way by `gan.data.decode` (Lanczos). The array resize is
`gan.data.resize.to_uint8_images` (shared with the stacked digits, `gan.data.stacked`).
Channels: `data.channels`, else the source's (grey repeated to RGB, RGB to luma).

What it is not: no training, no MLflow logging, no reading of source files (`gan.data.sources`)
or checks of their content (`gan.data.validate`). Nothing is written for a dataset that fails
validation.

Stored form (format 2): uint8 (N, C, S, S) images and int64 labels as Parquet shards per split
(`gan.data.shards`: `train-00000.parquet`, ..., `holdout-00000.parquet`), each listed in the
manifest with its row count and sha256; the manifest also records channels, labelled or not,
class names, the bad files skipped and the duplicates dropped. Format 1 versions (one
`tensors.safetensors`) still load. `PreparedData` holds the images as float32 in [-1, 1] via
`gan.core.images.from_uint8`, so `prepare_arrays` and `load_prepared` return bit-identical
tensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.numpy
import torch
from torch import Tensor

from gan.core.config import DataConfig
from gan.core.images import from_uint8
from gan.core.records import DatasetRef
from gan.data.decode import auto_image_size
from gan.data.resize import to_uint8_images
from gan.data.sources import load_source, source_label
from gan.data.split import check_classes, split_by_hash
from gan.data.validate import DataError, SourceData

if TYPE_CHECKING:  # annotations only: boto3 loads where a Storage is made
    from gan.io.storage import Storage

log = logging.getLogger(__name__)

# Bump when preparation changes meaning: it is part of every version hash. 3: the split by a
# hash of each image's pixels, duplicates dropped, labels mapped to 0..K-1 (every version changed).
PREP_FORMAT = 3
TENSORS_FILE = "tensors.safetensors"  # format 1's one file (read, no longer written)
SPLITS = ("train", "holdout")
MAX_SKIPPED_LISTED = 50  # bad files named in the manifest (all are counted)
IDX_CLASSES = 10  # digits, MNIST and Fashion-MNIST: ten classes even if a subset lacks some
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class PreparedData:
    """A validated, split dataset as tensors; images float32 in [-1, 1]."""

    x_train: Tensor  # (N, C, H, W) float32 in [-1, 1]
    y_train: Tensor  # (N,) int64
    x_holdout: Tensor  # (M, C, H, W)
    y_holdout: Tensor  # (M,)
    num_classes: int
    name: str
    version: str
    source: str = ""
    class_names: tuple[str, ...] = ()  # names of labels 0..K-1, when the source has them
    labelled: bool = True  # False: every label is 0 (an unlabelled source)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def class_hist(self, split: str = "train") -> list[int]:
        """Images per class in the `train` or `holdout` split."""
        y = self.y_train if split == "train" else self.y_holdout
        return torch.bincount(y, minlength=self.num_classes).tolist()


# --------------------------------------------------------------------------- preparation


def _prep_config(cfg: DataConfig, size: int) -> dict[str, Any]:
    """The preparation settings that enter the version (where the files lie does not);
    `size` is the image size used, so an empty `data.image_size` that the data resolved to 28
    makes the same version as an explicit 28."""
    return {"format": PREP_FORMAT, "image_size": size,
            "holdout_fraction": cfg.holdout_fraction, "split_seed": cfg.split_seed,
            "limit": cfg.limit, "channels": cfg.channels,
            "max_bad_fraction": cfg.max_bad_fraction}


def _content_hash(arrays: dict[str, np.ndarray], prep: dict[str, Any],
                  class_names: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256(json.dumps(prep, sort_keys=True).encode())
    h.update(json.dumps(list(class_names)).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class _Prepared:
    """The stored form: uint8 images, int64 labels, and what the manifest says about them."""

    arrays: dict[str, np.ndarray]  # x_train (N,C,S,S) u8, y_train (N,), x_holdout, y_holdout
    num_classes: int
    name: str
    sha256: str
    source: str
    class_names: tuple[str, ...] = ()
    labelled: bool = True
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) of bad files left out
    n_duplicates: int = 0  # exact duplicate images dropped (one of each kept)
    n_label_conflicts: int = 0  # images dropped because their pixels came with two labels

    @property
    def version(self) -> str:
        return self.sha256[:16]

    def to_tensors(self) -> PreparedData:
        a = {k: torch.from_numpy(v.copy()) for k, v in self.arrays.items()}
        return PreparedData(
            x_train=from_uint8(a["x_train"]), y_train=a["y_train"],
            x_holdout=from_uint8(a["x_holdout"]), y_holdout=a["y_holdout"],
            num_classes=self.num_classes, name=self.name, version=self.version,
            source=self.source, class_names=self.class_names, labelled=self.labelled,
        )


def _num_classes(src: SourceData, source: str) -> int:
    if not src.labelled:
        return 1
    if src.class_names:
        return len(src.class_names)
    if source in ("digits", "mnist", "fashion-mnist"):
        return IDX_CLASSES
    return int(src.y.max()) + 1


def _prepare(cfg: DataConfig, storage: Storage | None) -> _Prepared:
    src = load_source(cfg, storage)  # validation happens first, before any work
    y = src.y
    origin = source_label(cfg)
    names = src.class_names if src.labelled else ()
    num_classes = _num_classes(src, cfg.source)
    split = split_by_hash(src.x, y, cfg)
    check_classes(split, y, num_classes, names, origin)
    if split.n_duplicates or split.n_label_conflicts:
        log.info("%s: dropped %d exact duplicate images and %d images carrying two labels",
                 origin, split.n_duplicates, split.n_label_conflicts)
    tr, ho = split.train, split.holdout
    keep = np.concatenate([tr, ho])
    size = cfg.image_size or auto_image_size([min(src.x.shape[-2:])])  # files: decoded to it
    u8 = to_uint8_images(src.x[keep], size, cfg.channels or src.channels)
    arrays = {"x_train": u8[: len(tr)], "y_train": y[tr], "x_holdout": u8[len(tr) :],
              "y_holdout": y[ho]}  # x: (len(keep), C, S, S)
    return _Prepared(arrays=arrays, num_classes=num_classes,
                     name=cfg.dataset_name, source=origin, class_names=names,
                     sha256=_content_hash(arrays, _prep_config(cfg, size), names),
                     labelled=src.labelled, skipped=src.skipped,
                     n_duplicates=split.n_duplicates, n_label_conflicts=split.n_label_conflicts)


def prepare_arrays(cfg: DataConfig, storage: Storage | None = None) -> PreparedData:
    """Validate, resize, split and version the source in memory; writes nothing."""
    return _prepare(cfg, storage).to_tensors()


# --------------------------------------------------------------------------- storage


def _manifest(p: _Prepared, cfg: DataConfig,
              shards: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    a = p.arrays
    size = int(a["x_train"].shape[-1])  # (N, C, S, S)
    return {
        "format": PREP_FORMAT, "name": p.name, "version": p.version, "content_sha256": p.sha256,
        "source": p.source, "prep_config": _prep_config(cfg, size),
        "n_train": len(a["y_train"]), "n_holdout": len(a["y_holdout"]),
        "num_classes": p.num_classes, "image_size": size,
        "channels": int(a["x_train"].shape[1]), "labelled": p.labelled,
        "class_names": list(p.class_names),
        "class_hist_train": np.bincount(a["y_train"], minlength=p.num_classes).tolist(),
        "class_hist_holdout": np.bincount(a["y_holdout"], minlength=p.num_classes).tolist(),
        "n_duplicates_dropped": p.n_duplicates,
        "n_label_conflicts_dropped": p.n_label_conflicts,
        "n_skipped": len(p.skipped),
        "skipped": [{"file": f, "reason": r} for f, r in p.skipped[:MAX_SKIPPED_LISTED]],
        "shards": shards,
    }


def _ref(manifest: dict[str, Any], uri: str, *, reused: bool) -> DatasetRef:
    fields = {k: manifest[k] for k in DatasetRef.model_fields
              if k not in ("uri", "reused") and k in manifest}  # format 1 lacks the newer ones
    return DatasetRef(**fields, uri=uri, reused=reused)


def dataset_uri(storage: Storage, name: str, version: str) -> str:
    """`s3://<bucket>/datasets/<name>/<version>/`."""
    return storage.settings.s3_uri("datasets", name, version) + "/"


def prepare(cfg: DataConfig, storage: Storage) -> DatasetRef:
    """Validate → prepare → write once (or reuse the version already stored)."""
    p = _prepare(cfg, storage)
    uri = dataset_uri(storage, p.name, p.version)
    if storage.exists(uri + MANIFEST_FILE):
        log.info("dataset %s version %s already stored at %s: reused", p.name, p.version, uri)
        return _ref(storage.get_json(uri + MANIFEST_FILE), uri, reused=True)
    # lazy: pyarrow is absent on a bare GPU image (gpu_check), which prepares in memory only
    from gan.data.shards import encode_shards

    storage.ensure_bucket()
    shards: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        shards[split] = []
        for shard in encode_shards(p.arrays[f"x_{split}"], p.arrays[f"y_{split}"], split):
            storage.put_bytes(uri + shard.file, shard.data)
            shards[split].append(shard.entry())
    manifest = _manifest(p, cfg, shards)
    # The manifest goes LAST: its presence is what marks the version complete.
    storage.put_json(uri + MANIFEST_FILE, manifest)
    return _ref(manifest, uri, reused=False)


def _read_shards(storage: Storage, uri: str, m: dict[str, Any]) -> dict[str, np.ndarray]:
    """Format 2: every split's shards, each checked against its manifest sha256."""
    from gan.data.shards import decode_shard  # lazy: as in `prepare`
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        xs, ys = [], []
        for entry in m["shards"][split]:
            blob = storage.get_bytes(uri + entry["file"])
            if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
                raise DataError(f"{uri}{entry['file']}: sha256 differs from the manifest "
                                "(corrupt)")
            x, y = decode_shard(blob, uri + entry["file"])
            xs.append(x)
            ys.append(y)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = np.concatenate(xs), np.concatenate(ys)
    return arrays


def _read_tensors(storage: Storage, uri: str, m: dict[str, Any]) -> dict[str, np.ndarray]:
    """Format 1: one safetensors file, checked against the manifest's sha256."""
    blob = storage.get_bytes(uri + m["tensors_file"])
    if hashlib.sha256(blob).hexdigest() != m["tensors_sha256"]:
        raise DataError(f"{uri}{m['tensors_file']}: sha256 differs from the manifest (corrupt)")
    return safetensors.numpy.load(blob)


def load_prepared(storage: Storage, ref_or_uri: DatasetRef | str) -> PreparedData:
    """Read a prepared dataset back (checking its manifest and the files' hashes)."""
    uri = ref_or_uri.uri if isinstance(ref_or_uri, DatasetRef) else ref_or_uri
    uri = uri.removesuffix(MANIFEST_FILE).rstrip("/") + "/"
    if not storage.exists(uri + MANIFEST_FILE):
        raise DataError(f"{uri}: no {MANIFEST_FILE}: not a (complete) prepared dataset")
    m = storage.get_json(uri + MANIFEST_FILE)
    arrays = _read_shards(storage, uri, m) if "shards" in m else _read_tensors(storage, uri, m)
    if len(arrays["y_train"]) != m["n_train"] or len(arrays["y_holdout"]) != m["n_holdout"]:
        raise DataError(f"{uri}: tensor sizes differ from the manifest's counts")
    return _Prepared(arrays=arrays, num_classes=m["num_classes"], name=m["name"],
                     sha256=m["content_sha256"], source=m["source"],
                     class_names=tuple(m.get("class_names", ())),
                     labelled=m.get("labelled", True)).to_tensors()
