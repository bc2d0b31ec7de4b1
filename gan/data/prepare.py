"""Datasets: sources, validation, stratified split, content-hash version, write-once storage.

What this module is: `load_source` reads a `DataConfig`'s source (scikit-learn digits, MNIST /
Fashion-MNIST IDX files from a URL, `s3://` prefix or folder, or an `.npz`) and validates it;
`prepare_arrays` resizes, quantises, limits and splits it and computes the dataset version;
`prepare` writes the result once to `s3://<bucket>/datasets/<name>/<version>/` (tensors first,
manifest LAST) or reuses it; `load_prepared` reads it back as float tensors in [-1, 1].

What it is not: no training, no MLflow logging, no network access beyond the URL the config
names. Nothing is written for a dataset that fails validation.

Stored form: uint8 (N, 1, S, S) images and int64 labels in one `.safetensors` file (compact and
free of pickle); `PreparedData` holds them as float32 in [-1, 1] via `gan.core.images.from_uint8`,
so `prepare_arrays` and `load_prepared` return bit-identical tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import zlib
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
from gan.io.uri import read_bytes, redact_url

if TYPE_CHECKING:  # boto3/pyarrow load only when an s3:// source is actually read
    from gan.io.storage import Storage

log = logging.getLogger(__name__)

PREP_FORMAT = 1  # bump when preparation changes meaning: it is part of every version hash
MAX_CLASSES = 1000  # ModelConfig.num_classes' upper bound
TENSORS_FILE = "tensors.safetensors"
MANIFEST_FILE = "manifest.json"
IDX_FILES = {  # role → canonical file name
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# Published (size in bytes, MD5) of the canonical files: MNIST from yann.lecun.com/exdb/mnist
# (also torchvision's MNIST.resources), Fashion-MNIST from github.com/zalandoresearch/fashion-mnist.
CANONICAL: dict[str, dict[str, tuple[int, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte.gz": (28881, "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte.gz": (1648877, "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte.gz": (4542, "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte.gz": (29515, "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte.gz": (4422102, "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte.gz": (5148, "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # ndim → magic of unsigned-byte IDX files


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and the problem."""


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


# --------------------------------------------------------------------------- reading sources


def _redact(uri: str) -> str:
    """A URI without credentials (safe for manifests, logs and MLflow tags)."""
    return redact_url(uri)


def _read_bytes(uri: str, storage: Storage | None) -> bytes:
    """Bytes of a local path, an http(s) URL or an `s3://` URI; DataError when unreadable."""
    return read_bytes(uri, storage, error=DataError)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def _check_md5(source: str, fname: str, data: bytes, origin: str) -> None:
    """Canonical name and size → the published MD5 must match; anything else is a test file."""
    size, md5 = CANONICAL[source][fname]
    if len(data) != size:
        log.info("%s: not the canonical %s file (%d bytes, published %d); MD5 check skipped",
                 origin, source, len(data), size)
        return
    got = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if got != md5:
        raise DataError(
            f"{origin}: has the canonical {source} name and size but MD5 {got} differs from the "
            f"published {md5}: the download is corrupt or not the original file"
        )


def read_idx(data: bytes, origin: str, ndim: int) -> np.ndarray:
    """A gzipped unsigned-byte IDX file → uint8 array with `ndim` dims (3: images, 1: labels)."""
    if not data:
        raise DataError(f"{origin}: file is empty (0 bytes)")
    try:
        raw = gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{origin}: truncated or corrupt gzip stream ({e})") from e
    header = 4 + 4 * ndim
    if len(raw) < 4:
        raise DataError(f"{origin}: truncated: {len(raw)} bytes, no IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(
            f"{origin}: wrong IDX magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x} "
            f"({'images' if ndim == 3 else 'labels'}, unsigned byte, {ndim}-d)"
        )
    if len(raw) < header:
        raise DataError(f"{origin}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims))
    body = len(raw) - header
    if body != expected:
        what = "truncated" if body < expected else "trailing bytes"
        raise DataError(f"{origin}: {what}: dims {dims} need {expected} data bytes, found {body}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx(cfg: DataConfig, storage: Storage | None) -> tuple[np.ndarray, np.ndarray]:
    """The four IDX files, train and t10k concatenated (the pipeline makes its own split)."""
    assert cfg.uri is not None  # DataConfig requires it for this source
    arrays: dict[str, np.ndarray] = {}
    for role, fname in IDX_FILES.items():
        uri = _join(cfg.uri, fname)
        data = _read_bytes(uri, storage)
        origin = _redact(uri)
        _check_md5(cfg.source, fname, data, origin)
        arrays[role] = read_idx(data, origin, 3 if role.endswith("images") else 1)
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{_redact(_join(cfg.uri, IDX_FILES[f'{split}_images']))}: {n_img} images but "
                f"{IDX_FILES[f'{split}_labels']} has {n_lab} labels"
            )
    x = np.concatenate([arrays["train_images"], arrays["test_images"]])
    y = np.concatenate([arrays["train_labels"], arrays["test_labels"]])
    return validate(x, y, origin=_redact(cfg.uri), max_classes=10)


def _load_npz(cfg: DataConfig, storage: Storage | None) -> tuple[np.ndarray, np.ndarray]:
    assert cfg.uri is not None
    origin = _redact(cfg.uri)
    data = _read_bytes(cfg.uri, storage)
    if not data:
        raise DataError(f"{origin}: file is empty (0 bytes)")
    try:
        # allow_pickle=False: an .npz holding object arrays is refused, never unpickled.
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            files = {k: npz[k] for k in npz.files}
    except Exception as e:  # zipfile/ValueError/OSError: numpy raises several kinds
        raise DataError(f"{origin}: not a readable .npz file ({type(e).__name__}: {e})") from e
    if "x" not in files:
        raise DataError(f"{origin}: .npz has no array 'x' (found {sorted(files) or 'none'})")
    return validate(files["x"], files.get("y"), origin=origin, max_classes=MAX_CLASSES)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    return validate(x, d.target, origin="sklearn digits", max_classes=10)


def load_source(cfg: DataConfig, storage: Storage | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw validated images (N, H, W) — uint8 in [0, 255] or float32 in [0, 1] — and labels (N,)
    int64. Unlabelled npz data gets label 0 everywhere. Raises DataError naming the problem."""
    if cfg.source == "digits":
        return _load_digits()
    if cfg.source in ("mnist", "fashion-mnist"):
        return _load_idx(cfg, storage)
    if cfg.source == "npz":
        return _load_npz(cfg, storage)
    raise DataError(f"unknown data source {cfg.source!r}")


# --------------------------------------------------------------------------- validation


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


def _source_label(cfg: DataConfig) -> str:
    if cfg.source == "digits":
        return "digits (scikit-learn)"
    return f"{cfg.source}:{_redact(cfg.uri or '')}"


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
    origin = _source_label(cfg)
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
