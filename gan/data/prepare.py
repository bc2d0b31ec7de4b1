"""Dataset preparation: stratified split, content-hash version, write-once storage.

What this module is: `prepare_arrays` loads a `DataConfig`'s source (`gan.data.sources`, which
validates it), resizes, quantises, limits and splits it and computes the dataset version;
`prepare` writes the result once to `s3://<bucket>/datasets/<name>/<version>/` (tensors first,
manifest LAST) or reuses it; `load_prepared` reads it back as float tensors in [-1, 1].

What it is not: no training, no MLflow logging, no reading of source files (`gan.data.sources`)
or checks of their content (`gan.data.validate`). Nothing is written for a dataset that fails
validation.

Stored form: uint8 (N, 1, S, S) images and int64 labels in one `.safetensors` file (compact and
free of pickle); `PreparedData` holds them as float32 in [-1, 1] via `gan.core.images.from_uint8`,
so `prepare_arrays` and `load_prepared` return bit-identical tensors.
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
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import Tensor

from gan.core.config import DataConfig
from gan.core.images import from_uint8, unit_to_uint8
from gan.core.records import DatasetRef
from gan.data.sources import load_source, source_label
from gan.data.validate import DataError

if TYPE_CHECKING:  # annotations only: boto3 loads where a Storage is made
    from gan.io.storage import Storage

log = logging.getLogger(__name__)

PREP_FORMAT = 1  # bump when preparation changes meaning: it is part of every version hash
TENSORS_FILE = "tensors.safetensors"
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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def class_hist(self, split: str = "train") -> list[int]:
        """Images per class in the `train` or `holdout` split."""
        y = self.y_train if split == "train" else self.y_holdout
        return torch.bincount(y, minlength=self.num_classes).tolist()


# --------------------------------------------------------------------------- preparation


def _to_uint8_images(x: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) uint8|float[0,1] → (N, 1, size, size) uint8, bilinear-resized when needed."""
    n, h, w = x.shape
    if (h, w) == (size, size) and x.dtype == np.uint8:
        return np.ascontiguousarray(x[:, None])
    out = np.empty((n, 1, size, size), dtype=np.uint8)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    for i in range(0, n, 8192):  # chunks bound the float copy for large datasets
        t = torch.from_numpy(np.asarray(x[i : i + 8192], dtype=np.float32))[:, None] / scale
        if (h, w) != (size, size):
            # antialias only matters (and only applies) when shrinking.
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < min(h, w))
        out[i : i + 8192] = unit_to_uint8(t).numpy()
    return out


def _split(y: np.ndarray, cfg: DataConfig, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (train, holdout) index arrays, after the optional `limit`."""
    idx = np.arange(len(y))
    try:
        if cfg.limit is not None and cfg.limit < len(y):
            idx, _ = train_test_split(idx, train_size=cfg.limit, stratify=y,
                                      random_state=cfg.split_seed)
        tr, ho = train_test_split(idx, test_size=cfg.holdout_fraction, stratify=y[idx],
                                  random_state=cfg.split_seed)
    except ValueError as e:  # e.g. a class with a single image cannot be stratified
        raise DataError(f"{origin}: cannot make a stratified split: {e}") from e
    return np.sort(tr), np.sort(ho)


def _prep_config(cfg: DataConfig) -> dict[str, Any]:
    """The preparation settings that enter the version (where the files lie does not)."""
    return {"format": PREP_FORMAT, "image_size": cfg.image_size,
            "holdout_fraction": cfg.holdout_fraction, "split_seed": cfg.split_seed,
            "limit": cfg.limit}


def _content_hash(arrays: dict[str, np.ndarray], prep: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(prep, sort_keys=True).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class _Prepared:
    """The stored form: uint8 images, int64 labels, and what the manifest says about them."""

    arrays: dict[str, np.ndarray]  # x_train (N,1,S,S) u8, y_train (N,), x_holdout, y_holdout
    num_classes: int
    name: str
    sha256: str
    source: str

    @property
    def version(self) -> str:
        return self.sha256[:16]

    def to_tensors(self) -> PreparedData:
        a = {k: torch.from_numpy(v.copy()) for k, v in self.arrays.items()}
        return PreparedData(
            x_train=from_uint8(a["x_train"]), y_train=a["y_train"],
            x_holdout=from_uint8(a["x_holdout"]), y_holdout=a["y_holdout"],
            num_classes=self.num_classes, name=self.name, version=self.version,
            source=self.source,
        )


def _prepare(cfg: DataConfig, storage: Storage | None) -> _Prepared:
    x, y = load_source(cfg, storage)  # validation happens first, before any work
    origin = source_label(cfg)
    tr, ho = _split(y, cfg, origin)
    keep = np.concatenate([tr, ho])
    u8 = _to_uint8_images(x[keep], cfg.image_size)  # (len(keep), 1, S, S)
    arrays = {"x_train": u8[: len(tr)], "y_train": y[tr], "x_holdout": u8[len(tr) :],
              "y_holdout": y[ho]}
    num_classes = 10 if cfg.source != "npz" else int(y.max()) + 1
    return _Prepared(arrays=arrays, num_classes=num_classes, name=cfg.dataset_name,
                     sha256=_content_hash(arrays, _prep_config(cfg)), source=origin)


def prepare_arrays(cfg: DataConfig, storage: Storage | None = None) -> PreparedData:
    """Validate, resize, split and version the source in memory; writes nothing."""
    return _prepare(cfg, storage).to_tensors()


# --------------------------------------------------------------------------- storage


def _manifest(p: _Prepared, cfg: DataConfig, tensors_sha256: str) -> dict[str, Any]:
    a = p.arrays
    return {
        "format": PREP_FORMAT, "name": p.name, "version": p.version, "content_sha256": p.sha256,
        "source": p.source, "prep_config": _prep_config(cfg),
        "n_train": len(a["y_train"]), "n_holdout": len(a["y_holdout"]),
        "num_classes": p.num_classes, "image_size": cfg.image_size, "channels": 1,
        "class_hist_train": np.bincount(a["y_train"], minlength=p.num_classes).tolist(),
        "class_hist_holdout": np.bincount(a["y_holdout"], minlength=p.num_classes).tolist(),
        "tensors_file": TENSORS_FILE, "tensors_sha256": tensors_sha256,
    }


def _ref(manifest: dict[str, Any], uri: str, *, reused: bool) -> DatasetRef:
    fields = {k: manifest[k] for k in DatasetRef.model_fields if k not in ("uri", "reused")}
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
    blob = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in p.arrays.items()})
    manifest = _manifest(p, cfg, hashlib.sha256(blob).hexdigest())
    storage.ensure_bucket()
    storage.put_bytes(uri + TENSORS_FILE, blob)
    # The manifest goes LAST: its presence is what marks the version complete.
    storage.put_json(uri + MANIFEST_FILE, manifest)
    return _ref(manifest, uri, reused=False)


def load_prepared(storage: Storage, ref_or_uri: DatasetRef | str) -> PreparedData:
    """Read a prepared dataset back (checking its manifest and tensor hash)."""
    uri = ref_or_uri.uri if isinstance(ref_or_uri, DatasetRef) else ref_or_uri
    uri = uri.removesuffix(MANIFEST_FILE).rstrip("/") + "/"
    if not storage.exists(uri + MANIFEST_FILE):
        raise DataError(f"{uri}: no {MANIFEST_FILE}: not a (complete) prepared dataset")
    m = storage.get_json(uri + MANIFEST_FILE)
    blob = storage.get_bytes(uri + m["tensors_file"])
    if hashlib.sha256(blob).hexdigest() != m["tensors_sha256"]:
        raise DataError(f"{uri}{m['tensors_file']}: sha256 differs from the manifest (corrupt)")
    arrays = safetensors.numpy.load(blob)
    if len(arrays["y_train"]) != m["n_train"] or len(arrays["y_holdout"]) != m["n_holdout"]:
        raise DataError(f"{uri}: tensor sizes differ from the manifest's counts")
    return _Prepared(arrays=arrays, num_classes=m["num_classes"], name=m["name"],
                     sha256=m["content_sha256"], source=m["source"]).to_tensors()
