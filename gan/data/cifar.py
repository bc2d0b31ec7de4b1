"""The `cifar10` source: the CIFAR-10 *binary* release, never its pickles.

What this module is: `load_cifar10(cfg, storage)` reads `cifar-10-binary.tar.gz` (a path,
`s3://` object or URL; read in memory by `gan.data.archive`) or the extracted `.bin` files
(a folder, `s3://` prefix, or base URL holding `data_batch_1..5.bin` and `test_batch.bin`).
Each file is a run of 3,073-byte records: one label byte (0-9), then 1,024 red, 1,024 green and
1,024 blue bytes of a 32×32 image (row-major), as www.cs.toronto.edu/~kriz/cifar.html states.
Class names come from `batches.meta.txt` when present, else the published ten. An archive with
the canonical name and size must have the published MD5. The Python release
(`cifar-10-python.tar.gz`, `data_batch_1` without `.bin`) holds pickles, which would run code
on load: it is refused, naming the binary release to use instead.

What it is not: no resizing or splitting (`gan.data.prepare`), no pickle, ever.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import numpy as np

from gan.core.config import DataConfig
from gan.data.archive import archive_members, is_archive
from gan.data.images import read_tree
from gan.data.validate import DataError, SourceData, check_published_md5
from gan.io.uri import HTTP, read_bytes, redact_url

if TYPE_CHECKING:  # boto3 loads only when an s3:// source is actually read
    from gan.io.storage import Storage

log = logging.getLogger(__name__)

RECORD = 1 + 3 * 32 * 32  # label byte + R, G, B planes
BIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
META_FILE = "batches.meta.txt"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
ARCHIVE = "cifar-10-binary.tar.gz"
# Published size and MD5 of the binary release (www.cs.toronto.edu/~kriz/cifar.html).
CANONICAL = (170_052_171, "c32a1d4ab5d03f1284b67883e8d87530")
_PICKLE_NAME = re.compile(r"(^|/)(data_batch_[1-5]|test_batch|batches\.meta)$")
_BIN_NAME = re.compile(r"(^|/)(data_batch_[1-5]|test_batch)\.bin$")
PICKLE_HINT = ("the Python release of CIFAR-10 is made of pickles, which this pipeline never "
               f"loads (unpickling runs code): use the binary release {ARCHIVE} "
               "(https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz) or its .bin files")


def _wanted(name: str) -> bool:
    return bool(_BIN_NAME.search(name) or _PICKLE_NAME.search(name)
                or name.endswith(META_FILE))


def _check_md5(data: bytes, origin: str) -> None:
    check_published_md5(data, origin, ARCHIVE, *CANONICAL)


def _files(uri: str, storage: Storage | None) -> list[tuple[str, bytes]]:
    """(name, bytes) of the release's files under `uri` (archive, folder, prefix or URL)."""
    origin = redact_url(uri)
    if "cifar-10-python" in uri or uri.endswith(("_batch_1", "test_batch")):
        raise DataError(f"{origin}: {PICKLE_HINT}")
    if is_archive(uri):
        data = read_bytes(uri, storage, error=DataError)
        if uri.rstrip("/").rsplit("/", 1)[-1] == ARCHIVE:
            _check_md5(data, origin)
        return [(f"{origin}!{p}", b) for p, b in archive_members(data, origin) if _wanted(p)]
    if uri.endswith(".bin"):
        return [(origin, read_bytes(uri, storage, error=DataError))]
    if uri.startswith(HTTP):  # a web folder cannot be listed: the published names
        base = uri.rstrip("/")
        return [(redact_url(f"{base}/{n}"), read_bytes(f"{base}/{n}", storage, error=DataError))
                for n in BIN_FILES]
    try:
        return [(f"{origin.rstrip('/')}/{p}", b) for p, b in read_tree(uri, storage, keep=_wanted)]
    except DataError as e:
        raise DataError(f"{origin}: no CIFAR-10 binary files ({', '.join(BIN_FILES)}) "
                        f"found ({e})") from e


def read_records(data: bytes, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """One `.bin` file → images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    if not data:
        raise DataError(f"{origin}: file is empty (0 bytes)")
    if data[:1] == b"\x80":  # a pickle's PROTO opcode; a record starts with a label 0-9
        raise DataError(f"{origin}: this is a pickle, not CIFAR-10 binary records: {PICKLE_HINT}")
    if len(data) % RECORD:
        raise DataError(f"{origin}: truncated: {len(data)} bytes is not a whole number of "
                        f"{RECORD}-byte records (label + 3×32×32)")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    y = rec[:, 0].astype(np.int64)
    if y.max() > 9:
        bad = int(np.argmax(y > 9))
        raise DataError(f"{origin}: record {bad} has label {y[bad]}, CIFAR-10 labels are 0-9")
    return rec[:, 1:].reshape(-1, 3, 32, 32), y


def load_cifar10(cfg: DataConfig, storage: Storage | None) -> SourceData:
    """The `cifar10` source → SourceData (N, 3, 32, 32) uint8 images, ten classes."""
    assert cfg.uri is not None  # DataConfig requires it for this source
    files = _files(cfg.uri, storage)
    pickles = [n for n, _ in files if _PICKLE_NAME.search(n)]
    if pickles:
        raise DataError(f"{pickles[0]}: {PICKLE_HINT}")
    names = CLASS_NAMES
    meta = [b for n, b in files if n.endswith(META_FILE)]
    if meta:
        found = tuple(w.strip() for w in meta[0].decode("utf-8", "replace").splitlines()
                      if w.strip())
        names = found if len(found) == 10 else names
    bins = sorted((n, b) for n, b in files if _BIN_NAME.search(n))
    if not bins:
        raise DataError(f"{redact_url(cfg.uri)}: no CIFAR-10 binary files "
                        f"({', '.join(BIN_FILES)}) found")
    parts = [read_records(b, n) for n, b in bins]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return SourceData(x=x, y=y, labelled=True, class_names=names)
