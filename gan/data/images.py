"""The `images` source: a folder, `s3://` prefix or archive of PNG/JPEG/WebP files.

What this module is: `load_images(cfg, storage)` finds every image file under `data.uri`,
searching sub-folders (local folder, `s3://` prefix, or a `.zip`/`.tar` archive given as a
path, `s3://` object or URL, read in memory by `gan.data.archive`), derives labels from the
layout, and decodes them (`gan.data.decode`) to `image_size` and `data.channels`.

Labels: when every image sits in a sub-folder, the first folder under the root is its class;
classes are the folder names in their natural order (`gan.data.labels`: "2" before "10"),
recorded as the dataset version's `class_names`. A single folder, or every image directly at
the root, means unlabelled (every label 0). Image files at the root *beside* two or more
class folders (a `cover.png`) are refused, naming them, unless `data.ignore_stray_files`
leaves them out: they never silently turn a labelled set into an unlabelled one. A tree whose
files all lie in one top folder holding the class folders (`shapes/circle/1.png`, typical of
archives) is read as if that folder were the root. A symbolic link in a folder that leads
outside it is refused (DataError naming it); links inside the folder are followed. Only
`.png`, `.jpg`, `.jpeg` and `.webp` files are read (others are ignored and counted in the
log); dot-files are ignored.

What it is not: no decoding policy (`gan.data.decode`), no split or storage (`gan.data.prepare`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gan.core.config import DataConfig
from gan.data.archive import archive_members, is_archive
from gan.data.decode import decode_images, is_image_name
from gan.data.labels import encode_labels
from gan.data.validate import DataError, SourceData
from gan.io.uri import read_bytes, redact_url

if TYPE_CHECKING:  # boto3 loads only when an s3:// source is actually read
    from gan.io.storage import Storage

log = logging.getLogger(__name__)
_READERS = 8  # parallel S3 GETs
MAX_STRAY_NAMED = 5  # stray files named in the error (all are counted)


def read_tree(uri: str, storage: Storage | None, *,
              keep: Callable[[str], bool] = is_image_name) -> list[tuple[str, bytes]]:
    """(path relative to the root, bytes) of every file under a folder, an `s3://` prefix or
    inside an archive whose name `keep` accepts, sorted by path; DataError when none."""
    origin = redact_url(uri)
    if is_archive(uri):
        data = read_bytes(uri, storage, error=DataError)
        files = archive_members(data, origin)
    elif uri.startswith("s3://"):
        files = _read_prefix(uri, storage, keep)
    elif uri.startswith(("http://", "https://")):
        raise DataError(f"{origin}: an http(s) URL must name a .zip or .tar archive "
                        "(a web folder cannot be listed)")
    else:
        files = _read_folder(Path(uri.removeprefix("file://")), keep)
    others = [p for p, _ in files if not keep(p)]
    if others:
        log.info("%s: ignored %d files that are not images (e.g. %s)", origin, len(others),
                 others[0])
    files = [(p, b) for p, b in files if keep(p)]
    if not files:
        raise DataError(f"{origin}: no image files (.png, .jpg, .jpeg, .webp) found"
                        + (f"; {len(others)} other files ignored" if others else ""))
    return files


def _read_folder(root: Path, keep: Callable[[str], bool]) -> list[tuple[str, bytes]]:
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder or archive"
        raise DataError(f"{root}: {what}")
    out = []
    real_root = root.resolve()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if p.is_symlink() and not p.resolve().is_relative_to(real_root):
            raise DataError(f"{p}: a symbolic link to {p.resolve()}, outside the folder "
                            f"{root}: refused (copy the file in instead)")
        if not p.is_file():
            continue
        try:
            out.append((rel, p.read_bytes() if keep(rel) else b""))
        except OSError as e:
            raise DataError(f"{p}: cannot read: {e.strerror or e}") from e
    return out


def _read_prefix(uri: str, storage: Storage | None,
                 keep: Callable[[str], bool]) -> list[tuple[str, bytes]]:
    if storage is None:
        raise DataError(f"{uri}: an s3:// source needs object storage (no Storage given)")
    prefix = uri.rstrip("/") + "/"
    try:
        listed = storage.list_keys(prefix)
    except ValueError as e:  # a prefix built to leave its place (`..`, `%2e%2e`, absolute)
        raise DataError(str(e)) from e
    keys = [k for k in listed
            if not any(p.startswith(".") for p in k[len(prefix):].split("/"))]
    wanted = [k for k in keys if keep(k)]
    with ThreadPoolExecutor(_READERS) as pool:
        blobs = dict(zip(wanted, pool.map(
            lambda k: read_bytes(k, storage, error=DataError), wanted), strict=True))
    return [(k[len(prefix):], blobs.get(k, b"")) for k in keys]


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Layout:
    """What a tree's layout says: which files to read, their labels, the class names."""

    kept: np.ndarray  # (M,) indices of the files read
    y: np.ndarray  # (M,) int64 classes 0..K-1 (all 0 when unlabelled)
    class_names: tuple[str, ...]
    labelled: bool


def _stray_error(origin: str, stray: list[str], n_classes: int) -> DataError:
    shown = ", ".join(stray[:MAX_STRAY_NAMED])
    more = f", and {len(stray) - MAX_STRAY_NAMED} more" if len(stray) > MAX_STRAY_NAMED else ""
    files = "1 image file lies" if len(stray) == 1 else f"{len(stray)} image files lie"
    return DataError(
        f"{origin}: {files} at the root beside {n_classes} class folders ({shown}{more}): "
        "with them the set would be read as unlabelled. Move them into a class folder or "
        "out of the tree, or ignore them with --ignore-stray-files (data.ignore_stray_files)")


def labels_from_paths(paths: Sequence[str], *, origin: str = "",
                      ignore_stray: bool = False) -> Layout:
    """Relative paths → `Layout`: see the module's rule. Image files at the root beside two
    or more class folders are refused (DataError naming them), or left out when
    `ignore_stray`; they never turn a labelled set into an unlabelled one."""
    parts = [p.split("/") for p in paths]
    while (all(len(q) >= 2 for q in parts) and any(len(q) >= 3 for q in parts)
           and len({q[0] for q in parts}) == 1):
        parts = [q[1:] for q in parts]  # one wrapping folder (an archive's top folder)
    everything = np.arange(len(paths))
    folders = sorted({q[0] for q in parts if len(q) >= 2})
    stray = [i for i, q in enumerate(parts) if len(q) < 2]
    if len(folders) >= 2 and stray:
        if not ignore_stray:
            raise _stray_error(origin, ["/".join(parts[i]) for i in stray], len(folders))
        log.warning("%s: ignored %d image files at the root beside the class folders (e.g. %s)",
                    origin, len(stray), "/".join(parts[stray[0]]))
        everything = np.array([i for i, q in enumerate(parts) if len(q) >= 2], dtype=np.int64)
    elif stray or len(folders) < 2:
        if len(folders) == 1 and not stray:
            log.info("all images are in one folder %r: read as unlabelled", folders[0])
        names = tuple(folders) if len(folders) == 1 and not stray else ()
        return Layout(everything, np.zeros(len(paths), dtype=np.int64), names, False)
    y, names = encode_labels([parts[i][0] for i in everything], origin)
    return Layout(everything, y, names, True)


def load_images(cfg: DataConfig, storage: Storage | None) -> SourceData:
    """The `images` source → SourceData, images already (N, C, image_size, image_size) uint8."""
    assert cfg.uri is not None  # DataConfig requires it for this source
    origin = redact_url(cfg.uri)
    files = read_tree(cfg.uri, storage)
    layout = labels_from_paths([p for p, _ in files], origin=origin,
                               ignore_stray=cfg.ignore_stray_files)
    files = [files[i] for i in layout.kept]
    named = [(f"{origin.rstrip('/')}/{p}" if not is_archive(origin) else f"{origin}!{p}", b)
             for p, b in files]
    dec = decode_images(named, size=cfg.image_size, channels=cfg.channels,
                        max_bad_fraction=cfg.max_bad_fraction)
    return SourceData(x=dec.x, y=layout.y[dec.kept], labelled=layout.labelled,
                      class_names=layout.class_names, skipped=dec.skipped)
