"""Dataset sources: the one entry point `load_source`, and the array sources (digits, IDX, npz).

What this module is: `load_source` reads a `DataConfig`'s source and returns validated
`SourceData` — scikit-learn digits, the stacked digits (`gan.data.stacked`: three digits as
R, G, B, unlabelled), MNIST / Fashion-MNIST IDX files from a URL, `s3://` prefix
or folder, an `.npz` (here; its integer labels, whatever their numbering, become classes
0..K−1 named by the labels: `gan.data.labels`), and image files (`gan.data.images`), Parquet tables
(`gan.data.parquet`) and the CIFAR-10 binary release (`gan.data.cifar`); `read_idx` parses one
IDX file; canonical IDX files are checked against their published MD5. Every failure is a
`DataError` naming the file.

What it is not: no resizing, splitting, versioning or storage of the result (`gan.data.prepare`),
no network access beyond the URL the config names.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from typing import TYPE_CHECKING

import numpy as np
from sklearn.datasets import load_digits

from gan.core.config import DataConfig
from gan.data.cifar import load_cifar10
from gan.data.images import load_images
from gan.data.labels import encode_labels
from gan.data.validate import DataError, SourceData, check_published_md5, validate
from gan.io.uri import read_bytes, redact_url

if TYPE_CHECKING:  # boto3/pyarrow load only when an s3:// source is actually read
    from gan.io.storage import Storage

log = logging.getLogger(__name__)

# The one .npz image convention of the project: `--source npz`, `gan sample --npz` and the
# applications' inputs all use it.
NPZ_CONVENTION = ("x: float (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3, in "
                  "[-1, 1] as `gan sample --npz` writes, or uint8 0..255; y: optional int "
                  "labels (N,)")
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


def _redact(uri: str) -> str:
    """A URI without credentials (safe for manifests, logs and MLflow tags)."""
    return redact_url(uri)


def _read_bytes(uri: str, storage: Storage | None) -> bytes:
    """Bytes of a local path, an http(s) URL or an `s3://` URI; DataError when unreadable
    (a missing S3 object says how to put the files there)."""
    return read_bytes(uri, storage, error=DataError,
                      missing_hint=f"put the files there first (`gan data upload <folder> "
                                   f"{uri.rsplit('/', 1)[0]}/`)")


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def _check_md5(source: str, fname: str, data: bytes, origin: str) -> None:
    """Canonical name and size → the published MD5 must match; anything else is a test file."""
    check_published_md5(data, origin, source, *CANONICAL[source][fname])



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


def _load_idx(cfg: DataConfig, storage: Storage | None) -> SourceData:
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
    return SourceData(*validate(x, y, origin=_redact(cfg.uri), max_classes=10))


def _load_npz(cfg: DataConfig, storage: Storage | None) -> SourceData:
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
    x, y = validate(_npz_unit_range(files["x"], origin), files.get("y"), origin=origin,
                    max_classes=None)
    if "y" not in files:
        return SourceData(x, y, labelled=False)
    y, names = encode_labels(y, origin)  # any integers: 1..10, gaps, negatives → 0..K-1
    return SourceData(x, y, labelled=True, class_names=names)


def _npz_unit_range(x: np.ndarray, origin: str) -> np.ndarray:
    """An .npz's float images, [-1, 1] by the project's one convention (NPZ_CONVENTION: what
    `gan sample --npz` writes and the applications read), mapped to [0, 1] for `validate`.
    uint8 passes through unchanged; NaN/inf are left for `validate` to name."""
    if not np.issubdtype(x.dtype, np.floating) or x.size == 0:
        return x
    finite = x[np.isfinite(x)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if lo < -1.0 or hi > 1.0:
        raise DataError(f"{origin}: float images must lie in [-1, 1], found [{lo:g}, {hi:g}] "
                        f"({NPZ_CONVENTION})")
    return (x.astype(np.float32) + 1.0) / 2.0


def _load_parquet(cfg: DataConfig, storage: Storage | None) -> SourceData:
    # lazy: pyarrow is absent on a bare GPU image (gpu_check), which reads no Parquet
    from gan.data.parquet import load_parquet

    return load_parquet(cfg, storage)


def _load_digits() -> SourceData:
    d = load_digits()  # bundled with scikit-learn: works offline
    x = (d.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    return SourceData(*validate(x, d.target, origin="sklearn digits", max_classes=10))


def _load_stacked() -> SourceData:
    # lazy: the stacked digits resize with torch; reading the other sources does not load it
    from gan.data.stacked import STACKED_N, STACKED_SEED, render_stacked

    x, _ = render_stacked(STACKED_N, STACKED_SEED)  # (N, 3, 28, 28) uint8; modes left out
    return SourceData(*validate(x, None, origin="stacked digits"), labelled=False)


def load_source(cfg: DataConfig, storage: Storage | None = None) -> SourceData:
    """Validated images (N, C, H, W), C = 1 or 3 — uint8 in [0, 255] or float32 in [0, 1] —
    and labels (N,) int64; unlabelled data gets label 0 everywhere. The file sources (images,
    parquet) are already decoded to `cfg.image_size` (empty: the size their files suggest,
    `gan.data.decode.auto_image_size`) and `cfg.channels`. Raises DataError
    naming the problem."""
    loaders = {"digits": lambda c, s: _load_digits(), "mnist": _load_idx,
               "fashion-mnist": _load_idx, "npz": _load_npz, "images": load_images,
               "parquet": _load_parquet, "cifar10": load_cifar10,
               "stacked-digits": lambda c, s: _load_stacked()}
    if cfg.source not in loaders:
        raise DataError(f"unknown data source {cfg.source!r}")
    return loaders[cfg.source](cfg, storage)


def source_label(cfg: DataConfig) -> str:
    """The source as manifests, logs and error messages name it (no credentials)."""
    if cfg.source == "digits":
        return "digits (scikit-learn)"
    if cfg.source == "stacked-digits":
        from gan.data.stacked import STACKED_N, STACKED_SEED  # lazy: as in _load_stacked

        return (f"stacked-digits (scikit-learn digits as R, G, B: {STACKED_N} images, seed "
                f"{STACKED_SEED})")
    return f"{cfg.source}:{_redact(cfg.uri or '')}"
