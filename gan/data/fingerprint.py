"""The content fingerprint of a dataset source: the part of `prepare_data`'s cache key that
changes when the files behind an unchanged `DataConfig` change.

What this module is: `source_fingerprint(cfg, storage)`, cheap metadata only (no download):
    digits        the scikit-learn version (the data ships inside the package); the same
                  for stacked-digits (made by code from them)
    local file    size and modification time (ns)
    s3://         the object's ETag and size (HEAD)
    http(s)://    ETag, Last-Modified and Content-Length (HEAD)
for every file the source reads (one .npz, the four MNIST IDX files, or one archive / Parquet
file), and for a folder or `s3://` prefix (images, parquet, cifar10) the same for every file
under it, from one listing (`listing_meta`: relative path, size and mtime / ETag). When a file's
metadata cannot be read, the fingerprint is unique (`uncached:<uuid>`): the task then runs and
`gan.data.prepare.prepare` reports the real problem, or re-derives the same dataset version.
`fingerprint_change(last, current)` is the source watcher's decision (`flows.trigger`).

What it is not: no reading or validation of the data (`gan.data.sources`, `gan.data.validate`),
no Prefect (the cache policy that uses it lives in `flows.retrain`).
"""

from __future__ import annotations

import hashlib
import uuid
from importlib.metadata import version as dist_version

from gan.core.config import BUNDLED_SOURCES, DataConfig
from gan.data.cifar import BIN_FILES
from gan.data.prepare import PREP_FORMAT
from gan.data.sources import IDX_FILES
from gan.io.storage import Storage, StorageError
from gan.io.uri import HTTP, UriError, listing_meta, uri_meta

_FILE_SUFFIXES = (".npz", ".parquet", ".bin", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2",
                  ".tar.xz")

UNREADABLE = "uncached:"  # prefix of the fingerprint of a source that could not be read


def source_files(cfg: DataConfig) -> list[str]:
    """The URIs/paths `gan.data.sources.load_source` reads for `cfg` (empty for bundled digits);
    for a folder or prefix source, the folder or prefix itself."""
    if cfg.source in BUNDLED_SOURCES or not cfg.uri:
        return []
    if cfg.source in ("mnist", "fashion-mnist"):
        return [f"{cfg.uri.rstrip('/')}/{name}" for name in IDX_FILES.values()]
    if cfg.source == "cifar10" and cfg.uri.startswith(HTTP) and not _is_file(cfg.uri):
        return [f"{cfg.uri.rstrip('/')}/{name}" for name in BIN_FILES]
    return [cfg.uri]


def _is_file(uri: str) -> bool:
    return uri.lower().endswith(_FILE_SUFFIXES)


def _meta(uri: str, storage: Storage | None) -> list[str]:
    """One file's metadata line, or one line per file under a folder or prefix."""
    if _is_file(uri) or uri.startswith(HTTP):
        return [f"{uri}: {uri_meta(uri, storage)}"]
    return [f"{uri} {line}" for line in listing_meta(uri, storage)]


def source_fingerprint(cfg: DataConfig, storage: Storage | None = None) -> str:
    """A short hex digest of the source's content metadata and the preparation format."""
    parts = [f"prep_format={PREP_FORMAT}", f"source={cfg.source}"]
    if cfg.source in BUNDLED_SOURCES:
        parts.append(f"scikit-learn={dist_version('scikit-learn')}")
    try:
        parts += [line for uri in source_files(cfg) for line in _meta(uri, storage)]
    except (UriError, StorageError):
        return f"{UNREADABLE}{uuid.uuid4().hex}"
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def fingerprint_change(last: str | None, current: str) -> str | None:
    """Why a source watcher should start a retraining (the fingerprint changed since `last`),
    else None: unchanged, the first look (it only records a baseline: the schedule and manual
    runs train the first model), or a source that could not be read (`uncached:...`, which is
    never equal to anything, so it must not count as a change)."""
    if current.startswith(UNREADABLE) or last is None or last == current:
        return None
    return f"the source changed (fingerprint {last} → {current})"
